import type { FastifyRequest } from 'fastify';
import { moduleDataMap } from '../../platform/db/datamap.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import { usdToMicros } from '../../platform/money.ts';
import type { AuditService } from '../audit/index.ts';
import { type CreditGate, leaseUsageMicros, usageAggregates } from '../gateway/index.ts';
import type { KeysService } from '../keys/index.ts';
import type { Mailer } from '../notifications/index.ts';
import type { Module, PlatformDeps } from '../types.ts';
import type { Permission, WorkspacesService } from '../workspaces/index.ts';
import { autoTopupRepo } from './billing.autotopup.repo.ts';
import { registerAutoTopupRoutes } from './billing.autotopup.routes.ts';
import { autoTopupTables } from './billing.autotopup.tables.ts';
import { type AutoTopupService, autoTopupService } from './billing.autotopup.ts';
import { budgetsRepo } from './billing.budgets.repo.ts';
import { registerBudgetRoutes } from './billing.budgets.routes.ts';
import { budgetTables } from './billing.budgets.tables.ts';
import { type BudgetsService, budgetsService } from './billing.budgets.ts';
import { creditLeases } from './billing.leases.ts';
import { type LedgerService, ledgerService } from './billing.ledger.ts';
import { billingNotices } from './billing.notices.ts';
import { paymentsService } from './billing.payments.ts';
import { plansFromFile } from './billing.plans.ts';
import { promotionsRepo } from './billing.promotions.repo.ts';
import { promotionTables } from './billing.promotions.tables.ts';
import { type PromotionsService, promotionsService } from './billing.promotions.ts';
import { RECEIPT_JOB, type ReceiptJob, type ReceiptsService, receiptsService } from './billing.receipts.ts';
import { billingRepo } from './billing.repo.ts';
import { ledgerRetentionRepo } from './billing.retention.repo.ts';
import { type LedgerRetention, ledgerRetention } from './billing.retention.ts';
import { registerBillingRoutes } from './billing.routes.ts';
import { type BillingService, billingService } from './billing.service.ts';
import { standingRepo } from './billing.standing.repo.ts';
import { registerStandingRoutes } from './billing.standing.routes.ts';
import { standingTables } from './billing.standing.tables.ts';
import { type CreditStandingService, creditStandingService } from './billing.standing.ts';
import { statementsRepo } from './billing.statements.repo.ts';
import { registerStatementRoutes } from './billing.statements.routes.ts';
import { statementTables } from './billing.statements.tables.ts';
import { type StatementsService, statementsService } from './billing.statements.ts';
import { billingTables } from './billing.tables.ts';
import { type PaymentProcessor, stripeProcessor } from './payments/stripe.ts';

export { type LedgerService, MAX_AMOUNT_MICROS, type TransactionView, type VerifyReport } from './billing.ledger.ts';
export { DEFAULT_PLAN, type Plan } from './billing.plans.ts';
export { LEDGER_RETENTION_TABLES, type LedgerRetention, type LedgerRetentionResult } from './billing.retention.ts';
export type { BillingService } from './billing.service.ts';
export {
  type CreditStandingService,
  GRACE_WARNING_DAYS,
  type GraceExpiredEvent,
  type GraceExpiredHandler,
  type StandingView,
} from './billing.standing.ts';

export const RESERVATION_EXPIRY_JOB = 'billing.expire-reservations';
export const PLAN_CREDITS_JOB = 'billing.plan-credits';
export const AUTO_TOPUP_JOB = 'billing.auto-topup';
export const PROMOTION_EXPIRY_JOB = 'billing.expire-promotions';
export const BUDGET_ALERTS_JOB = 'billing.budget-alerts';
export const CREDIT_STANDING_JOB = 'billing.credit-standing';
/** Closes each ended month into a numbered statement (daily; idempotent). */
export const STATEMENTS_JOB = 'billing.statements';
export { RECEIPT_JOB, type ReceiptsService } from './billing.receipts.ts';
export type { StatementsService } from './billing.statements.ts';

export type BillingDeps = PlatformDeps & {
  audit: Pick<AuditService, 'record'>;
  workspaces: Pick<WorkspacesService, 'onEvent' | 'contacts' | 'setSeatLimit' | 'statusOf' | 'getWorkspace'>;
  mailer: Mailer;
  keys: Pick<KeysService, 'getKey'>;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
  /** Overrides the processor the configuration describes (tests). */
  processor?: PaymentProcessor;
};

/** Stripe when its secret key is configured; otherwise no card payments. */
function processorFromConfig(config: PlatformDeps['config']): PaymentProcessor | null {
  if (!config.BERTH_STRIPE_SECRET_KEY) return null;
  return stripeProcessor({
    secretKey: config.BERTH_STRIPE_SECRET_KEY,
    webhookSecrets: (config.BERTH_STRIPE_WEBHOOK_SECRETS ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
    apiUrl: config.BERTH_STRIPE_API_URL,
  });
}

/**
 * Billing: plans and the credit ledger. Its `gate` is what the gateway reserves and settles
 * through (when BERTH_CREDITS=ledger, the default).
 *
 * The hooks for agents and deployments: `canStartWork(workspaceId)` before starting a run
 * (throws AppError `insufficient_credits` when the workspace is out of credits, read from
 * the live balance so a top-up lifts it at once), and `onGraceExpired(handler)`, called in a
 * transaction once the suspension grace period of an out-of-credits workspace ends: the
 * handler deletes its deployments' runtime data (agent configurations are kept).
 *
 * @example const billing = createBillingModule({ ...deps, audit, workspaces, requirePermission });
 * @example await billing.canStartWork(scope.workspaceId);
 * @example billing.onGraceExpired(async (event, tx) => deployments.deleteRuntimeData(tx, event.workspaceId));
 */
export function createBillingModule(deps: BillingDeps): Module<BillingService> & {
  ledger: LedgerService;
  gate: CreditGate;
  autoTopups: AutoTopupService;
  promotions: PromotionsService;
  budgets: BudgetsService;
  standing: CreditStandingService;
  statements: StatementsService;
  receipts: ReceiptsService;
  /** The ledger's retention, run by the privacy module's retention job: expired transactions carried forward. */
  ledgerRetention: LedgerRetention;
  canStartWork: CreditStandingService['canStartWork'];
  onGraceExpired: CreditStandingService['onGraceExpired'];
} {
  const ledger = ledgerService({
    db: deps.db,
    repo: billingRepo,
    clock: deps.clock,
    settings: { reservationTtlMs: deps.config.BERTH_RESERVATION_TTL_SECONDS * 1000 },
    leaseUsage: (workspaceId, leaseId, since) => leaseUsageMicros(deps.db, workspaceId, leaseId, since),
  });
  const leaseMicros = usdToMicros(deps.config.BERTH_CREDIT_LEASE_USD) ?? 0;
  const leases =
    leaseMicros > 0
      ? creditLeases({
          ledger,
          clock: deps.clock,
          logger: deps.logger,
          settings: { leaseMicros, maxAgeMs: deps.config.BERTH_CREDIT_LEASE_SECONDS * 1000 },
        })
      : null;
  const freeCreditsMicros = usdToMicros(deps.config.BERTH_FREE_CREDITS_USD) ?? 0;
  const service = billingService({
    db: deps.db,
    repo: billingRepo,
    ledger,
    audit: deps.audit,
    clock: deps.clock,
    plans: plansFromFile(deps.config.BERTH_PLANS_FILE, freeCreditsMicros),
  });
  deps.workspaces.onEvent(service.onWorkspaceEvent);
  deps.workspaces.setSeatLimit(async (workspaceId) => (await service.limitsOf(workspaceId)).seats);
  const notices = billingNotices({ mailer: deps.mailer, workspaces: deps.workspaces, logger: deps.logger });
  // A document names its workspace as it is called now; a deleted one by its id.
  const workspaceName = (workspaceId: string) =>
    deps.workspaces
      .getWorkspace({ scope: { workspaceId, actor: { type: 'system', name: 'billing' }, role: 'viewer' } })
      .then(
        (w) => w.name,
        () => null,
      );
  const issuer = deps.config.BERTH_INVOICE_ISSUER ?? null;
  const receipts = receiptsService({
    db: deps.db,
    repo: statementsRepo,
    notices,
    jobs: deps.jobs,
    logger: deps.logger,
    workspaceName,
    issuer,
    publicUrl: deps.config.publicUrl,
  });
  const statements = statementsService({
    db: deps.db,
    repo: statementsRepo,
    clock: deps.clock,
    logger: deps.logger,
    usage: (workspaceId, f) => usageAggregates(deps.db, workspaceId, f),
    workspaceExists: async (workspaceId) => (await deps.workspaces.statusOf(workspaceId)) !== null,
    workspaceName,
    numberPrefix: deps.config.BERTH_INVOICE_PREFIX,
    issuer,
  });
  const budgets = budgetsService({
    db: deps.db,
    repo: budgetsRepo,
    audit: deps.audit,
    keys: deps.keys,
    notices,
    clock: deps.clock,
    onChanged: (workspaceId) => leases?.forget(workspaceId),
  });
  const processor = deps.processor ?? processorFromConfig(deps.config);
  const autoTopups = autoTopupService({
    db: deps.db,
    repo: autoTopupRepo,
    billingRepo,
    ledger,
    audit: deps.audit,
    notices,
    clock: deps.clock,
    logger: deps.logger,
    processor,
    onPaid: (tx, paid) => receipts.paid(tx, paid),
  });
  const promotions = promotionsService({
    db: deps.db,
    repo: promotionsRepo,
    ledger,
    balances: billingRepo,
    audit: deps.audit,
    clock: deps.clock,
    logger: deps.logger,
    billing: service,
  });
  const payments = paymentsService({
    db: deps.db,
    repo: billingRepo,
    ledger,
    audit: deps.audit,
    clock: deps.clock,
    processor,
    publicUrl: deps.config.publicUrl,
    autoTopups,
    onPaid: receipts.paid,
  });
  const standing = creditStandingService({
    db: deps.db,
    repo: standingRepo,
    balances: billingRepo,
    audit: deps.audit,
    workspaces: deps.workspaces,
    notices,
    clock: deps.clock,
    logger: deps.logger,
    settings: {
      enabled: deps.config.BERTH_CREDITS === 'ledger',
      exhaustedBelowMicros: usdToMicros(deps.config.BERTH_EXHAUSTED_BALANCE_USD) ?? 1,
      lowBelowMicros: usdToMicros(deps.config.BERTH_LOW_BALANCE_USD) ?? 0,
      graceDays: deps.config.BERTH_SUSPENSION_GRACE_DAYS,
      billingUrl: `${deps.config.publicUrl}/billing`,
    },
  });
  deps.workspaces.onEvent(standing.onWorkspaceEvent);
  deps.workspaces.onEvent(autoTopups.onWorkspaceEvent);
  return {
    service,
    ledger,
    gate: leases ?? ledger.gate,
    autoTopups,
    promotions,
    budgets,
    standing,
    statements,
    receipts,
    ledgerRetention: ledgerRetention({ db: deps.db, repo: ledgerRetentionRepo, ledger: billingRepo }),
    canStartWork: standing.canStartWork,
    onGraceExpired: standing.onGraceExpired,
    dataMap: moduleDataMap('billing', [
      ...billingTables,
      ...budgetTables,
      ...standingTables,
      ...statementTables,
      ...autoTopupTables,
      ...promotionTables,
    ]),
    registerRoutes(app: HttpServer) {
      registerBillingRoutes(app, { service, payments, promotions, requirePermission: deps.requirePermission });
      registerAutoTopupRoutes(app, { autoTopups, requirePermission: deps.requirePermission });
      registerBudgetRoutes(app, { budgets, requirePermission: deps.requirePermission });
      registerStandingRoutes(app, { standing, requirePermission: deps.requirePermission });
      registerStatementRoutes(app, { statements, receipts, requirePermission: deps.requirePermission });
    },
    async registerJobs(jobs: Jobs) {
      await jobs.register(BUDGET_ALERTS_JOB, async () => {
        await budgets.sendAlerts();
      });
      await jobs.schedule(BUDGET_ALERTS_JOB, '* * * * *');
      await jobs.register(RESERVATION_EXPIRY_JOB, async () => {
        await ledger.expireReservations();
      });
      await jobs.schedule(RESERVATION_EXPIRY_JOB, '* * * * *');
      await jobs.register(PLAN_CREDITS_JOB, async () => {
        await service.grantMonthlyCredits();
      });
      await jobs.schedule(PLAN_CREDITS_JOB, '7 * * * *');
      await jobs.register(AUTO_TOPUP_JOB, async () => {
        await autoTopups.run();
      });
      await jobs.schedule(AUTO_TOPUP_JOB, '* * * * *');
      await jobs.register(PROMOTION_EXPIRY_JOB, async () => {
        await promotions.expireDue();
      });
      await jobs.schedule(PROMOTION_EXPIRY_JOB, '13 * * * *');
      await jobs.register(CREDIT_STANDING_JOB, async () => {
        await standing.check();
      });
      await jobs.schedule(CREDIT_STANDING_JOB, '* * * * *');
      await jobs.register(STATEMENTS_JOB, async () => {
        await statements.closeDue();
      });
      await jobs.schedule(STATEMENTS_JOB, '17 1 * * *');
      await jobs.register<ReceiptJob>(RECEIPT_JOB, async (job) => {
        await receipts.sendReceipt(job);
      });
    },
  };
}
