import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { HttpServer } from '../../platform/http/server.ts';
import { requestMeta, requireSession, sessionRequired } from '../identity/index.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import type { ExportService } from './privacy.export.service.ts';
import { EXPORT_KINDS, EXPORT_STATUSES } from './privacy.export.tables.ts';

const Id = z.string().min(1).max(64);

export const ExportViewSchema = z.object({
  id: z.string(),
  kind: z.enum(EXPORT_KINDS),
  workspaceId: z.string().nullable(),
  requestId: z.string().nullable().describe('The privacy request that tracks the export'),
  status: z.enum(EXPORT_STATUSES),
  createdAt: z.string(),
  builtAt: z.string().nullable(),
  expiresAt: z.string().nullable().describe('The download link works until then; the export is deleted then'),
  downloadedAt: z.string().nullable(),
  rowCount: z.number().int().nullable(),
  archiveBytes: z.number().int().nullable(),
});

const tags = ['privacy'];
const session: Array<Record<string, string[]>> = [{ session: [], csrf: [] }];

type Deps = {
  exports: ExportService;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

/**
 * Exports of personal data: the signed-in user's own (`/api/me/privacy/exports`), a
 * workspace's for its owner, and the single-use download link mailed when one is ready.
 */
export function registerExportRoutes(app: HttpServer, { exports, requirePermission }: Deps) {
  app.post(
    '/api/me/privacy/exports',
    {
      config: { audit: { exempt: 'own account: recorded as a security event and tracked as a privacy request' } },
      schema: {
        tags,
        security: session,
        summary: 'Ask for an export of every record Berth holds about you (a download link is emailed when ready)',
        response: { 202: ExportViewSchema },
      },
      preHandler: sessionRequired,
    },
    async (req, reply) =>
      reply
        .status(202)
        .send(await exports.requestUserExport({ userId: requireSession(req).userId, meta: requestMeta(req) })),
  );

  app.get(
    '/api/me/privacy/exports',
    {
      schema: {
        tags,
        security: session,
        summary: 'Your exports (yours and the workspace exports you asked for), newest first',
        response: { 200: z.object({ data: z.array(ExportViewSchema) }) },
      },
      preHandler: sessionRequired,
    },
    async (req) => ({ data: await exports.list(requireSession(req).userId) }),
  );

  app.get(
    '/api/me/privacy/exports/:id',
    {
      schema: {
        tags,
        security: session,
        summary: 'One of your exports',
        params: z.strictObject({ id: Id }),
        response: { 200: ExportViewSchema },
      },
      preHandler: sessionRequired,
    },
    async (req) => exports.get(requireSession(req).userId, req.params.id),
  );

  app.post(
    '/api/workspaces/:workspaceId/privacy/exports',
    {
      schema: {
        tags,
        security: session,
        summary: "Ask for an export of the workspace's data (owner only; a download link is emailed to you when ready)",
        params: z.strictObject({ workspaceId: Id }),
        response: { 202: ExportViewSchema },
      },
      preHandler: requirePermission('privacy:manage'),
    },
    async (req, reply) => reply.status(202).send(await exports.requestWorkspaceExport({ scope: requireScope(req) })),
  );

  app.get(
    '/api/privacy/exports/:id/download',
    {
      schema: {
        tags,
        security: [],
        summary:
          'Download an export through the link mailed when it was ready: works once, for 7 days (410 export_link_used / export_link_expired)',
        params: z.strictObject({ id: Id }),
        querystring: z.strictObject({ token: z.string().min(1).max(200) }),
      },
    },
    async (req, reply) => {
      const { json, filename } = await exports.download({
        id: req.params.id,
        token: req.query.token,
        meta: requestMeta(req),
      });
      return reply
        .type('application/json; charset=utf-8')
        .header('content-disposition', `attachment; filename="${filename}"`)
        .header('cache-control', 'no-store')
        .header('referrer-policy', 'no-referrer')
        .send(json);
    },
  );
}
