import { readFileSync } from 'node:fs';
import { createAgentsModule } from './modules/agents/index.ts';
import { createAnalyticsModule } from './modules/analytics/index.ts';
import { type AuditSigningKey, createAuditModule } from './modules/audit/index.ts';
import { createBillingModule } from './modules/billing/index.ts';
import { type CreditGate, createGatewayModule, unlimitedCredits } from './modules/gateway/index.ts';
import { createIdentityModule, sessionCookieName } from './modules/identity/index.ts';
import { createKeysModule } from './modules/keys/index.ts';
import { createKnowledgeModule } from './modules/knowledge/index.ts';
import { createNotificationsModule } from './modules/notifications/index.ts';
import { createPrivacyModule } from './modules/privacy/index.ts';
import { createSetupModule } from './modules/setup/index.ts';
import type { PlatformDeps } from './modules/types.ts';
import { createConnectionsModule, createVaultModule, type Keyring } from './modules/vault/index.ts';
import { createWorkspacesModule, roleAllows } from './modules/workspaces/index.ts';
import type { TableEntry } from './platform/db/datamap.ts';
import { platformDataMap } from './platform/db/platform.datamap.ts';
import { registerApiReference } from './platform/http/docs.ts';
import { createHttpServer, type HttpServer } from './platform/http/server.ts';
import { jobsDataMap } from './platform/jobs/jobs.datamap.ts';

export type AppDeps = PlatformDeps & {
  keyring: Keyring;
  auditSigningKey?: AuditSigningKey | null;
  /** The gateway's credit gate; absent = billing's ledger (or none with BERTH_CREDITS=unlimited). */
  credits?: CreditGate;
};

export const VERSION: string = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version;

/** Wires every module's service to its dependencies. No I/O happens here. */
export function createModules(deps: AppDeps) {
  const audit = createAuditModule({ ...deps, workspaces: () => workspaces.service });
  const vault = createVaultModule(deps);
  const notifications = createNotificationsModule({ ...deps, vault: vault.service });
  const identity = createIdentityModule({
    ...deps,
    vault: vault.service,
    mailer: notifications.service.mailer,
    audit: audit.service,
  });
  const workspaces = createWorkspacesModule({
    ...deps,
    identity: identity.service,
    vault: vault.service,
    mailer: notifications.service.mailer,
  });
  workspaces.service.onEvent(audit.service.recordWorkspaceEvent);
  const keys = createKeysModule({
    ...deps,
    workspaces: workspaces.service,
    identity: identity.service,
    audit: audit.service,
  });
  const setup = createSetupModule({
    ...deps,
    identity: identity.service,
    workspaces: workspaces.service,
    audit: audit.service,
    keys: keys.service,
  });
  const billing = createBillingModule({
    ...deps,
    audit: audit.service,
    workspaces: workspaces.service,
    mailer: notifications.service.mailer,
    keys: keys.service,
    requirePermission: workspaces.service.requirePermission,
  });
  const gateway = createGatewayModule({
    ...deps,
    vault: vault.service,
    audit: audit.service,
    requirePermission: workspaces.service.requirePermission,
    workspaces: workspaces.service,
    // A gate handed in (tests, benchmarks) wins; otherwise the ledger, unless the operator turned credits off.
    credits: deps.credits ?? (deps.config.BERTH_CREDITS === 'ledger' ? billing.gate : unlimitedCredits),
    planLimitsOf: billing.service.limitsOf,
    // A user who restricted processing of their data: their keys are refused (from memory, every replica).
    processingAllowed: (userId) => privacy.service.restrictions.processingAllowed(userId),
  });
  // OAuth connections (the vault's tokens): mail their owners, permissions from workspaces.
  const connections = createConnectionsModule({
    ...deps,
    vault: vault.service,
    audit: audit.service,
    mailer: notifications.service.mailer,
    findUser: (userId) => identity.service.findUserById(userId),
    requirePermission: workspaces.service.requirePermission,
    workspaces: workspaces.service,
  });
  // A plan change applies to the gateway's next call on every replica.
  billing.service.onPlanChanged((tx, workspaceId) => gateway.service.providers.changedAfterCommit(tx, workspaceId));
  // The privacy module reads the whole data map (exports, the notice): every module's, once all exist.
  let all: Array<{ dataMap: TableEntry[] }> = [];
  const privacy = createPrivacyModule({
    ...deps,
    dataMap: () => [...platformDataMap, ...jobsDataMap, ...all.flatMap((m) => m.dataMap)],
    audit: audit.service,
    identity: identity.service,
    workspaces: workspaces.service,
    keys: keys.service,
    vault: vault.service,
    mailer: notifications.service.mailer,
    requirePermission: workspaces.service.requirePermission,
    // Retention: the workspace plan's audit retention.
    auditMonthsOf: async (workspaceId) => (await billing.service.limitsOf(workspaceId)).auditRetentionMonths,
    // Retention: the ledger's expired transactions are carried forward, not just deleted.
    ledgerRetention: billing.ledgerRetention,
    // Erasure: OAuth tokens are revoked at their providers before they are deleted.
    beforeErase: [connections.service.forgetUser],
  });
  // Marketing mail goes only to users whose latest word on it is a consent given.
  notifications.service.useMarketingConsent((userId) => privacy.service.consents.hasConsent(userId, 'marketing_email'));
  // Product analytics: counts skip users objecting to it; an objection deletes what was counted.
  const analytics = createAnalyticsModule({
    ...deps,
    consents: privacy.service.consents,
    processingAllowed: (userId) => privacy.service.restrictions.processingAllowed(userId),
    identity: identity.service,
  });
  privacy.service.consents.onObjectionChange(analytics.service.objectionChanged);
  const knowledge = createKnowledgeModule({
    ...deps,
    audit: audit.service,
    vault: vault.service,
    gateway: gateway.service,
    requirePermission: workspaces.service.requirePermission,
  });
  const agents = createAgentsModule({
    ...deps,
    audit: audit.service,
    vault: vault.service,
    connections: connections.service,
    // knowledge_search: always the run's workspace, as the system (the run's user started it).
    knowledge: {
      search: (workspaceId, kbName, query, topK, run) =>
        knowledge.service.searchByName({
          scope: { workspaceId, actor: { type: 'system', name: 'agents.knowledge_search' }, role: 'viewer' },
          name: kbName,
          input: { query, topK },
          // The query's embedding is part of the run's cost: metered like its model calls.
          billing: { userId: run.userId, keyId: null, requestId: run.runId },
        }),
    },
    requirePermission: workspaces.service.requirePermission,
    runs: {
      // A run's model calls are gateway calls: the same governance, credits and usage events.
      complete: (caller, body, signal) => gateway.service.complete(caller, body, signal),
      contextWindow: (workspaceId, model) => gateway.service.contextWindow(workspaceId, model),
      keyPolicy: (workspaceId, keyId) => keys.service.policyOf(workspaceId, keyId),
      canStartWork: (workspaceId) => billing.canStartWork(workspaceId),
      onGraceExpired: (handler) => billing.onGraceExpired(handler),
      assertProcessingAllowed: (userId) => privacy.service.restrictions.assertProcessingAllowed(userId),
      // A member removed (or made a viewer) since the run started: its queued or paused run does not go on.
      mayRun: async (workspaceId, userId) => {
        const m = await workspaces.service.resolveMembership(workspaceId, userId);
        return m !== null && roleAllows(m.role, 'agents:run');
      },
    },
  });
  const modules = {
    audit,
    notifications,
    vault,
    identity,
    workspaces,
    keys,
    setup,
    billing,
    gateway,
    privacy,
    analytics,
    agents,
    connections,
    knowledge,
  };
  all = Object.values(modules);
  return modules;
}

export type Modules = ReturnType<typeof createModules>;

/** The whole data map: every table Berth owns, module by module. */
export function dataMap(modules: Modules) {
  return [...platformDataMap, ...jobsDataMap, ...Object.values(modules).flatMap((m) => m.dataMap)];
}

export type App = { http: HttpServer; modules: Modules };

/** Builds the HTTP application on top of the modules. Listening and jobs are main.ts's. */
export async function buildApp(deps: AppDeps): Promise<App> {
  const modules = createModules(deps);
  const http = await createHttpServer({
    logger: deps.logger,
    bodyLimit: deps.config.BERTH_BODY_LIMIT,
    trustProxy: deps.config.BERTH_TRUST_PROXY,
    publicUrl: deps.config.publicUrl,
    version: VERSION,
    sessionCookieName: sessionCookieName(deps.config.publicUrl),
  });

  http.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  http.get('/readyz', { schema: { hide: true } }, async (_req, reply) => {
    const ok = await deps.db.ping();
    return reply.status(ok ? 200 : 503).send({ status: ok ? 'ready' : 'database unreachable' });
  });

  registerApiReference(http);

  // Order matters: identity installs the authentication hook every later route relies on.
  // The keys hook must run before identity's session hook: a request with a key is never a cookie session.
  // Analytics goes first: it names every later route as a feature (it adds only a read-only route itself).
  // Audit next: it notes every later route's audit policy and binds request facts for events.
  for (const m of [
    modules.analytics,
    modules.audit,
    modules.keys,
    modules.identity,
    modules.workspaces,
    modules.vault,
    modules.notifications,
    modules.setup,
    modules.billing,
    modules.gateway,
    modules.privacy,
    modules.agents,
    modules.connections,
    modules.knowledge,
  ]) {
    await m.registerRoutes?.(http);
  }
  return { http, modules };
}

/** Registers every module's job handlers (only in processes that run workers). */
export async function registerJobs(deps: AppDeps, modules: Modules) {
  for (const m of Object.values(modules)) await m.registerJobs?.(deps.jobs);
}
