import type { FastifyRequest } from 'fastify';
import { moduleDataMap, type TableEntry } from '../../platform/db/datamap.ts';
import type { Database } from '../../platform/db/db.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import type { AuditService } from '../audit/index.ts';
import { usageRetentionRepo } from '../gateway/index.ts';
import type { IdentityService } from '../identity/index.ts';
import type { KeysService } from '../keys/index.ts';
import type { Mailer } from '../notifications/index.ts';
import type { Module, PlatformDeps } from '../types.ts';
import type { VaultService } from '../vault/index.ts';
import type { Permission, WorkspacesService } from '../workspaces/index.ts';
import { breachesRepo } from './privacy.breaches.repo.ts';
import { registerBreachRoutes } from './privacy.breaches.routes.ts';
import { breachTables } from './privacy.breaches.tables.ts';
import { breachesService } from './privacy.breaches.ts';
import { consentsRepo } from './privacy.consents.repo.ts';
import { registerConsentRoutes } from './privacy.consents.routes.ts';
import { consentTables } from './privacy.consents.tables.ts';
import { consentsService } from './privacy.consents.ts';
import { erasureRepo } from './privacy.erasure.repo.ts';
import { registerErasureRoutes } from './privacy.erasure.routes.ts';
import { ERASURE_JOB, erasureService } from './privacy.erasure.service.ts';
import { erasureTables } from './privacy.erasure.tables.ts';
import { exportRepo } from './privacy.export.repo.ts';
import { registerExportRoutes } from './privacy.export.routes.ts';
import {
  EXPORT_BUILD_JOB,
  EXPORT_EXPIRY_JOB,
  type ExportBuildJob,
  type ExportRequestTracker,
  exportService,
} from './privacy.export.service.ts';
import { exportTables } from './privacy.export.tables.ts';
import { noticeRepo } from './privacy.notice.repo.ts';
import { registerNoticeRoutes } from './privacy.notice.routes.ts';
import { noticeTables } from './privacy.notice.tables.ts';
import { noticeService } from './privacy.notice.ts';
import { registerRecordsRoutes } from './privacy.records.routes.ts';
import { recordsService } from './privacy.records.ts';
import { requestsRepo } from './privacy.requests.repo.ts';
import { registerRequestRoutes } from './privacy.requests.routes.ts';
import { requestTables } from './privacy.requests.tables.ts';
import { requestsService } from './privacy.requests.ts';
import { restrictionsRepo } from './privacy.restrictions.repo.ts';
import { registerRestrictionRoutes } from './privacy.restrictions.routes.ts';
import { restrictionTables } from './privacy.restrictions.tables.ts';
import { restrictionsService } from './privacy.restrictions.ts';
import { retentionRepo } from './privacy.retention.repo.ts';
import { registerRetentionRoutes } from './privacy.retention.routes.ts';
import { retentionTables } from './privacy.retention.tables.ts';
import { type LedgerRetention, RETENTION_JOB, retentionService } from './privacy.retention.ts';
import { subprocessorsRepo } from './privacy.subprocessors.repo.ts';
import { registerSubprocessorRoutes } from './privacy.subprocessors.routes.ts';
import { subprocessorTables } from './privacy.subprocessors.tables.ts';
import {
  SUBPROCESSOR_NOTICES_JOB,
  SUBPROCESSOR_NOTICES_SWEEP_JOB,
  type SubprocessorNoticesJob,
  subprocessorsService,
} from './privacy.subprocessors.ts';

export type { BreachView } from './privacy.breaches.schemas.ts';
export type { BreachesService } from './privacy.breaches.ts';
export {
  CONSENT_PURPOSES,
  type ConsentPurpose,
  OBJECTION_PURPOSES,
  type ObjectionPurpose,
} from './privacy.consents.tables.ts';
export {
  type ConsentsService,
  OBJECTIONS_CHANNEL,
  type ObjectionChangeEvent,
  type ObjectionListener,
} from './privacy.consents.ts';
export { unruledColumns } from './privacy.erasure.plan.ts';
export {
  DELETION_GRACE_DAYS,
  type DeletionView,
  ERASURE_JOB,
  type ErasureReport,
  type ErasureService,
} from './privacy.erasure.service.ts';
export { WITHHELD } from './privacy.export.archive.ts';
export {
  ARCHIVE_FORMAT,
  EXPORT_BUILD_JOB,
  EXPORT_EXPIRY_JOB,
  type ExportService,
  type ExportView,
} from './privacy.export.service.ts';
export type { PolicyDocument, PolicyView } from './privacy.notice.schemas.ts';
export type { NoticeService } from './privacy.notice.ts';
export type { ProcessingActivity, RecordOfProcessing } from './privacy.records.schemas.ts';
export type { RecordsService } from './privacy.records.ts';
export type { RequestStatus, RequestType } from './privacy.requests.tables.ts';
export { dueDateOf, type OpenInput, type RequestsService, type RequestView } from './privacy.requests.ts';
export { RESTRICTIONS_CHANNEL, type RestrictionsService, type RestrictionView } from './privacy.restrictions.ts';
export {
  DEFAULT_AUDIT_MONTHS,
  RETENTION_JOB,
  RETENTION_POLICIES,
  type RetentionService,
  USAGE_ROLLUP_DAYS,
} from './privacy.retention.ts';
export type { ObjectionView, SubprocessorView } from './privacy.subprocessors.schemas.ts';
export {
  SUBPROCESSOR_NOTICE_CLAIM_STALE_MS,
  SUBPROCESSOR_NOTICE_DAYS,
  SUBPROCESSOR_NOTICES_JOB,
  SUBPROCESSOR_NOTICES_SWEEP_JOB,
  type SubprocessorsService,
} from './privacy.subprocessors.ts';

/** Tells the operators of privacy requests past their one-month deadline (hourly; once per request). */
export const PRIVACY_OVERDUE_JOB = 'privacy.overdue-requests';

export type PrivacyDeps = PlatformDeps & {
  audit: Pick<AuditService, 'record' | 'retention' | 'sealLegacyEvents'>;
  identity: IdentityService;
  workspaces: WorkspacesService;
  keys: KeysService;
  vault: VaultService;
  mailer: Mailer;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
  /** The whole data map (every module's tables), read when needed: exports and the notice are built from it. */
  dataMap(): readonly TableEntry[];
  /** Retention: how many months a workspace's plan keeps its audit log (null: the default, 13). */
  auditMonthsOf(workspaceId: string): Promise<number | null>;
  /** Retention: the billing ledger's (expired transactions carried forward). */
  ledgerRetention: LedgerRetention;
  /**
   * Run inside each account erasure's transaction before the map's rows go (and the user's
   * data key is destroyed): what must act on the user's data first (the vault revokes their
   * OAuth tokens at the providers).
   */
  beforeErase?: ReadonlyArray<(tx: Database, userId: string) => Promise<void>>;
};

/**
 * Privacy: the rights of the people whose data Berth holds, carried out from the data map
 * (`src/platform/db/datamap.ts`): requests and their deadlines, restriction, objection and
 * consents, retention, export, erasure, sub-processors and the documents generated from
 * the map (the privacy notice, the record of processing, the breach register).
 *
 * Each part lives in its own `privacy.<part>.ts` files and is wired here.
 */
export function createPrivacyModule(deps: PrivacyDeps) {
  // Requests, restriction, objection and consent (privacy.requests.*, privacy.restrictions.*, privacy.consents.*).
  const requests = requestsService({
    db: deps.db,
    repo: requestsRepo,
    audit: deps.audit,
    identity: deps.identity,
    mailer: deps.mailer,
    clock: deps.clock,
    logger: deps.logger,
    publicUrl: deps.config.publicUrl,
  });
  const restrictions = restrictionsService({
    db: deps.db,
    repo: restrictionsRepo,
    requests,
    audit: deps.audit,
    bus: deps.bus,
    clock: deps.clock,
    logger: deps.logger,
  });
  const consents = consentsService({
    db: deps.db,
    repo: consentsRepo,
    requests,
    clock: deps.clock,
    bus: deps.bus,
    logger: deps.logger,
  });

  // Export of personal data (privacy.export.*), tracked as `portability` requests.
  const exportRequests: ExportRequestTracker = {
    open: (tx, input) => requests.open(tx, { type: 'portability', ...input, status: 'in_progress' }),
    complete: async (tx, id, outcome) => {
      if ((await requests.find(tx, id))?.status === 'in_progress') await requests.complete(tx, id, outcome);
    },
    reject: async (tx, id, outcome) => {
      if ((await requests.find(tx, id))?.status === 'in_progress') await requests.reject(tx, id, outcome);
    },
  };
  const exports = exportService({
    db: deps.db,
    repo: exportRepo,
    clock: deps.clock,
    logger: deps.logger,
    jobs: deps.jobs,
    vault: deps.vault,
    mailer: deps.mailer,
    identity: deps.identity,
    audit: deps.audit,
    dataMap: () => deps.dataMap(),
    requests: exportRequests,
    publicUrl: deps.config.publicUrl,
  });

  // Sub-processors, the privacy policy and its versions, the record of processing, the breach register.
  const controller = {
    name: deps.config.BERTH_PRIVACY_CONTROLLER ?? null,
    contact: deps.config.BERTH_PRIVACY_CONTACT ?? null,
    dpo: deps.config.BERTH_PRIVACY_DPO ?? null,
  };
  const categories = () => new Set(deps.dataMap().flatMap((t) => Object.values(t.columns).map((c) => c.category)));
  const subprocessors = subprocessorsService({
    db: deps.db,
    repo: subprocessorsRepo,
    audit: deps.audit,
    clock: deps.clock,
    jobs: deps.jobs,
    logger: deps.logger,
    mailer: deps.mailer,
    workspaces: deps.workspaces,
    categories,
    publicUrl: deps.config.publicUrl,
  });
  const notice = noticeService({
    db: deps.db,
    repo: noticeRepo,
    clock: deps.clock,
    logger: deps.logger,
    controller,
    dataMap: () => deps.dataMap(),
    subprocessors: subprocessors.forPolicy,
  });
  const records = recordsService({
    clock: deps.clock,
    controller,
    dataMap: () => deps.dataMap(),
    subprocessors: subprocessors.forPolicy,
  });
  // Retention (privacy.retention.*): every time-based class of the data map, on a schedule.
  const retention = retentionService({
    db: deps.db,
    repo: retentionRepo,
    clock: deps.clock,
    logger: deps.logger,
    dataMap: () => deps.dataMap(),
    usage: usageRetentionRepo,
    audit: deps.audit,
    auditMonthsOf: deps.auditMonthsOf,
    ledger: deps.ledgerRetention,
  });
  const breaches = breachesService({
    db: deps.db,
    repo: breachesRepo,
    audit: deps.audit,
    clock: deps.clock,
    categories,
  });

  // Account deletion and erasure (privacy.erasure.*), tracked as `erasure` requests; a
  // workspace's deletion removes the rows the map says name it.
  const erasure = erasureService({
    db: deps.db,
    repo: erasureRepo,
    clock: deps.clock,
    logger: deps.logger,
    mailer: deps.mailer,
    publicUrl: deps.config.publicUrl,
    identity: deps.identity,
    workspaces: deps.workspaces,
    keys: deps.keys,
    vault: deps.vault,
    audit: deps.audit,
    requests,
    dataMap: () => deps.dataMap(),
    beforeErase: deps.beforeErase ?? [],
  });
  deps.workspaces.onEvent(erasure.eraseWorkspaceRows);

  const service = {
    /** Privacy requests and their deadlines: `open`, `complete`, `reject`, `cancel` in the caller's transaction. */
    requests,
    /** Restriction of processing; `processingAllowed(userId)` is the gateway's check (from memory). */
    restrictions,
    /** Consents (`hasConsent`) and objections (`objects`), with their history. */
    consents,
    /** For agent runs: throws 403 `processing_restricted` while the user's processing is restricted. */
    assertProcessingAllowed: restrictions.assertProcessingAllowed,
    /** Exports of personal data: a user's own, or a workspace's for its owner (built by EXPORT_BUILD_JOB). */
    exports,
    /** The sub-processor registry: registration with 30 days' notice, owners' notices and objections. */
    subprocessors,
    /** The privacy policy generated from the data map, and its versions. */
    notice,
    /** The record of processing activities (Art. 30). */
    records,
    /** The breach register (Art. 33). */
    breaches,
    /** Retention runs from the data map (RETENTION_JOB daily; operators may run or preview one). */
    retention,
    /** Account deletion (closed at once, erased after the grace period) and erasure by the data map. */
    erasure,
  };

  const module: Module<typeof service> = {
    service,
    dataMap: moduleDataMap('privacy', [
      ...requestTables,
      ...restrictionTables,
      ...consentTables,
      ...exportTables,
      ...subprocessorTables,
      ...noticeTables,
      ...breachTables,
      ...retentionTables,
      ...erasureTables,
    ]),
    async registerRoutes(app: HttpServer) {
      const stopRestrictions = await restrictions.start();
      const stopObjections = await consents.start();
      app.addHook('onClose', async () => {
        await stopRestrictions().catch(() => undefined);
        await stopObjections().catch(() => undefined);
      });
      registerRequestRoutes(app, { requests });
      registerRestrictionRoutes(app, { restrictions });
      registerConsentRoutes(app, { consents });
      registerExportRoutes(app, { exports, requirePermission: deps.requirePermission });
      registerSubprocessorRoutes(app, { subprocessors, requirePermission: deps.requirePermission });
      registerNoticeRoutes(app, { notice, logger: deps.logger });
      registerRecordsRoutes(app, { records });
      registerBreachRoutes(app, { breaches });
      registerRetentionRoutes(app, { retention });
      registerErasureRoutes(app, { erasure });
    },
    async registerJobs(jobs: Jobs) {
      await jobs.register(PRIVACY_OVERDUE_JOB, async () => {
        await requests.alertOverdue();
      });
      await jobs.schedule(PRIVACY_OVERDUE_JOB, '41 * * * *');
      await jobs.register<ExportBuildJob>(EXPORT_BUILD_JOB, async ({ exportId }) => {
        await exports.build(exportId);
      });
      await jobs.register(EXPORT_EXPIRY_JOB, async () => {
        await exports.expire();
      });
      await jobs.schedule(EXPORT_EXPIRY_JOB, '29 * * * *');
      await jobs.register<SubprocessorNoticesJob>(SUBPROCESSOR_NOTICES_JOB, async ({ subprocessorId }) => {
        const { failed } = await subprocessors.sendNotices(subprocessorId);
        // Fails so it is retried: only the notices not sent go out again.
        if (failed > 0) throw new Error(`${failed} sub-processor notice(s) not sent`);
      });
      await jobs.register(SUBPROCESSOR_NOTICES_SWEEP_JOB, async () => {
        await subprocessors.sweepNotices();
      });
      await jobs.schedule(SUBPROCESSOR_NOTICES_SWEEP_JOB, '*/10 * * * *');
      // One run at a time; a long run is not cut off at pg-boss's default 15 minutes.
      await jobs.register(
        RETENTION_JOB,
        async () => {
          await retention.run({ dryRun: false, trigger: 'schedule' });
        },
        { retryLimit: 2, expireInSeconds: 4 * 3600 },
      );
      await jobs.schedule(RETENTION_JOB, '37 3 * * *');
      await jobs.register(ERASURE_JOB, async () => {
        await erasure.runDue();
      });
      await jobs.schedule(ERASURE_JOB, '53 * * * *');
    },
  };
  return module;
}

export type PrivacyModule = ReturnType<typeof createPrivacyModule>;
export type PrivacyService = PrivacyModule['service'];
