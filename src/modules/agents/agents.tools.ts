import type { FastifyRequest } from 'fastify';
import { Agent } from 'undici';
import type { Clock } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import { type EgressGuard, egressGuard } from '../../platform/http/egress.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { AuditInput } from '../audit/index.ts';
import type { VaultService } from '../vault/index.ts';
import type { Permission } from '../workspaces/index.ts';
import { mcpRepo } from './agents.mcp.repo.ts';
import { registerMcpRoutes } from './agents.mcp.routes.ts';
import { type McpService, mcpService, toAppError } from './agents.mcp.service.ts';
import { agentMcpTables } from './agents.mcp.tables.ts';
import { secretsRepo } from './agents.secrets.repo.ts';
import { registerSecretRoutes } from './agents.secrets.routes.ts';
import { type SecretsService, secretsService } from './agents.secrets.service.ts';
import { agentSecretsTables } from './agents.secrets.tables.ts';
import { builtinTool } from './agents.tools.builtin.ts';
import { DEFAULT_TOOL_LIMITS, fail, type Tool, type ToolLimits } from './agents.tools.core.ts';
import { type HttpTransport, httpTool } from './agents.tools.http.ts';
import { listMcpTools, type McpDeps, type McpTarget, mcpTool } from './agents.tools.mcp.ts';
import type { ToolDef } from './agents.tools.schemas.ts';

export {
  compileParameters,
  DEFAULT_TOOL_LIMITS,
  type JsonSchema,
  parametersProblem,
  type Tool,
  type ToolContext,
  type ToolError,
  type ToolErrorCode,
  type ToolLimits,
  type ToolResult,
  type ToolSpec,
} from './agents.tools.core.ts';
export { mcpToolName } from './agents.tools.mcp.ts';

export type ToolsServiceDeps = {
  clock: Clock;
  http: HttpTransport;
  /** Workspace secrets by name (the secrets service's `source`). */
  secrets: SecretsService['source'];
  /** The call target of a workspace's MCP server by name; throws ToolFailure. */
  mcpTarget(workspaceId: string, name: string): Promise<McpTarget>;
  stdioAllowed: boolean;
  limits?: Partial<ToolLimits>;
};

/**
 * Turns an agent definition's tool defs into tools the run engine calls. MCP servers are
 * asked for their tools here (filtered by the def's `allow`); a server the workspace does
 * not have answers `mcp_server_not_found`, two tools with one name `duplicate_tool_name`.
 * Each tool is bound to the workspace it was resolved for.
 *
 * @example
 * const tools = await toolsService(deps).resolve(workspaceId, version.definition.tools);
 * const result = await tools[0].execute({ expression: '2^10' }, { workspaceId, userId, runId, signal });
 */
export function toolsService(deps: ToolsServiceDeps) {
  const limits: ToolLimits = { ...DEFAULT_TOOL_LIMITS, ...deps.limits };
  const mcpDeps: McpDeps = { http: deps.http, stdioAllowed: deps.stdioAllowed };
  const mcpLimits = { timeoutMs: limits.timeoutMs, maxBytes: limits.maxResponseBytes };

  async function resolveOne(workspaceId: string, def: ToolDef): Promise<Tool[]> {
    if (def.type === 'builtin') return [builtinTool(def, { clock: deps.clock, transport: deps.http, limits })];
    if (def.type === 'http') return [httpTool(def, { transport: deps.http, secrets: deps.secrets })];
    let listed: Awaited<ReturnType<typeof listMcpTools>>;
    try {
      listed = await listMcpTools(await deps.mcpTarget(workspaceId, def.server), mcpDeps, mcpLimits);
    } catch (err) {
      throw toAppError(err);
    }
    const allow = def.allow ? new Set(def.allow) : null;
    return listed
      .filter((t) => !allow || allow.has(t.name))
      .map((t) => mcpTool(def, t, () => deps.mcpTarget(workspaceId, def.server), mcpDeps, mcpLimits));
  }

  return {
    async resolve(workspaceId: string, defs: ToolDef[]): Promise<Tool[]> {
      const tools: Tool[] = [];
      for (const def of defs) tools.push(...(await resolveOne(workspaceId, def)));
      const seen = new Set<string>();
      for (const t of tools) {
        if (seen.has(t.name))
          throw new AppError('duplicate_tool_name', `Two of the agent's tools are named ${t.name}.`);
        seen.add(t.name);
      }
      return tools.map((t) => ({
        ...t,
        execute: (args, ctx) =>
          ctx.workspaceId === workspaceId
            ? t.execute(args, ctx)
            : Promise.resolve(fail('tool_failed', 'The tool belongs to another workspace.')),
      }));
    },
  };
}

export type ToolsService = ReturnType<typeof toolsService>;

/** An undici dispatcher whose sockets connect only to addresses the egress guard allows. */
export function guardedTransport(egress: EgressGuard): HttpTransport {
  return { egress, dispatcher: new Agent({ connect: { lookup: egress.lookup }, connections: 64 }) };
}

export type AgentToolsDeps = {
  db: Db;
  clock: Clock;
  vault: Pick<VaultService, 'encrypt' | 'decryptString'>;
  audit: { record(tx: Database, input: AuditInput): Promise<unknown> };
  config: { BERTH_EGRESS_ALLOW?: string | undefined; BERTH_MCP_STDIO: boolean };
  limits?: Partial<ToolLimits>;
};

/**
 * The tools part of the agents module: workspace secrets, MCP servers and the tools
 * service, with their tables and routes. The agents module's index wires it in.
 */
export function createAgentTools(deps: AgentToolsDeps) {
  const egress = egressGuard(deps.config.BERTH_EGRESS_ALLOW);
  const http = guardedTransport(egress);
  const limits: ToolLimits = { ...DEFAULT_TOOL_LIMITS, ...deps.limits };
  const secrets = secretsService({
    db: deps.db,
    repo: secretsRepo,
    clock: deps.clock,
    vault: deps.vault,
    audit: deps.audit,
  });
  const mcp: McpService = mcpService({
    db: deps.db,
    repo: mcpRepo,
    clock: deps.clock,
    vault: deps.vault,
    audit: deps.audit,
    secrets: secrets.source,
    egress,
    client: { http, stdioAllowed: deps.config.BERTH_MCP_STDIO },
    limits: { timeoutMs: limits.timeoutMs, maxBytes: limits.maxResponseBytes },
  });
  const tools = toolsService({
    clock: deps.clock,
    http,
    secrets: secrets.source,
    mcpTarget: mcp.targetByName,
    stdioAllowed: deps.config.BERTH_MCP_STDIO,
    limits,
  });
  return {
    tools,
    secrets,
    mcp,
    tables: [...agentSecretsTables, ...agentMcpTables],
    registerRoutes(
      app: HttpServer,
      requirePermission: (permission: Permission) => (req: FastifyRequest) => Promise<void>,
    ) {
      registerSecretRoutes(app, { secrets, requirePermission });
      registerMcpRoutes(app, { mcp, requirePermission });
      app.addHook('onClose', async () => {
        await http.dispatcher.close().catch(() => undefined);
      });
    },
  };
}

export type AgentTools = ReturnType<typeof createAgentTools>;
