import type { FastifyRequest } from 'fastify';
import type { HttpServer } from '../../platform/http/server.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import {
  AgentDefinition,
  AgentList,
  AgentParams,
  AgentView,
  ExportQuery,
  ImportQuery,
  ListAgentsQuery,
  ListVersionsQuery,
  VersionList,
  VersionParams,
  VersionView,
  WorkspaceParams,
} from './agents.schemas.ts';
import type { AgentsService } from './agents.service.ts';

type Deps = {
  service: AgentsService;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

const tags = ['agents'];
const security: Array<Record<string, string[]>> = [{ session: [], csrf: [] }, { apiKey: [] }];

/**
 * The agent definitions HTTP API. Reading needs `agents:read` (every role; keys with
 * agents:read), changing needs `agents:manage` (owners, admins, members; keys with
 * agents:write). `:agentId` takes an id or the name of a live agent.
 */
export function registerAgentRoutes(app: HttpServer, { service, requirePermission }: Deps) {
  const base = '/api/workspaces/:workspaceId/agents';
  const one = `${base}/:agentId`;

  app.post(
    base,
    {
      schema: {
        tags,
        security,
        summary: 'Create an agent from a definition (its draft; nothing is published yet)',
        params: WorkspaceParams,
        body: AgentDefinition,
        response: { 201: AgentView },
      },
      preHandler: requirePermission('agents:manage'),
    },
    async (req, reply) =>
      reply.status(201).send(await service.createAgent({ scope: requireScope(req), definition: req.body })),
  );

  app.post(
    `${base}/import`,
    {
      schema: {
        tags,
        security,
        summary: 'Create an agent from an exported definition (?publish=true also publishes it as version 1)',
        params: WorkspaceParams,
        querystring: ImportQuery,
        body: AgentDefinition,
        response: { 201: AgentView },
      },
      preHandler: requirePermission('agents:manage'),
    },
    async (req, reply) =>
      reply.status(201).send(
        await service.importAgent({
          scope: requireScope(req),
          definition: req.body,
          publish: req.query.publish === 'true',
        }),
      ),
  );

  app.get(
    base,
    {
      schema: {
        tags,
        security,
        summary: 'List agents, newest first (cursor pagination; archived ones with ?archived=true)',
        params: WorkspaceParams,
        querystring: ListAgentsQuery,
        response: { 200: AgentList },
      },
      preHandler: requirePermission('agents:read'),
    },
    async (req) =>
      service.listAgents({
        scope: requireScope(req),
        limit: req.query.limit,
        archived: req.query.archived === 'true',
        ...(req.query.cursor ? { cursor: req.query.cursor } : {}),
      }),
  );

  app.get(
    one,
    {
      schema: {
        tags,
        security,
        summary: 'Get an agent: its draft and its latest published version',
        params: AgentParams,
        response: { 200: AgentView },
      },
      preHandler: requirePermission('agents:read'),
    },
    async (req) => service.getAgent({ scope: requireScope(req), agent: req.params.agentId }),
  );

  app.put(
    one,
    {
      schema: {
        tags,
        security,
        summary: "Replace an agent's draft with a whole definition (published versions do not change)",
        params: AgentParams,
        body: AgentDefinition,
        response: { 200: AgentView },
      },
      preHandler: requirePermission('agents:manage'),
    },
    async (req) => service.updateAgent({ scope: requireScope(req), agent: req.params.agentId, definition: req.body }),
  );

  app.delete(
    one,
    {
      schema: {
        tags,
        security,
        summary: 'Archive an agent (kept with its versions for its runs; its name is free again)',
        params: AgentParams,
      },
      preHandler: requirePermission('agents:manage'),
    },
    async (req, reply) => {
      await service.archiveAgent({ scope: requireScope(req), agent: req.params.agentId });
      return reply.status(204).send();
    },
  );

  app.post(
    `${one}/publish`,
    {
      schema: {
        tags,
        security,
        summary: 'Publish the draft as the next immutable version (409 agent_unchanged when identical to the latest)',
        params: AgentParams,
        response: { 201: VersionView },
      },
      preHandler: requirePermission('agents:manage'),
    },
    async (req, reply) =>
      reply.status(201).send(await service.publishAgent({ scope: requireScope(req), agent: req.params.agentId })),
  );

  app.get(
    `${one}/versions`,
    {
      schema: {
        tags,
        security,
        summary: "List an agent's published versions, newest first",
        params: AgentParams,
        querystring: ListVersionsQuery,
        response: { 200: VersionList },
      },
      preHandler: requirePermission('agents:read'),
    },
    async (req) =>
      service.listVersions({
        scope: requireScope(req),
        agent: req.params.agentId,
        limit: req.query.limit,
        ...(req.query.cursor ? { cursor: req.query.cursor } : {}),
      }),
  );

  app.get(
    `${one}/versions/:version`,
    {
      schema: {
        tags,
        security,
        summary: 'Get a published version of an agent',
        params: VersionParams,
        response: { 200: VersionView },
      },
      preHandler: requirePermission('agents:read'),
    },
    async (req) =>
      service.getVersion({ scope: requireScope(req), agent: req.params.agentId, version: req.params.version }),
  );

  app.get(
    `${one}/export`,
    {
      schema: {
        tags,
        security,
        summary: 'Export the draft (or ?version=N) as a berth.agent/v1 definition; never secrets',
        params: AgentParams,
        querystring: ExportQuery,
        response: { 200: AgentDefinition },
      },
      preHandler: requirePermission('agents:read'),
    },
    async (req) =>
      service.exportAgent({
        scope: requireScope(req),
        agent: req.params.agentId,
        ...(req.query.version ? { version: req.query.version } : {}),
      }),
  );
}
