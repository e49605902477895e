import type { FastifyRequest } from 'fastify';
import type { HttpServer } from '../../platform/http/server.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import {
  AddMcpServerBody,
  McpServerList,
  McpServerParams,
  McpServersParams,
  McpServerView,
  McpToolList,
  UpdateMcpServerBody,
} from './agents.mcp.schemas.ts';
import type { McpService } from './agents.mcp.service.ts';

type Deps = {
  mcp: McpService;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

const security: Array<Record<string, string[]>> = [{ session: [], csrf: [] }, { apiKey: [] }];
const tags = ['agent tools'];

/** MCP servers of a workspace: everyone who sees agents lists them; owners and admins manage them. */
export function registerMcpRoutes(app: HttpServer, { mcp, requirePermission }: Deps) {
  const base = '/api/workspaces/:workspaceId/mcp-servers';

  app.post(
    base,
    {
      schema: {
        tags,
        security,
        summary: 'Connect an MCP server (header values are stored encrypted and never returned)',
        params: McpServersParams,
        body: AddMcpServerBody,
        response: { 201: McpServerView },
      },
      preHandler: requirePermission('tools:manage'),
    },
    async (req, reply) => reply.status(201).send(await mcp.addServer({ scope: requireScope(req), input: req.body })),
  );

  app.get(
    base,
    {
      schema: {
        tags,
        security,
        summary: 'List MCP servers',
        params: McpServersParams,
        response: { 200: McpServerList },
      },
      preHandler: requirePermission('agents:read'),
    },
    async (req) => ({ data: await mcp.listServers({ scope: requireScope(req) }) }),
  );

  app.get(
    `${base}/:serverId`,
    {
      schema: {
        tags,
        security,
        summary: 'Get an MCP server',
        params: McpServerParams,
        response: { 200: McpServerView },
      },
      preHandler: requirePermission('agents:read'),
    },
    async (req) => mcp.getServer({ scope: requireScope(req), serverId: req.params.serverId }),
  );

  app.patch(
    `${base}/:serverId`,
    {
      schema: {
        tags,
        security,
        summary: 'Change an MCP server (url, headers, enabled)',
        params: McpServerParams,
        body: UpdateMcpServerBody,
        response: { 200: McpServerView },
      },
      preHandler: requirePermission('tools:manage'),
    },
    async (req) => mcp.updateServer({ scope: requireScope(req), serverId: req.params.serverId, input: req.body }),
  );

  app.delete(
    `${base}/:serverId`,
    {
      schema: { tags, security, summary: 'Remove an MCP server', params: McpServerParams },
      preHandler: requirePermission('tools:manage'),
    },
    async (req, reply) => {
      await mcp.deleteServer({ scope: requireScope(req), serverId: req.params.serverId });
      return reply.status(204).send();
    },
  );

  app.get(
    `${base}/:serverId/tools`,
    {
      schema: {
        tags,
        security,
        summary: "List the server's tools (asks the server)",
        params: McpServerParams,
        response: { 200: McpToolList },
      },
      preHandler: requirePermission('agents:manage'),
    },
    async (req) => ({ data: await mcp.listServerTools({ scope: requireScope(req), serverId: req.params.serverId }) }),
  );
}
