import { Readable } from 'node:stream';
import type { FastifyRequest } from 'fastify';
import type { z } from 'zod';
import { forbidden } from '../../platform/errors.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import { operatorRequired } from '../identity/index.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import type { AuditFilter } from './audit.repo.ts';
import {
  AuditPage,
  AuditQuery,
  CheckpointReply,
  ExportQuery,
  PublicKeyReply,
  VerifyReport,
  WorkspaceParams,
} from './audit.schemas.ts';
import { type AuditCore, PLATFORM_CHAIN } from './audit.service.ts';

type Deps = {
  service: AuditCore;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

const tags = ['audit'];
const security = [{ session: [], csrf: [] }];
/** Workspace routes also take API keys (scope `workspace:admin` covers audit:read). */
const workspaceSecurity: Array<Record<string, string[]>> = [{ session: [], csrf: [] }, { apiKey: [] }];
const checkpointExempt = {
  audit: { exempt: 'writes a signed checkpoint of the audit log, itself the record of this action' },
};

function filterOf(q: z.infer<typeof ExportQuery>): AuditFilter {
  return {
    ...(q.from ? { from: new Date(q.from) } : {}),
    ...(q.to ? { to: new Date(q.to) } : {}),
    ...(q.actor ? { actor: q.actor } : {}),
    ...(q.action ? { action: q.action } : {}),
    ...(q.target ? { target: q.target } : {}),
  };
}

function page(q: z.infer<typeof AuditQuery>) {
  return { limit: q.limit, ...(q.cursor ? { cursor: q.cursor } : {}) };
}

/** The audit HTTP API: workspace chains (owners, admins), the platform chain (operators), the public key. */
export function registerAuditRoutes(app: HttpServer, { service, requirePermission }: Deps) {
  const base = '/api/workspaces/:workspaceId/audit';
  const read = requirePermission('audit:read');

  app.get(
    base,
    {
      schema: {
        tags,
        security: workspaceSecurity,
        summary: "List the workspace's audit events, newest first (filters, cursor pagination)",
        params: WorkspaceParams,
        querystring: AuditQuery,
        response: { 200: AuditPage },
      },
      preHandler: read,
    },
    async (req) => service.list(requireScope(req).workspaceId, filterOf(req.query), page(req.query)),
  );

  app.get(
    `${base}/export`,
    {
      schema: {
        tags,
        security: workspaceSecurity,
        summary: "Export the workspace's audit events as JSON Lines, oldest first",
        params: WorkspaceParams,
        querystring: ExportQuery,
      },
      preHandler: read,
    },
    async (req, reply) => {
      const events = service.exportEvents(requireScope(req).workspaceId, filterOf(req.query));
      const lines = Readable.from(
        (async function* () {
          for await (const e of events) yield `${JSON.stringify(e)}\n`;
        })(),
      );
      return reply
        .type('application/x-ndjson')
        .header('content-disposition', 'attachment; filename="audit.jsonl"')
        .send(lines);
    },
  );

  app.get(
    `${base}/verify`,
    {
      schema: {
        tags,
        security: workspaceSecurity,
        summary: "Recompute the workspace's audit chain and check its signed checkpoints",
        params: WorkspaceParams,
        response: { 200: VerifyReport },
      },
      preHandler: read,
    },
    // The workspace exists (the permission check found it), so a missing chain is broken.
    async (req) => service.verify(requireScope(req).workspaceId, { known: true }),
  );

  app.post(
    `${base}/checkpoints`,
    {
      schema: {
        tags,
        security,
        summary:
          "Sign a checkpoint of the workspace's audit chain now (owners' and admins' sessions; only when the head moved, at most once a minute)",
        params: WorkspaceParams,
        response: { 201: CheckpointReply },
      },
      preHandler: read,
      config: checkpointExempt,
    },
    async (req, reply) => {
      const scope = requireScope(req);
      // A write that adds undeletable rows: not for API keys (which may carry audit:read).
      if (scope.actor.type !== 'user') throw forbidden("Signing a checkpoint needs an owner's or admin's session.");
      return reply.status(201).send(await service.createCheckpoint(scope.workspaceId));
    },
  );

  app.get(
    '/api/operator/audit',
    {
      schema: {
        tags,
        security,
        summary: 'List the platform audit chain (operator actions), newest first',
        querystring: AuditQuery,
        response: { 200: AuditPage },
      },
      preHandler: operatorRequired,
    },
    async (req) => service.list(PLATFORM_CHAIN, filterOf(req.query), page(req.query)),
  );

  app.get(
    '/api/operator/audit/verify',
    {
      schema: {
        tags,
        security,
        summary: 'Recompute the platform audit chain and check its signed checkpoints',
        response: { 200: VerifyReport },
      },
      preHandler: operatorRequired,
    },
    async () => service.verify(PLATFORM_CHAIN, { known: true }),
  );

  app.post(
    '/api/operator/audit/checkpoints',
    {
      schema: {
        tags,
        security,
        summary: 'Sign a checkpoint of the platform audit chain now',
        response: { 201: CheckpointReply },
      },
      preHandler: operatorRequired,
      config: checkpointExempt,
    },
    async (_req, reply) => reply.status(201).send(await service.createCheckpoint(PLATFORM_CHAIN)),
  );

  app.get(
    '/api/audit/public-key',
    {
      schema: {
        tags,
        summary: 'The Ed25519 public key that verifies audit checkpoints (for offline auditors)',
        response: { 200: PublicKeyReply },
      },
    },
    async () => {
      const key = service.publicKey();
      return {
        algorithm: 'Ed25519' as const,
        keyId: key.keyId,
        publicKey: key.publicKeyRaw,
        pem: key.publicKeyPem,
        signedMessage: 'chain|seq|hash|created_at (created_at in ISO 8601 UTC with milliseconds)',
      };
    },
  );
}
