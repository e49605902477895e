import type { FastifyRequest } from 'fastify';
import type { HttpServer } from '../../platform/http/server.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import { SecretList, SecretParams, SecretsParams, SecretView, SetSecretBody } from './agents.secrets.schemas.ts';
import type { SecretsService } from './agents.secrets.service.ts';

type Deps = {
  secrets: SecretsService;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

const security: Array<Record<string, string[]>> = [{ session: [], csrf: [] }, { apiKey: [] }];
const tags = ['agent tools'];

/** Workspace secrets for agent tools: owners and admins only; values go in and never come out. */
export function registerSecretRoutes(app: HttpServer, { secrets, requirePermission }: Deps) {
  const base = '/api/workspaces/:workspaceId/secrets';

  app.put(
    `${base}/:name`,
    {
      schema: {
        tags,
        security,
        summary: 'Create or replace a secret (stored encrypted, never returned)',
        params: SecretParams,
        body: SetSecretBody,
        response: { 200: SecretView },
      },
      preHandler: requirePermission('tools:manage'),
    },
    async (req) => secrets.setSecret({ scope: requireScope(req), name: req.params.name, input: req.body }),
  );

  app.get(
    base,
    {
      schema: {
        tags,
        security,
        summary: 'List secrets (names and allowed hosts, never values)',
        params: SecretsParams,
        response: { 200: SecretList },
      },
      preHandler: requirePermission('tools:manage'),
    },
    async (req) => ({ data: await secrets.listSecrets({ scope: requireScope(req) }) }),
  );

  app.delete(
    `${base}/:name`,
    {
      schema: { tags, security, summary: 'Delete a secret', params: SecretParams },
      preHandler: requirePermission('tools:manage'),
    },
    async (req, reply) => {
      await secrets.deleteSecret({ scope: requireScope(req), name: req.params.name });
      return reply.status(204).send();
    },
  );
}
