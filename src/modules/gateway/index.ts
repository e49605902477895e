// The gateway module: the OpenAI-compatible inbound API (/v1), providers and prices of
// workspaces, routing with fallback, rate limits, credit reservations and usage metering.
// Other modules import only this file.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { ConfigError } from '../../config.ts';
import { moduleDataMap } from '../../platform/db/datamap.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { egressGuard } from '../../platform/http/egress.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { AuditInput } from '../audit/index.ts';
import type { Module, PlatformDeps } from '../types.ts';
import type { VaultService } from '../vault/index.ts';
import type { Permission, WorkspacesService } from '../workspaces/index.ts';
import { registerGatewayAdminRoutes } from './gateway.admin.routes.ts';
import { type ModelPrice, SHIPPED_PRICES } from './gateway.catalog.ts';
import { type CreditGate, unlimitedCredits } from './gateway.credits.ts';
import { memoryRateLimiter, type RateLimiter, redisRateLimiter } from './gateway.limits.ts';
import { type ProvidersDeps, providersService } from './gateway.providers.ts';
import { gatewayRepo, type UsageAggregate, type UsageGroup } from './gateway.repo.ts';
import { usageReports } from './gateway.reports.ts';
import { usageDailyTable } from './gateway.rollups.ts';
import { registerGatewayRoutes } from './gateway.routes.ts';
import { AddProviderBody, type AddProviderInput } from './gateway.schemas.ts';
import { gatewayService } from './gateway.service.ts';
import { settingsService } from './gateway.settings.ts';
import { gatewayTables } from './gateway.tables.ts';
import { usageRecorder } from './gateway.usage.ts';

export type {
  ChatCompletionRequest,
  ChatCompletionResponse,
  ChatMessage,
  EmbeddingsRequest,
  EmbeddingsResponse,
  ProviderAdapter,
  ToolCall,
} from './gateway.adapter.ts';
export { CATALOG_VERSION, costMicros, type ModelPrice, SHIPPED_PRICES } from './gateway.catalog.ts';
export {
  type CreditGate,
  memoryCredits,
  type Reservation,
  type ReserveInput,
  unlimitedCredits,
} from './gateway.credits.ts';
export type { RateLimiter } from './gateway.limits.ts';
export { inputEstimateOf } from './gateway.measure.ts';
export type { UsageAggregate, UsageGroup } from './gateway.repo.ts';
/** Usage events' retention (monthly partitions, roll-up into daily aggregates): the privacy module's retention job. */
export { type MonthPartition, usageRetentionRepo } from './gateway.rollups.ts';
export type {
  AddProviderInput,
  ModelView,
  PriceView,
  ProviderView,
  RouteView,
  UsageAggregateView,
  UsageEventView,
} from './gateway.schemas.ts';
/** The gateway's calls for Berth's own callers: type a dependency as `Pick<GatewayService, 'complete' | 'embed'>`. */
export type { Caller, GatewayService } from './gateway.service.ts';
export type { UsageEventRow } from './gateway.tables.ts';

/**
 * A workspace's usage events in [since, until) summed per UTC day, model, API key or provider:
 * what billing's statements and cost breakdown read, instead of the gateway's tables. Events
 * reach the table within a moment of their call (the usage journal flushes every 250 ms).
 *
 * @example const byModel = await usageAggregates(db, workspaceId, { since, until, groupBy: 'model' });
 */
export function usageAggregates(
  db: Pick<Db, 'tenant'>,
  workspaceId: string,
  f: { since: Date; until: Date; groupBy: UsageGroup },
): Promise<UsageAggregate[]> {
  return db.tenant(workspaceId, (tx) => gatewayRepo.aggregateUsage(tx, workspaceId, f));
}

/** What the calls held against a credit lease cost, from their usage events (billing settles a lease its replica left open). */
export function leaseUsageMicros(
  db: Pick<Db, 'tenant'>,
  workspaceId: string,
  leaseId: string,
  since: Date,
): Promise<number> {
  return db.tenant(workspaceId, (tx) => gatewayRepo.leaseCost(tx, workspaceId, leaseId, since));
}

export const GATEWAY_CHANNEL = 'berth.gateway';
/** The bus message for "platform providers changed" (others name the workspace that changed). */
const PLATFORM_MESSAGE = 'platform';

export type GatewayDeps = PlatformDeps & {
  vault: Pick<VaultService, 'encrypt' | 'decrypt'>;
  audit: { record(tx: Database, input: AuditInput): Promise<unknown> };
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
  /** The workspaces' standing, and the events that change it. */
  workspaces: Pick<WorkspacesService, 'statusOf' | 'onEvent'>;
  /** The limits of a workspace's plan (billing's), applied with the operator's own. */
  planLimitsOf?(workspaceId: string): Promise<{ rateLimitRpm: number | null }>;
  /** Billing's ledger; without it every call is allowed (Berth says so at start). */
  credits?: CreditGate;
  /** Privacy's restriction check (from memory): a restricted user's keys are refused. */
  processingAllowed?: (userId: string) => boolean;
  /** Shared counters; default Redis when REDIS_URL is set, else in memory. */
  limiter?: RateLimiter;
  createAdapter?: ProvidersDeps['createAdapter'];
};

/** The operator's platform providers file, checked entry by entry; a bad file stops start-up naming the entry. */
export function readPlatformProviders(file: string): AddProviderInput[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    throw new ConfigError('BERTH_PLATFORM_PROVIDERS_FILE', `${file} is not readable JSON`);
  }
  const result = z.array(AddProviderBody).max(100).safeParse(parsed);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw new ConfigError(
      'BERTH_PLATFORM_PROVIDERS_FILE',
      `${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`,
    );
  }
  return result.data;
}

const PriceEntry = z.strictObject({
  inputMicrosPerMtok: z.number().int().min(0).max(1_000_000_000_000),
  outputMicrosPerMtok: z.number().int().min(0).max(1_000_000_000_000),
  cachedInputMicrosPerMtok: z.number().int().min(0).max(1_000_000_000_000).nullable().optional(),
  contextWindow: z.number().int().min(1).max(100_000_000).nullable().optional(),
});

/** The shipped catalog with the operator's prices file laid over it (a model in the file replaces the shipped entry). */
export function operatorCatalog(file: string | undefined): ReadonlyMap<string, ModelPrice> {
  if (!file) return SHIPPED_PRICES;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    throw new ConfigError('BERTH_MODEL_PRICES_FILE', `${file} is not readable JSON`);
  }
  const result = z.record(z.string().min(1).max(200), PriceEntry).safeParse(parsed);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw new ConfigError('BERTH_MODEL_PRICES_FILE', `${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
  }
  const merged = new Map(SHIPPED_PRICES);
  for (const [model, p] of Object.entries(result.data)) {
    merged.set(model, {
      inputMicrosPerMtok: p.inputMicrosPerMtok,
      outputMicrosPerMtok: p.outputMicrosPerMtok,
      cachedInputMicrosPerMtok: p.cachedInputMicrosPerMtok ?? null,
      contextWindow: p.contextWindow ?? null,
    });
  }
  return merged;
}

/**
 * Builds the gateway. Its /v1 routes rely on the keys module's hook (registered earlier)
 * for authentication and the `gateway:invoke` scope.
 *
 * @example const gw = createGatewayModule({ ...deps, vault, audit, requirePermission, credits: billing.credits });
 */
export function createGatewayModule(deps: GatewayDeps) {
  const { config } = deps;
  let egress: ReturnType<typeof egressGuard>;
  try {
    egress = egressGuard(config.BERTH_EGRESS_ALLOW);
  } catch (err) {
    throw new ConfigError('BERTH_EGRESS_ALLOW', (err as Error).message);
  }
  const catalog = operatorCatalog(config.BERTH_MODEL_PRICES_FILE);
  const credits = deps.credits ?? unlimitedCredits;
  const limiter =
    deps.limiter ??
    (config.REDIS_URL ? redisRateLimiter({ url: config.REDIS_URL, clock: deps.clock }) : memoryRateLimiter(deps.clock));
  const providers = providersService({
    db: deps.db,
    repo: gatewayRepo,
    clock: deps.clock,
    logger: deps.logger,
    vault: deps.vault,
    audit: deps.audit,
    egress,
    publish: (workspaceId) => deps.bus.publish(GATEWAY_CHANNEL, workspaceId),
    publishPlatform: () => deps.bus.publish(GATEWAY_CHANNEL, PLATFORM_MESSAGE),
    statusOf: (workspaceId) => deps.workspaces.statusOf(workspaceId),
    ...(deps.planLimitsOf ? { planLimitsOf: deps.planLimitsOf } : {}),
    ...(deps.createAdapter ? { createAdapter: deps.createAdapter } : {}),
  });
  deps.workspaces.onEvent(async (event, tx) => {
    // A suspended or restricted workspace is refused from the next call on, on every replica.
    if (event.type === 'workspace.status_changed') providers.changedAfterCommit(tx, event.workspaceId);
    // Usage events carry no foreign key (see migration 0014): they go with their workspace here.
    if (event.type === 'workspace.deleting') await gatewayRepo.deleteWorkspaceUsage(tx, event.workspaceId);
  });
  const settings = settingsService({
    db: deps.db,
    repo: gatewayRepo,
    clock: deps.clock,
    audit: deps.audit,
    changed: providers.changedAfterCommit,
  });
  const usage = usageRecorder({
    dir: path.join(config.dataDir, 'usage-journal'),
    insert: (rows) => deps.db.system((tx) => gatewayRepo.insertUsage(tx, rows)),
    logger: deps.logger,
    fsync: config.BERTH_USAGE_JOURNAL_FSYNC,
  });
  const gateway = gatewayService({
    providers,
    catalog,
    limiter,
    credits,
    usage,
    clock: deps.clock,
    logger: deps.logger,
    ...(deps.processingAllowed ? { processingAllowed: deps.processingAllowed } : {}),
    settings: {
      unpricedModels: config.BERTH_UNPRICED_MODELS,
      workspaceRpm: config.BERTH_GATEWAY_WORKSPACE_RPM ?? null,
      workspaceTpm: config.BERTH_GATEWAY_WORKSPACE_TPM ?? null,
      retries: config.BERTH_GATEWAY_RETRIES,
      totalTimeoutMs: config.BERTH_GATEWAY_TOTAL_TIMEOUT_MS,
      defaultMaxOutputTokens: config.BERTH_GATEWAY_DEFAULT_MAX_OUTPUT_TOKENS,
      breakerFailures: 5,
      breakerCooldownMs: 30_000,
    },
  });
  const reports = usageReports({ db: deps.db, repo: gatewayRepo, clock: deps.clock, flush: () => usage.flush() });
  const service = { ...gateway, providers, settings, reports, usage, credits, limiter };

  const module: Module<typeof service> = {
    service,
    dataMap: moduleDataMap('gateway', [...gatewayTables, usageDailyTable]),
    async registerRoutes(app: HttpServer) {
      if (config.BERTH_PLATFORM_PROVIDERS_FILE) {
        const added = await providers.seedPlatformProviders(
          readPlatformProviders(config.BERTH_PLATFORM_PROVIDERS_FILE),
        );
        if (added.length > 0) deps.logger.info({ providers: added }, 'gateway: platform providers added from the file');
      }
      const replayed = await usage.replay();
      if (replayed > 0) deps.logger.info({ events: replayed }, 'gateway: usage events replayed from the journal');
      if (credits.kind === 'unlimited') {
        deps.logger.info('gateway: no billing ledger is installed; credits are unlimited');
      }
      const unsubscribe = await deps.bus.subscribe(
        GATEWAY_CHANNEL,
        (message) => providers.forget(message === PLATFORM_MESSAGE ? null : message),
        () => providers.forget(null),
      );
      usage.start();
      app.addHook('onClose', async () => {
        await unsubscribe().catch(() => undefined);
        await gateway.idle();
        await usage.stop();
        await providers.close();
        await limiter.close();
      });
      registerGatewayRoutes(app, { service: gateway, journal: usage, bodyLimit: config.BERTH_GATEWAY_BODY_LIMIT });
      registerGatewayAdminRoutes(app, {
        providers,
        settings,
        gateway,
        reports,
        requirePermission: deps.requirePermission,
      });
    },
  };
  return module;
}

export type GatewayModule = ReturnType<typeof createGatewayModule>;
export type GatewayModuleService = GatewayModule['service'];
