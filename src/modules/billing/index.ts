import type { FastifyRequest } from 'fastify';
import { moduleDataMap } from '../../platform/db/datamap.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import { usdToMicros } from '../../platform/money.ts';
import type { AuditService } from '../audit/index.ts';
import type { CreditGate } from '../gateway/index.ts';
import type { Mailer } from '../notifications/index.ts';
import type { Module, PlatformDeps } from '../types.ts';
import type { Permission, WorkspacesService } from '../workspaces/index.ts';
import { type LedgerService, ledgerService } from './billing.ledger.ts';
import { billingNotices } from './billing.notices.ts';
import { paymentsService } from './billing.payments.ts';
import { defaultPlans } from './billing.plans.ts';
import { billingRepo } from './billing.repo.ts';
import { registerBillingRoutes } from './billing.routes.ts';
import { type BillingService, billingService } from './billing.service.ts';
import { billingTables } from './billing.tables.ts';
import { type PaymentProcessor, stripeProcessor } from './payments/stripe.ts';

export { type LedgerService, MAX_AMOUNT_MICROS, type TransactionView, type VerifyReport } from './billing.ledger.ts';
export { DEFAULT_PLAN, type Plan } from './billing.plans.ts';
export type { BillingService } from './billing.service.ts';

export const RESERVATION_EXPIRY_JOB = 'billing.expire-reservations';
export const PLAN_CREDITS_JOB = 'billing.plan-credits';

export type BillingDeps = PlatformDeps & {
  audit: Pick<AuditService, 'record'>;
  workspaces: Pick<WorkspacesService, 'onEvent' | 'contacts'>;
  mailer: Mailer;
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
 * @example const billing = createBillingModule({ ...deps, audit, workspaces, requirePermission });
 */
export function createBillingModule(
  deps: BillingDeps,
): Module<BillingService> & { ledger: LedgerService; gate: CreditGate } {
  const ledger = ledgerService({
    db: deps.db,
    repo: billingRepo,
    clock: deps.clock,
    settings: { reservationTtlMs: deps.config.BERTH_RESERVATION_TTL_SECONDS * 1000 },
  });
  const freeCreditsMicros = usdToMicros(deps.config.BERTH_FREE_CREDITS_USD) ?? 0;
  const service = billingService({
    db: deps.db,
    repo: billingRepo,
    ledger,
    audit: deps.audit,
    clock: deps.clock,
    plans: defaultPlans(freeCreditsMicros),
  });
  deps.workspaces.onEvent(service.onWorkspaceEvent);
  const notices = billingNotices({ mailer: deps.mailer, workspaces: deps.workspaces, logger: deps.logger });
  const payments = paymentsService({
    db: deps.db,
    repo: billingRepo,
    ledger,
    audit: deps.audit,
    clock: deps.clock,
    processor: deps.processor ?? processorFromConfig(deps.config),
    publicUrl: deps.config.publicUrl,
  });
  return {
    service,
    ledger,
    gate: ledger.gate,
    dataMap: moduleDataMap('billing', billingTables),
    registerRoutes(app: HttpServer) {
      registerBillingRoutes(app, { service, payments, requirePermission: deps.requirePermission });
    },
    async registerJobs(jobs: Jobs) {
      await jobs.register(RESERVATION_EXPIRY_JOB, async () => {
        await ledger.expireReservations();
      });
      await jobs.schedule(RESERVATION_EXPIRY_JOB, '* * * * *');
      await jobs.register(PLAN_CREDITS_JOB, async () => {
        await service.grantMonthlyCredits();
      });
      await jobs.schedule(PLAN_CREDITS_JOB, '7 * * * *');
    },
  };
}
