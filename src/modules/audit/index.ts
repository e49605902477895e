// The audit module: every state-changing action writes one event, in the same transaction
// as the change, into a per-workspace (or the platform) hash chain that is append-only,
// tamper-evident and periodically sealed by signed checkpoints.
import { moduleDataMap } from '../../platform/db/datamap.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import type { Module, PlatformDeps } from '../types.ts';
import { type Keyring, pseudonymizer } from '../vault/index.ts';
import type { WorkspacesService } from '../workspaces/index.ts';
import { auditRepo } from './audit.repo.ts';
import { type AuditRetention, auditRetention } from './audit.retention.ts';
import { registerAuditRoutes } from './audit.routes.ts';
import { type AuditCore, auditService } from './audit.service.ts';
import { type AuditSigningKey, parseAuditSigningKey, parseRetiredPublicKeys } from './audit.signing.ts';
import { auditSubjectTables, auditTables } from './audit.tables.ts';
import { workspaceEventRecorder } from './audit.workspaces.ts';

export {
  type BreakReason,
  type ChainedEvent,
  canonicalEvent,
  canonicalJson,
  GENESIS_HASH,
  hashEvent,
} from './audit.chain.ts';
export type { AuditFilter } from './audit.repo.ts';
export type { ResealReport } from './audit.reseal.ts';
export type { AuditPartition, AuditRetention, PartitionChain } from './audit.retention.ts';
export type { AuditEventView, CheckpointView, VerifyReport } from './audit.schemas.ts';
export { type AuditInput, MIN_AUDIT_RETENTION_DAYS, PLATFORM_CHAIN } from './audit.service.ts';
export {
  type AuditSigningKey,
  type AuditVerifyKey,
  auditKeyId,
  checkpointMessage,
  DATA_DIR_AUDIT_KEY_FILE,
  generateAuditSigningKey,
  type LoadedAuditSigningKey,
  loadAuditSigningKey,
  parseAuditSigningKey,
  parseRetiredPublicKeys,
  signCheckpoint,
  verifyCheckpoint,
} from './audit.signing.ts';

/**
 * What other modules use. `record` takes the caller's transaction, so the event is written
 * atomically with the change it describes:
 *
 * @example
 * await db.tenant(scope.workspaceId, async (tx) => {
 *   await repo.insertKey(tx, row);
 *   await audit.record(tx, { workspaceId: scope.workspaceId, actor: scope.actor, action: 'key.created',
 *     target: { type: 'key', id: row.id }, diff: { name: row.name, scopes: row.scopes } });
 * });
 * // operator actions: workspaceId null = the platform chain
 * await audit.record(tx, { workspaceId: null, actor, action: 'operator.added', target: { type: 'user', id } });
 */
export type AuditService = AuditCore & {
  /** The workspaces module's event handler: `workspaces.onEvent(audit.recordWorkspaceEvent)`. */
  recordWorkspaceEvent: ReturnType<typeof workspaceEventRecorder>;
  /**
   * Every state-changing route registered after the audit module's, with its declared
   * exemption (`config: { audit: { exempt } }`) or null: the coverage test's route table.
   */
  routePolicies(): RoutePolicy[];
  /** Retention of the partitioned audit log (the privacy module's retention job). */
  retention: AuditRetention;
};

export type RoutePolicy = { method: string; url: string; exempt: string | null };

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export const AUDIT_CHECKPOINT_JOB = 'audit.checkpoint';
/** Re-seals events written before pseudonyms (audit.reseal.ts): queued at every start, and daily. */
export const AUDIT_RESEAL_JOB = 'audit.reseal-legacy';

export type AuditModuleDeps = PlatformDeps & {
  /** The checkpoint signing key (see loadAuditSigningKey); null or absent = checkpoints refused. */
  auditSigningKey?: AuditSigningKey | null;
  /** Resolved when routes are registered (the workspaces module is built after this one). */
  workspaces: () => Pick<WorkspacesService, 'requirePermission'>;
  /** With a keyring, events name users by pseudonym (audit.subjects.ts); the app always passes one. */
  keyring?: Keyring;
};

export function createAuditModule(deps: AuditModuleDeps): Module<AuditService> {
  const core = auditService({
    db: deps.db,
    repo: auditRepo,
    clock: deps.clock,
    logger: deps.logger,
    // Loaded by main.ts (file or generated); otherwise straight from config (tests, tools).
    signingKey:
      deps.auditSigningKey === undefined && deps.config.BERTH_AUDIT_SIGNING_KEY
        ? parseAuditSigningKey(deps.config.BERTH_AUDIT_SIGNING_KEY)
        : (deps.auditSigningKey ?? null),
    retiredKeys: parseRetiredPublicKeys(deps.config.BERTH_AUDIT_RETIRED_PUBLIC_KEYS),
    ...(deps.keyring ? { pseudonym: pseudonymizer(deps.keyring) } : {}),
  });
  const policies: RoutePolicy[] = [];
  const service: AuditService = {
    ...core,
    retention: auditRetention({ db: deps.db, record: core.record, dropBefore: core.dropBefore }),
    recordWorkspaceEvent: workspaceEventRecorder(core),
    routePolicies: () => [...policies],
  };
  return {
    service,
    dataMap: moduleDataMap('audit', [...auditTables, ...auditSubjectTables]),
    /** Register first: the onRoute hook sees only routes added after it. */
    registerRoutes(app: HttpServer) {
      app.addHook('onRoute', (route) => {
        for (const method of [route.method].flat()) {
          if (!STATE_CHANGING.has(method)) continue;
          const exempt = (route.config as { audit?: { exempt?: unknown } } | undefined)?.audit?.exempt;
          policies.push({ method, url: route.url, exempt: typeof exempt === 'string' ? exempt : null });
        }
      });
      registerAuditRoutes(app, { service, requirePermission: deps.workspaces().requirePermission });
    },
    async registerJobs(jobs: Jobs) {
      await jobs.register(AUDIT_CHECKPOINT_JOB, async () => {
        await service.checkpointAll();
      });
      await jobs.schedule(AUDIT_CHECKPOINT_JOB, '*/15 * * * *');
      await jobs.register(AUDIT_RESEAL_JOB, async () => {
        await service.sealLegacyEvents();
      });
      await jobs.schedule(AUDIT_RESEAL_JOB, '41 3 * * *');
      await jobs.send(AUDIT_RESEAL_JOB, {}, { singletonKey: AUDIT_RESEAL_JOB });
    },
  };
}
