import type { FastifyRequest } from 'fastify';
import type { Actor } from '../../platform/http/context.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import { operatorRequired, requestMeta, requireOperator } from '../identity/index.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import {
  AdjustBody,
  BalanceView,
  EntriesQuery,
  EntryList,
  GrantBody,
  OperatorWorkspaceParams,
  PlanBody,
  PlanView,
  TransactionView,
  VerifyAnswer,
  WorkspaceParams,
} from './billing.schemas.ts';
import type { BillingService } from './billing.service.ts';

type Deps = {
  service: BillingService;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

function operatorActor(req: FastifyRequest): Actor {
  const auth = requireOperator(req);
  return { type: 'user', userId: auth.userId, sessionId: auth.sessionId, meta: requestMeta(req) };
}

const tags = ['billing'];
const security: Array<Record<string, string[]>> = [{ session: [], csrf: [] }, { apiKey: [] }];
const operatorTags = ['operator'];
const operatorSecurity = [{ session: [], csrf: [] }];

export function registerBillingRoutes(app: HttpServer, { service, requirePermission }: Deps) {
  const ws = '/api/workspaces/:workspaceId/billing';

  app.get(
    `${ws}/balance`,
    {
      schema: {
        tags,
        security,
        summary: 'Credits available and reserved (micro-units: 1 USD = 1,000,000), and the plan',
        params: WorkspaceParams,
        response: { 200: BalanceView },
      },
      preHandler: requirePermission('billing:read'),
    },
    async (req) => service.balance(requireScope(req)),
  );

  app.get(
    `${ws}/entries`,
    {
      schema: {
        tags,
        security,
        summary: 'Ledger entries, newest first',
        params: WorkspaceParams,
        querystring: EntriesQuery,
        response: { 200: EntryList },
      },
      preHandler: requirePermission('billing:read'),
    },
    async (req) => service.entries(requireScope(req), req.query),
  );

  app.post(
    '/api/operator/billing/grant',
    {
      schema: {
        tags: operatorTags,
        security: operatorSecurity,
        summary: 'Grant credits to a workspace (idempotent by key)',
        body: GrantBody,
        response: { 201: TransactionView },
      },
      preHandler: operatorRequired,
    },
    async (req, reply) => reply.status(201).send(await service.grant({ actor: operatorActor(req), ...req.body })),
  );

  app.post(
    '/api/operator/billing/adjust',
    {
      schema: {
        tags: operatorTags,
        security: operatorSecurity,
        summary: "Correct a workspace's credits up or down, with a reason (idempotent by key)",
        body: AdjustBody,
        response: { 201: TransactionView },
      },
      preHandler: operatorRequired,
    },
    async (req, reply) => reply.status(201).send(await service.adjust({ actor: operatorActor(req), ...req.body })),
  );

  app.get(
    '/api/operator/billing/verify',
    {
      schema: {
        tags: operatorTags,
        security: operatorSecurity,
        summary: 'Recompute every balance from the ledger postings',
        response: { 200: VerifyAnswer },
      },
      preHandler: operatorRequired,
    },
    async () => {
      const reports = await service.verify();
      return { ok: reports.every((r) => r.ok), workspaces: reports.length, reports };
    },
  );

  app.put(
    '/api/operator/workspaces/:id/plan',
    {
      schema: {
        tags: operatorTags,
        security: operatorSecurity,
        summary: "Change a workspace's plan (the history keeps the previous one)",
        params: OperatorWorkspaceParams,
        body: PlanBody,
        response: { 200: PlanView },
      },
      preHandler: operatorRequired,
    },
    async (req) => service.setPlan({ actor: operatorActor(req), workspaceId: req.params.id, plan: req.body.plan }),
  );
}
