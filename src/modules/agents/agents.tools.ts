import type { FastifyRequest } from 'fastify';
import { Agent } from 'undici';
import type { Clock } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import { type EgressGuard, egressGuard } from '../../platform/http/egress.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { AuditInput } from '../audit/index.ts';
import type { ConnectionsService, VaultService } from '../vault/index.ts';
import type { Permission } from '../workspaces/index.ts';
import { mcpRepo } from './agents.mcp.repo.ts';
import { registerMcpRoutes } from './agents.mcp.routes.ts';
import { type McpService, mcpService, toAppError } from './agents.mcp.service.ts';
import { agentMcpTables } from './agents.mcp.tables.ts';
import { secretsRepo } from './agents.secrets.repo.ts';
import { registerSecretRoutes } from './agents.secrets.routes.ts';
import { type SecretsService, secretsService } from './agents.secrets.service.ts';
import { agentSecretsTables } from './agents.secrets.tables.ts';
import { builtinTool, type KnowledgeSearch } from './agents.tools.builtin.ts';
import {
  capContent,
  DEFAULT_TOOL_LIMITS,
  fail,
  ok,
  type Tool,
  type ToolErrorCode,
  ToolFailure,
  type ToolLimits,
} from './agents.tools.core.ts';
import {
  type ConnectionSource,
  connectionRefs,
  type HttpTransport,
  httpTool,
  secretRefs,
} from './agents.tools.http.ts';
import { listMcpTools, type McpDeps, type McpTarget, mcpTool, mcpToolName } from './agents.tools.mcp.ts';
import { plainHttpPolicy, templateOrigin } from './agents.tools.policy.ts';
import type { ToolDef } from './agents.tools.schemas.ts';

export { type KnowledgeHit, type KnowledgeSearch, withKnowledgeSearch } from './agents.tools.builtin.ts';
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
  /** OAuth connections' tokens by name, for the run's user (absent: `{{connection.NAME}}` answers `connection_unavailable`). */
  connections?: ConnectionSource;
  /** The call target of a workspace's MCP server by name; throws ToolFailure. */
  mcpTarget(workspaceId: string, name: string): Promise<McpTarget>;
  stdioAllowed: boolean;
  /** Hosts a secret may reach over plain http (default: none, https only). */
  plainHttpAllowed?: (host: string) => boolean;
  limits?: Partial<ToolLimits>;
  /** `knowledge_search`: the knowledge module's search (absent: it answers `knowledge_unavailable`). */
  knowledge?: KnowledgeSearch | undefined;
};

/** MCP failures that mean the server is down or slow (the run goes on without its tools), not misconfigured. */
const UNAVAILABLE: ReadonlySet<ToolErrorCode> = new Set([
  'mcp_error',
  'timeout',
  'response_too_large',
  'upstream_error',
]);

/** The one tool a server that could not be listed gives a run: every call answers `mcp_unavailable`. */
function unavailableTool(def: Extract<ToolDef, { type: 'mcp' }>, reason: string): Tool {
  const message = `The MCP server ${def.server} could not be reached when the run started (${reason}); its tools are unavailable in this run.`;
  return {
    name: mcpToolName(def.server, 'unavailable'),
    description: message,
    parameters: { type: 'object', properties: {} },
    requiresApproval: false,
    execute: async () => fail('mcp_unavailable', message),
  };
}

/**
 * Turns an agent definition's tool defs into tools the run engine calls. MCP servers are
 * asked for their tools here, all at once and within `mcpListTimeoutMs` (filtered by the
 * def's `allow`); a server the workspace does not have answers `mcp_server_not_found`, two
 * tools with one name `duplicate_tool_name`. A server that is down or slow does not stop
 * the run: it gives one tool, `<server>__unavailable`, answering `mcp_unavailable`. Each
 * tool is bound to the workspace it was resolved for, and its content is cut at its
 * `maxResultBytes` (or the service's).
 *
 * @example
 * const tools = await toolsService(deps).resolve(workspaceId, version.definition.tools);
 * const result = await tools[0].execute({ expression: '2^10' }, { workspaceId, userId, runId, signal });
 */
export function toolsService(deps: ToolsServiceDeps) {
  const limits: ToolLimits = { ...DEFAULT_TOOL_LIMITS, ...deps.limits };
  const mcpDeps: McpDeps = { http: deps.http, stdioAllowed: deps.stdioAllowed };
  const mcpLimits = { timeoutMs: limits.timeoutMs, maxBytes: limits.maxResponseBytes };
  const listLimits = {
    timeoutMs: Math.min(limits.mcpListTimeoutMs, limits.timeoutMs),
    maxBytes: limits.maxResponseBytes,
  };
  const plainHttpAllowed = deps.plainHttpAllowed ?? (() => false);

  async function resolveOne(workspaceId: string, def: ToolDef): Promise<Tool[]> {
    if (def.type === 'builtin') {
      return [builtinTool(def, { clock: deps.clock, transport: deps.http, limits, knowledge: deps.knowledge })];
    }
    if (def.type === 'http') {
      return [
        httpTool(def, { transport: deps.http, secrets: deps.secrets, connections: deps.connections, plainHttpAllowed }),
      ];
    }
    let listed: Awaited<ReturnType<typeof listMcpTools>>;
    try {
      const target = await deps.mcpTarget(workspaceId, def.server);
      try {
        listed = await listMcpTools(target, mcpDeps, listLimits);
      } catch (err) {
        if (err instanceof ToolFailure && UNAVAILABLE.has(err.code)) return [unavailableTool(def, err.message)];
        throw err;
      }
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
      // MCP servers are listed side by side: one slow server costs the run its time limit once.
      const tools = (await Promise.all(defs.map((def) => resolveOne(workspaceId, def)))).flat();
      const seen = new Set<string>();
      for (const t of tools) {
        if (seen.has(t.name))
          throw new AppError('duplicate_tool_name', `Two of the agent's tools are named ${t.name}.`);
        seen.add(t.name);
      }
      return tools.map((t) => {
        const cap = t.maxResultBytes ?? limits.maxResultBytes;
        return {
          ...t,
          maxResultBytes: cap,
          async execute(args, ctx) {
            if (ctx.workspaceId !== workspaceId) return fail('tool_failed', 'The tool belongs to another workspace.');
            const result = await t.execute(args, ctx);
            return result.ok ? ok(capContent(result.content, cap)) : result;
          },
        };
      });
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
  /** OAuth connections (the vault's): whose token `{{connection.NAME}}` sends, and `checkConnections`. */
  connections?: Pick<ConnectionsService, 'connectionFor' | 'runToken'> | undefined;
  limits?: Partial<ToolLimits>;
  /** `knowledge_search`: the knowledge module's search by name (absent: it answers `knowledge_unavailable`). */
  knowledge?: KnowledgeSearch | undefined;
};

/**
 * The tools' view of the vault's connections: the token of `name` for the run's user, every
 * failure (none, revoked, broken, renewal failing) a `connection_unavailable` tool error
 * whose message never carries a token.
 */
function connectionSource(connections: Pick<ConnectionsService, 'runToken'>): ConnectionSource {
  return async (workspaceId, userId, name) => {
    try {
      const token = await connections.runToken(workspaceId, userId === '' ? null : userId, name);
      return { value: token.accessToken, apiHosts: token.apiHosts };
    } catch (err) {
      const code = err instanceof AppError ? err.code : null;
      const reason =
        code === 'connection_required' || code === 'not_found'
          ? 'the user has no such connection (it may have been disconnected)'
          : code === 'connection_broken'
            ? 'it stopped working (its provider refused to renew access) and must be connected again'
            : code === 'oauth_provider_error'
              ? 'its provider could not renew access just now'
              : 'it could not be read';
      throw new ToolFailure('connection_unavailable', `The connection ${name} cannot be used: ${reason}.`);
    }
  };
}

/**
 * The tools part of the agents module: workspace secrets, MCP servers and the tools
 * service, with their tables and routes. The agents module's index wires it in.
 */
export function createAgentTools(deps: AgentToolsDeps) {
  const egress = egressGuard(deps.config.BERTH_EGRESS_ALLOW);
  const plainHttpAllowed = plainHttpPolicy(deps.config.BERTH_EGRESS_ALLOW);
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
    plainHttpAllowed,
    client: { http, stdioAllowed: deps.config.BERTH_MCP_STDIO },
    limits: { timeoutMs: limits.timeoutMs, maxBytes: limits.maxResponseBytes },
  });
  const tools = toolsService({
    clock: deps.clock,
    http,
    secrets: secrets.source,
    mcpTarget: mcp.targetByName,
    stdioAllowed: deps.config.BERTH_MCP_STDIO,
    plainHttpAllowed,
    limits,
    knowledge: deps.knowledge,
    ...(deps.connections ? { connections: connectionSource(deps.connections) } : {}),
  });
  /** Whether a credential (a secret, a connection's token) may be sent to a URL template's origin. */
  function credentialOriginAllowed(url: string): boolean {
    const origin = templateOrigin(url);
    return origin.scheme === 'https' || (origin.scheme === 'http' && !!origin.host && plainHttpAllowed(origin.host));
  }

  /**
   * The checks of a definition's credential use that need the workspace (run before it is
   * saved, and again at every call): each header's secrets are declared for that header, and
   * secrets and connection tokens go over https unless the host is allow-listed. Secrets that
   * do not exist yet are checked when they are used; a token's hosts (its provider's API
   * hosts) when it is sent, since whose connection a name picks depends on the run's user.
   */
  async function checkSecretUse(workspaceId: string, defs: readonly ToolDef[]): Promise<void> {
    const http = defs.flatMap((d, i) => (d.type === 'http' ? [{ d, i }] : []));
    for (const { d, i } of http) {
      if (connectionRefs(d.request.headers ?? {}).size === 0 || credentialOriginAllowed(d.request.url)) continue;
      throw new AppError('connection_placement_not_allowed', "A connection's token is only sent over https.", {
        details: [
          { path: `/tools/${i}/request/url`, message: 'a URL sending a connection token must start with https://' },
        ],
      });
    }
    const names = [...secretRefs(http.map(({ d }) => d.request.headers ?? {}))];
    if (names.length === 0) return;
    const placements = await secrets.placements(workspaceId, names);
    for (const { d, i } of http) {
      for (const [header, value] of Object.entries(d.request.headers ?? {})) {
        const refs = [...secretRefs(value)];
        if (refs.length === 0) continue;
        const path = `/tools/${i}/request/headers/${header}`;
        if (!credentialOriginAllowed(d.request.url)) {
          throw new AppError('secret_placement_not_allowed', 'Workspace secrets are only sent over https.', {
            details: [{ path: `/tools/${i}/request/url`, message: 'a URL sending secrets must start with https://' }],
          });
        }
        for (const name of refs) {
          const placement = placements.get(name);
          if (placement && !placement.allowedHeaders.includes(header.toLowerCase())) {
            throw new AppError(
              'secret_placement_not_allowed',
              `The secret ${name} may only be sent in ${placement.allowedHeaders.join(', ')}, not ${header}.`,
              { details: [{ path, message: `${name} is not declared for this header` }] },
            );
          }
        }
      }
    }
  }

  /**
   * Whether a run acting as `userId` (null: no user, shared connections only) can act through
   * every connection the definition lists: each name must pick a connection (the user's own,
   * else one shared with the workspace) that is not broken. Called when a run is created;
   * a connection revoked or broken later fails the tool calls using it (`connection_unavailable`).
   * Throws 409 `connection_required` naming the first one missing.
   *
   * @example await agentTools.checkConnections(workspaceId, userId, version.definition);
   */
  async function checkConnections(
    workspaceId: string,
    userId: string | null,
    definition: { connections: readonly string[] },
  ): Promise<void> {
    for (const [i, name] of definition.connections.entries()) {
      const found = deps.connections ? await deps.connections.connectionFor(workspaceId, userId ?? '', name) : null;
      if (found?.status === 'active') continue;
      const message =
        found === null
          ? `This agent acts through the connection ${name}, and you have none by that name (nor does the workspace share one): connect the account first.`
          : `This agent acts through the connection ${name}, which stopped working (its provider refused to renew access): connect the account again first.`;
      throw new AppError('connection_required', message, {
        details: [
          { path: `/connections/${i}`, message: found === null ? `no connection named ${name}` : `${name} is broken` },
        ],
      });
    }
  }

  return {
    tools,
    secrets,
    mcp,
    checkSecretUse,
    checkConnections,
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
