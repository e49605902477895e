import type { FastifyRequest } from 'fastify';
import type { HttpServer } from '../../platform/http/server.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import { AutoTopupBody, AutoTopupView } from './billing.autotopup.schemas.ts';
import type { AutoTopupService } from './billing.autotopup.ts';
import { WorkspaceParams } from './billing.schemas.ts';

type Deps = {
  autoTopups: AutoTopupService;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

const tags = ['billing'];
const security: Array<Record<string, string[]>> = [{ session: [], csrf: [] }, { apiKey: [] }];

/** `GET/PUT /api/workspaces/:workspaceId/billing/auto-topup` (owners: billing:manage). */
export function registerAutoTopupRoutes(app: HttpServer, { autoTopups, requirePermission }: Deps) {
  const url = '/api/workspaces/:workspaceId/billing/auto-topup';

  app.get(
    url,
    {
      schema: {
        tags,
        security,
        summary: "Auto top-up settings, the saved card (brand and last 4) and this month's charges",
        params: WorkspaceParams,
        response: { 200: AutoTopupView },
      },
      preHandler: requirePermission('billing:manage'),
    },
    async (req) => autoTopups.get(requireScope(req)),
  );

  app.put(
    url,
    {
      schema: {
        tags,
        security,
        summary: 'Opt in or out of auto top-up: threshold, amount and a monthly cap (audited)',
        params: WorkspaceParams,
        body: AutoTopupBody,
        response: { 200: AutoTopupView },
      },
      preHandler: requirePermission('billing:manage'),
    },
    async (req) => autoTopups.update({ scope: requireScope(req), settings: req.body }),
  );
}
