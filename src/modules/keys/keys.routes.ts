import type { FastifyRequest } from 'fastify';
import { AppError } from '../../platform/errors.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import { apiKeyOf } from './keys.auth.ts';
import {
  CreateKeyBody,
  KeyList,
  KeyParams,
  KeyView,
  KeyWithSecret,
  RollKeyBody,
  SelfView,
  UpdateKeyBody,
  WorkspaceKeysParams,
} from './keys.schemas.ts';
import type { KeysService } from './keys.service.ts';

type Deps = {
  service: KeysService;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

const tags = ['api keys'];
const security: Array<Record<string, string[]>> = [{ session: [], csrf: [] }, { apiKey: [] }];

/**
 * The API keys HTTP API. Managers (keys:manage) see and change every key of the workspace;
 * members (keys:own) create keys for themselves and see and change only those.
 */
export function registerKeyRoutes(app: HttpServer, { service, requirePermission }: Deps) {
  const base = '/api/workspaces/:workspaceId/keys';

  app.post(
    base,
    {
      schema: {
        tags,
        security,
        summary: 'Create an API key (the secret is in this answer only)',
        params: WorkspaceKeysParams,
        body: CreateKeyBody,
        response: { 201: KeyWithSecret },
      },
      preHandler: requirePermission('keys:own'),
    },
    async (req, reply) =>
      reply.status(201).send(await service.createKey({ scope: requireScope(req), input: req.body })),
  );

  app.get(
    base,
    {
      schema: {
        tags,
        security,
        summary: 'List API keys (members see their own)',
        params: WorkspaceKeysParams,
        response: { 200: KeyList },
      },
      preHandler: requirePermission('keys:read'),
    },
    async (req) => ({ data: await service.listKeys({ scope: requireScope(req) }) }),
  );

  app.get(
    `${base}/:keyId`,
    {
      schema: { tags, security, summary: 'Get an API key', params: KeyParams, response: { 200: KeyView } },
      preHandler: requirePermission('keys:read'),
    },
    async (req) => service.getKey({ scope: requireScope(req), keyId: req.params.keyId }),
  );

  app.patch(
    `${base}/:keyId`,
    {
      schema: {
        tags,
        security,
        summary: "Change a key's name, scopes, limits, allow-lists or expiry",
        params: KeyParams,
        body: UpdateKeyBody,
        response: { 200: KeyView },
      },
      preHandler: requirePermission('keys:own'),
    },
    async (req) => service.updateKey({ scope: requireScope(req), keyId: req.params.keyId, input: req.body }),
  );

  app.post(
    `${base}/:keyId/revoke`,
    {
      schema: {
        tags,
        security,
        summary: 'Revoke an API key (refused from the next request on, on every replica)',
        params: KeyParams,
        response: { 200: KeyView },
      },
      preHandler: requirePermission('keys:own'),
    },
    async (req) => service.revokeKey({ scope: requireScope(req), keyId: req.params.keyId }),
  );

  app.post(
    `${base}/:keyId/roll`,
    {
      schema: {
        tags,
        security,
        summary: 'Give a key a new secret; the old one works until the grace period ends',
        params: KeyParams,
        body: RollKeyBody,
        response: { 200: KeyWithSecret },
      },
      preHandler: requirePermission('keys:own'),
    },
    async (req) =>
      service.rollKey({
        scope: requireScope(req),
        keyId: req.params.keyId,
        gracePeriodSeconds: req.body.gracePeriodSeconds,
      }),
  );

  app.get(
    '/api/keys/self',
    {
      schema: {
        tags,
        security: [{ apiKey: [] }],
        summary: 'The calling API key and its workspace (API keys only)',
        response: { 200: SelfView },
      },
    },
    async (req) => {
      const key = apiKeyOf(req);
      if (!key) throw new AppError('unauthenticated', 'Call this with an API key.');
      return service.describeSelf(key);
    },
  );
}
