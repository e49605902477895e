// The agents module: agent definitions with immutable published versions, their export
// format (`berth.agent/v1`), and the tools agents call. Other modules import only this file.
import type { FastifyRequest } from 'fastify';
import { moduleDataMap } from '../../platform/db/datamap.ts';
import type { Database } from '../../platform/db/db.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import { newId } from '../../platform/ids.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import type { AuditService } from '../audit/index.ts';
import type { Module, PlatformDeps } from '../types.ts';
import type { VaultService } from '../vault/index.ts';
import type { Permission } from '../workspaces/index.ts';
import { agentsRepo } from './agents.repo.ts';
import { registerAgentRoutes } from './agents.routes.ts';
import { type EngineDeps, runEngine, toolSpec } from './agents.runs.engine.ts';
import { runsRepo } from './agents.runs.repo.ts';
import { registerRunRoutes } from './agents.runs.routes.ts';
import { RUN_JOB, type RunsService, runsService } from './agents.runs.service.ts';
import { agentRunTables } from './agents.runs.tables.ts';
import { type AgentsService, agentsService } from './agents.service.ts';
import { agentTables } from './agents.tables.ts';
// Tools (secrets, MCP servers, built-in/HTTP/MCP tools): agents.tools.ts.
import {
  type AgentTools,
  type AgentToolsDeps,
  createAgentTools,
  type KnowledgeSearch,
  withKnowledgeSearch,
} from './agents.tools.ts';

export { checkDefinition, toolSchemaProblem } from './agents.definition.ts';
export type { RunCaller } from './agents.runs.engine.ts';
export type { RunView, StepView } from './agents.runs.schemas.ts';
export type { RunsService } from './agents.runs.service.ts';
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
export type {
  AgentTools,
  KnowledgeHit,
  KnowledgeSearch,
  Tool,
  ToolContext,
  ToolResult,
  ToolSpec,
  ToolsService,
} from './agents.tools.ts';

export type AgentsDeps = PlatformDeps & {
  audit: Pick<AuditService, 'record'>;
  /** Tools: workspace secrets and MCP headers are vault ciphertext. */
  vault: Pick<VaultService, 'encrypt' | 'decryptString'>;
  /** OAuth connections: the tokens `{{connection.NAME}}` sends for a run's user. */
  connections?: AgentToolsDeps['connections'];
  /**
   * The knowledge module's search by knowledge base name, for `knowledge_search` (absent: the
   * tool answers `knowledge_unavailable`). A function, not the module: no import cycle.
   */
  knowledge?: KnowledgeSearch;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
  /** What runs need from the gateway, the keys, billing and privacy. */
  runs: Pick<EngineDeps, 'complete' | 'keyPolicy' | 'assertProcessingAllowed' | 'mayRun'> & {
    /** The context window of a model the workspace calls (null: unknown). */
    contextWindow(workspaceId: string, model: string): Promise<number | null>;
    /** Billing: refuses `insufficient_credits` when the workspace cannot start work. */
    canStartWork(workspaceId: string): Promise<unknown>;
    /** Billing: registers what runs when an out-of-credits workspace's grace period ends. */
    onGraceExpired?(handler: (event: { workspaceId: string }, tx: Database) => Promise<void>): void;
  };
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
export function createAgentsModule(deps: AgentsDeps): Module<AgentsService> & { tools: AgentTools; runs: RunsService } {
  const tools = createAgentTools({ ...deps, limits: { timeoutMs: deps.config.BERTH_TOOL_TIMEOUT_SECONDS * 1000 } });
  const service = agentsService({
    db: deps.db,
    repo: agentsRepo,
    audit: deps.audit,
    clock: deps.clock,
    checkSecretUse: tools.checkSecretUse,
  });
  const { config } = deps;
  const leaseMs = config.BERTH_RUN_LEASE_SECONDS * 1000;
  const approvalTtlMs = config.BERTH_RUN_APPROVAL_TTL_SECONDS * 1000;
  let runs: RunsService | null = null;
  const engine = runEngine({
    db: deps.db,
    repo: runsRepo,
    clock: deps.clock,
    logger: deps.logger,
    vault: deps.vault,
    owner: newId('wrk', deps.clock.now()),
    settings: {
      leaseMs,
      heartbeatMs: Math.max(250, Math.floor(leaseMs / 3)),
      approvalTtlMs,
      maxToolFailures: 5,
      maxAttempts: 3,
      defaultMaxOutputTokens: config.BERTH_GATEWAY_DEFAULT_MAX_OUTPUT_TOKENS,
    },
    // The tools a run resolves: knowledge_search carries the agent's knowledge bases (and is
    // there whenever the agent has some).
    definitionOf: async (tx, workspaceId, agentId, version) => {
      const def = (await agentsRepo.findVersion(tx, workspaceId, agentId, version))?.definition ?? null;
      return def && { ...def, tools: withKnowledgeSearch(def.tools, def.knowledge_bases ?? []) };
    },
    resolveTools: (workspaceId, defs) => tools.tools.resolve(workspaceId, defs),
    complete: deps.runs.complete,
    keyPolicy: deps.runs.keyPolicy,
    assertProcessingAllowed: deps.runs.assertProcessingAllowed,
    mayRun: deps.runs.mayRun,
    contextWindow: deps.runs.contextWindow,
    notify: (runId) => runs?.notify(runId),
  });
  runs = runsService({
    db: deps.db,
    repo: runsRepo,
    agents: agentsRepo,
    engine,
    clock: deps.clock,
    logger: deps.logger,
    jobs: deps.jobs,
    bus: deps.bus,
    contextWindow: deps.runs.contextWindow,
    canStartWork: deps.runs.canStartWork,
    assertProcessingAllowed: deps.runs.assertProcessingAllowed,
    audit: deps.audit,
    checkConnections: tools.checkConnections,
    toolsEstimate: async (workspaceId, definition) => {
      // The tools a run will have: knowledge_search joins an agent with knowledge bases.
      const defs = withKnowledgeSearch(definition.tools, definition.knowledge_bases ?? []);
      const mcp = defs.filter((d) => d.type === 'mcp');
      const specs = await tools.tools
        .resolve(
          workspaceId,
          defs.filter((d) => d.type !== 'mcp'),
        )
        .then((list) => list.map((t) => toolSpec(t)))
        .catch(() => defs);
      return (
        Math.ceil(JSON.stringify(specs).length / 4) + (mcp.length > 0 ? Math.ceil(JSON.stringify(mcp).length / 4) : 0)
      );
    },
    settings: { approvalTtlMs, defaultMaxOutputTokens: config.BERTH_GATEWAY_DEFAULT_MAX_OUTPUT_TOKENS },
  });
  const runService = runs;
  // An out-of-credits workspace whose grace period ended loses its agents' runtime data (runs,
  // their steps and events); its agent definitions stay. A run executing now writes nothing more.
  deps.runs.onGraceExpired?.(async (event, tx) => {
    const deleted = await runsRepo.deleteWorkspaceRuns(tx, event.workspaceId);
    if (deleted > 0)
      deps.logger.info(
        { workspaceId: event.workspaceId, runs: deleted },
        'agents: runs deleted at the end of the grace period',
      );
  });
  let sweeper: NodeJS.Timeout | null = null;
  return {
    service,
    tools,
    runs: runService,
    dataMap: moduleDataMap('agents', [...agentTables, ...tools.tables, ...agentRunTables]),
    async registerRoutes(app: HttpServer) {
      registerAgentRoutes(app, { service, requirePermission: deps.requirePermission });
      tools.registerRoutes(app, deps.requirePermission);
      registerRunRoutes(app, { service: runService, requirePermission: deps.requirePermission });
      const unsubscribe = await runService.followBus();
      // preClose: before the server waits for in-flight requests, which a sync or streamed run would hold.
      app.addHook('preClose', async () => {
        if (sweeper) clearInterval(sweeper);
        sweeper = null;
        // Runs executing here stop writing and give their lease back: another worker resumes them.
        await runService.release();
        await unsubscribe().catch(() => undefined);
      });
    },
    async registerJobs(jobs: Jobs) {
      await jobs.register<{ workspaceId: string; runId: string }>(
        RUN_JOB,
        async ({ workspaceId, runId }) => engine.execute(workspaceId, runId),
        { concurrency: config.BERTH_RUN_CONCURRENCY, retryLimit: 1, expireInSeconds: 3600 + 600 },
      );
      // Runs whose worker died are found within a lease's time and resumed; approvals that expired end.
      const sweep = () =>
        void runService.sweep().catch(() => deps.logger.warn('agents: the run sweep failed; it runs again shortly'));
      sweeper = setInterval(sweep, leaseMs);
      sweeper.unref();
      sweep();
    },
  };
}
