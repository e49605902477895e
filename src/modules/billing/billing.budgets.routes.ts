import type { FastifyRequest } from 'fastify';
import type { HttpServer } from '../../platform/http/server.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import type { BudgetsService } from './billing.budgets.ts';
import { BudgetBody, BudgetList, BudgetParams, BudgetView, WorkspaceParams } from './billing.schemas.ts';

type Deps = {
  budgets: BudgetsService;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

const tags = ['billing'];
const security: Array<Record<string, string[]>> = [{ session: [], csrf: [] }, { apiKey: [] }];

export function registerBudgetRoutes(app: HttpServer, { budgets, requirePermission }: Deps) {
  const path = '/api/workspaces/:workspaceId/billing/budgets';

  app.get(
    path,
    {
      schema: {
        tags,
        security,
        summary: "Spend limits of the workspace and its keys, with the current period's spending",
        params: WorkspaceParams,
        response: { 200: BudgetList },
      },
      preHandler: requirePermission('billing:read'),
    },
    async (req) => ({ data: await budgets.listBudgets({ scope: requireScope(req) }) }),
  );

  app.put(
    path,
    {
      schema: {
        tags,
        security,
        summary: 'Set the daily or monthly budget of the workspace or of one API key (created the first time)',
        params: WorkspaceParams,
        body: BudgetBody,
        response: { 200: BudgetView },
      },
      preHandler: requirePermission('budgets:manage'),
    },
    async (req) =>
      budgets.setBudget({
        scope: requireScope(req),
        keyId: req.body.keyId ?? null,
        period: req.body.period,
        limitMicros: req.body.limitMicros,
      }),
  );

  app.delete(
    `${path}/:budgetId`,
    {
      schema: { tags, security, summary: 'Remove a budget', params: BudgetParams },
      preHandler: requirePermission('budgets:manage'),
    },
    async (req, reply) => {
      await budgets.removeBudget({ scope: requireScope(req), budgetId: req.params.budgetId });
      return reply.status(204).send();
    },
  );
}
