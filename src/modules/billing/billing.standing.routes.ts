import type { FastifyRequest } from 'fastify';
import type { HttpServer } from '../../platform/http/server.ts';
import { operatorRequired } from '../identity/index.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import { StandingList, StandingQuery, StandingView, WorkspaceParams } from './billing.schemas.ts';
import type { CreditStandingService } from './billing.standing.ts';

type Deps = {
  standing: CreditStandingService;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

/** A workspace's credit standing for its members, and every tracked workspace's for operators. */
export function registerStandingRoutes(app: HttpServer, { standing, requirePermission }: Deps) {
  app.get(
    '/api/workspaces/:workspaceId/billing/standing',
    {
      schema: {
        tags: ['billing'],
        security: [{ session: [], csrf: [] }, { apiKey: [] }],
        summary: 'Credit standing (ok, low, exhausted) and the suspension grace period, as of the last check',
        params: WorkspaceParams,
        response: { 200: StandingView },
      },
      preHandler: requirePermission('billing:read'),
    },
    async (req) => standing.standing(requireScope(req)),
  );

  app.get(
    '/api/operator/billing/standing',
    {
      schema: {
        tags: ['operator'],
        security: [{ session: [], csrf: [] }],
        summary: 'Workspaces whose credits fell below a threshold, by state (e.g. ?state=exhausted)',
        querystring: StandingQuery,
        response: { 200: StandingList },
      },
      preHandler: operatorRequired,
    },
    async (req) => standing.list(req.query),
  );
}
