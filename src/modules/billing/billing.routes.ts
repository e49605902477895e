import type { FastifyRequest } from 'fastify';
import type { HttpServer } from '../../platform/http/server.ts';
import { operatorActor, operatorRequired, requireSession } from '../identity/index.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import type { PaymentsService } from './billing.payments.ts';
import type { PromotionsService } from './billing.promotions.ts';
import {
  AdjustBody,
  BalanceView,
  CheckoutBody,
  CheckoutView,
  EntriesQuery,
  EntryList,
  GrantBody,
  GrantView,
  OperatorWorkspaceParams,
  PlanBody,
  PlanList,
  PlanView,
  TransactionView,
  VerifyAnswer,
  WorkspaceParams,
  WorkspacePlanView,
} from './billing.schemas.ts';
import type { BillingService } from './billing.service.ts';

type Deps = {
  service: BillingService;
  payments: PaymentsService;
  promotions: Pick<PromotionsService, 'grant'>;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

const tags = ['billing'];
const security: Array<Record<string, string[]>> = [{ session: [], csrf: [] }, { apiKey: [] }];
const operatorTags = ['operator'];
const operatorSecurity = [{ session: [], csrf: [] }];

export function registerBillingRoutes(app: HttpServer, { service, payments, promotions, requirePermission }: Deps) {
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

  app.get(
    `${ws}/plan`,
    {
      schema: {
        tags,
        security,
        summary: "The workspace's plan, what it includes, and its plan history",
        params: WorkspaceParams,
        response: { 200: WorkspacePlanView },
      },
      preHandler: requirePermission('billing:read'),
    },
    async (req) => service.plan(requireScope(req)),
  );

  app.get(
    '/api/billing/plans',
    {
      schema: {
        tags,
        security: [{ session: [] }],
        summary: 'The plans this Berth offers (signed-in people; an API key reads its own workspace plan)',
        response: { 200: PlanList },
      },
      preHandler: async (req) => {
        requireSession(req);
      },
    },
    async () => ({ data: service.plans() }),
  );

  app.post(
    `${ws}/checkout`,
    {
      schema: {
        tags,
        security,
        summary: "Start a card top-up: answers the payment processor's checkout page to send the payer to",
        params: WorkspaceParams,
        body: CheckoutBody,
        response: { 201: CheckoutView },
      },
      preHandler: requirePermission('billing:manage'),
    },
    async (req, reply) =>
      reply.status(201).send(await payments.startCheckout({ scope: requireScope(req), ...req.body })),
  );

  // The processor's webhook needs the body exactly as sent (its signature covers the bytes).
  app.register(async (raw) => {
    raw.removeAllContentTypeParsers();
    raw.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: 1024 * 1024 }, (_req, body, done) =>
      done(null, body),
    );
    raw.post(
      '/api/billing/webhooks/stripe',
      {
        schema: { tags, summary: "Stripe's events (signed; applied once)", hide: false },
        config: {
          audit: { exempt: "a payment processor's signed event: its top-up is a ledger entry, not an admin action" },
        },
      },
      async (req) => {
        const signature = req.headers['stripe-signature'];
        const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
        return payments.handleWebhook(body, typeof signature === 'string' ? signature : undefined);
      },
    );
  });

  app.post(
    '/api/operator/billing/grant',
    {
      schema: {
        tags: operatorTags,
        security: operatorSecurity,
        summary: 'Grant credits to a workspace (idempotent by key); with expiresAt, promotional credits that expire',
        body: GrantBody,
        response: { 201: GrantView },
      },
      preHandler: operatorRequired,
    },
    async (req, reply) => reply.status(201).send(await promotions.grant({ actor: operatorActor(req), ...req.body })),
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
