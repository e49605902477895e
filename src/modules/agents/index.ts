// The agents module: agent definitions with immutable published versions, their export
// format (`berth.agent/v1`), and the tools agents call. Other modules import only this file.
import type { FastifyRequest } from 'fastify';
import { moduleDataMap } from '../../platform/db/datamap.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { AuditService } from '../audit/index.ts';
import type { Module, PlatformDeps } from '../types.ts';
import type { VaultService } from '../vault/index.ts';
import type { Permission } from '../workspaces/index.ts';
import { agentsRepo } from './agents.repo.ts';
import { registerAgentRoutes } from './agents.routes.ts';
import { type AgentsService, agentsService } from './agents.service.ts';
import { agentTables } from './agents.tables.ts';
// Tools (secrets, MCP servers, built-in/HTTP/MCP tools): agents.tools.ts.
import { type AgentTools, createAgentTools } from './agents.tools.ts';

export { checkDefinition, toolSchemaProblem } from './agents.definition.ts';
export {
  AGENT_FORMAT,
  AgentDefinition,
  type AgentDefinitionInput,
  type AgentSummary,
  type AgentView,
  LIMIT_RANGES,
  type VersionSummary,
  type VersionView,
} from './agents.schemas.ts';
export type { AgentsService } from './agents.service.ts';
export type { ToolDef, ToolDefInput } from './agents.tools.schemas.ts';
export type { AgentTools, Tool, ToolContext, ToolResult, ToolSpec, ToolsService } from './agents.tools.ts';

export type AgentsDeps = PlatformDeps & {
  audit: Pick<AuditService, 'record'>;
  /** Tools: workspace secrets and MCP headers are vault ciphertext. */
  vault: Pick<VaultService, 'encrypt' | 'decryptString'>;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

/**
 * Builds the agents module. Its service: `createAgent`, `importAgent`, `listAgents`,
 * `getAgent`, `updateAgent`, `publishAgent`, `listVersions`, `getVersion` (what a run
 * pins), `exportAgent`, `archiveAgent`, each taking a `scope`.
 *
 * @example
 * const agents = createAgentsModule({ ...deps, audit: audit.service, requirePermission });
 * const v = await agents.service.getVersion({ scope, agent: 'support', version: 3 });
 */
export function createAgentsModule(deps: AgentsDeps): Module<AgentsService> & { tools: AgentTools } {
  const tools = createAgentTools(deps);
  const service = agentsService({
    db: deps.db,
    repo: agentsRepo,
    audit: deps.audit,
    clock: deps.clock,
    checkSecretUse: tools.checkSecretUse,
  });
  return {
    service,
    tools,
    dataMap: moduleDataMap('agents', [...agentTables, ...tools.tables]),
    registerRoutes(app: HttpServer) {
      registerAgentRoutes(app, { service, requirePermission: deps.requirePermission });
      tools.registerRoutes(app, deps.requirePermission);
    },
  };
}
