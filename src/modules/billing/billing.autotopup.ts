import type { Clock } from '../../platform/clock.ts';
import { HOUR, MINUTE } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Actor, Scope } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import type { AuditService } from '../audit/index.ts';
import type { WorkspaceEvent } from '../workspaces/index.ts';
import { autoTopupOutcomes } from './billing.autotopup.outcomes.ts';
import type { AutoTopupChoice, AutoTopupRepo, SavedCard } from './billing.autotopup.repo.ts';
import type { AutoTopupRow, AutoTopupSettingsRow } from './billing.autotopup.tables.ts';
import { periodStart } from './billing.calendar.ts';
import type { LedgerService } from './billing.ledger.ts';
import type { BillingNotices } from './billing.notices.ts';
import { MAX_TOPUP_MICROS, MIN_TOPUP_MICROS } from './billing.payments.ts';
import type { BillingRepo } from './billing.repo.ts';
import { type ChargeOutcome, type PaymentProcessor, requireProcessor } from './payments/stripe.ts';

/** A charge still in flight this long is asked about (or its request retried with the same key). */
export const STALE_CHARGE_MS = 10 * MINUTE;
/** A charge whose request never reached the processor is given up after this (its key is kept 24 h there). */
export const GIVE_UP_UNSENT_MS = 12 * HOUR;

type Deps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: AutoTopupRepo;
  billingRepo: Pick<BillingRepo, 'lockPayment' | 'notePaymentEvent' | 'getBalance' | 'insertPayment'>;
  ledger: Pick<LedgerService, 'topUpIn'>;
  audit: Pick<AuditService, 'record'>;
  notices: Pick<BillingNotices, 'send'>;
  clock: Clock;
  logger: Logger;
  /** Null when no processor is configured. */
  processor: PaymentProcessor | null;
  /** Told inside the transaction that credits a charge (its receipt is queued once that commits). */
  onPaid?: (tx: Database, paid: { workspaceId: string; paymentId: string }) => void;
};

export type AutoTopupSettingsInput = {
  enabled: boolean;
  thresholdMicros: number;
  amountMicros: number;
  monthlyMaxCount?: number | null | undefined;
  monthlyMaxMicros?: number | null | undefined;
};

export type AutoTopupView = {
  workspaceId: string;
  enabled: boolean;
  thresholdMicros: number | null;
  amountMicros: number | null;
  monthlyMaxCount: number | null;
  monthlyMaxMicros: number | null;
  paymentMethod: { brand: string; last4: string } | null;
  consecutiveFailures: number;
  disabledReason: string | null;
  thisMonth: { count: number; amountMicros: number };
  inFlight: boolean;
};

function positive(n: number | null | undefined, what: string): number | null {
  if (n === null || n === undefined) return null;
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new AppError('invalid_amount', `The ${what} must be a whole, positive number.`);
  return n;
}

/** Checks a member's settings: whole positive micros, whole cents for the charge, at least one monthly cap. */
function checkChoice(input: AutoTopupSettingsInput): AutoTopupChoice {
  const thresholdMicros = positive(input.thresholdMicros, 'threshold');
  const amountMicros = positive(input.amountMicros, 'amount');
  const monthlyMaxCount = positive(input.monthlyMaxCount, 'monthly cap on the count');
  const monthlyMaxMicros = positive(input.monthlyMaxMicros, 'monthly cap on the amount');
  if (!thresholdMicros || !amountMicros) throw new AppError('invalid_amount', 'A threshold and an amount are needed.');
  if (amountMicros < MIN_TOPUP_MICROS || amountMicros > MAX_TOPUP_MICROS || amountMicros % 10_000 !== 0) {
    throw new AppError('invalid_amount', 'An auto top-up is a whole number of cents from 1 to 10,000 USD.');
  }
  if (monthlyMaxCount === null && monthlyMaxMicros === null) {
    throw new AppError('invalid_amount', 'Set a monthly cap on the count of top-ups, on their total, or both.');
  }
  if (monthlyMaxMicros !== null && monthlyMaxMicros < amountMicros) {
    throw new AppError('invalid_amount', 'The monthly cap on the amount is below one top-up.');
  }
  return { enabled: input.enabled, thresholdMicros, amountMicros, monthlyMaxCount, monthlyMaxMicros };
}

function userOf(actor: Actor): string | null {
  return actor.type === 'system' ? null : actor.userId;
}

/**
 * Auto top-up, opt-in per workspace: when the available credits fall below the threshold,
 * the card saved at the processor is charged off-session for the chosen amount, at most one
 * charge in flight per workspace and never beyond the monthly cap. Credits come when the
 * processor reports the payment succeeded (its answer, its event, or a later look-up), once:
 * the top-up's ledger key is `stripe:<payment intent id>`. Declines are recorded and mailed to
 * the owners; the third in a row turns auto top-up off.
 */
export function autoTopupService(deps: Deps) {
  const { db, repo, clock } = deps;
  const outcomes = autoTopupOutcomes(deps);

  const processor = () => requireProcessor(deps.processor);

  async function viewIn(tx: Database, workspaceId: string, s: AutoTopupSettingsRow | null): Promise<AutoTopupView> {
    const used = await repo.monthUsage(tx, workspaceId, periodStart('month', clock.now()));
    const pending = await repo.inFlight(tx, workspaceId);
    return {
      workspaceId,
      enabled: s?.enabled ?? false,
      thresholdMicros: s?.thresholdMicros ?? null,
      amountMicros: s?.amountMicros ?? null,
      monthlyMaxCount: s?.monthlyMaxCount ?? null,
      monthlyMaxMicros: s?.monthlyMaxMicros ?? null,
      paymentMethod:
        s?.processorPaymentMethodId && s.cardBrand && s.cardLast4 ? { brand: s.cardBrand, last4: s.cardLast4 } : null,
      consecutiveFailures: s?.consecutiveFailures ?? 0,
      disabledReason: s?.disabledReason ?? null,
      thisMonth: { count: used.count, amountMicros: used.micros },
      inFlight: pending !== null,
    };
  }

  /** Sends a charge's request (again, with the same key: the processor answers a retry as the first). */
  async function drive(charge: AutoTopupRow): Promise<boolean> {
    let outcome: ChargeOutcome;
    try {
      outcome = await processor().chargeSavedCard({
        chargeId: charge.id,
        workspaceId: charge.workspaceId,
        customerId: charge.processorCustomerId,
        paymentMethodId: charge.processorPaymentMethodId,
        amountMicros: charge.amountMicros,
        currency: charge.currency,
        idempotencyKey: `berth-auto-topup-${charge.id}`,
      });
    } catch (err) {
      // Unreachable or refusing: the charge stays in flight and the job asks again later.
      deps.logger.warn({ chargeId: charge.id, code: (err as AppError).code ?? 'error' }, 'auto top-up charge not sent');
      return false;
    }
    return outcomes.settle(charge.workspaceId, charge.id, outcome);
  }

  /** Starts a charge for one workspace when it is still due (checked under the settings row's lock). */
  async function chargeIfDue(workspaceId: string): Promise<AutoTopupRow | null> {
    return db.tenant(workspaceId, async (tx) => {
      const now = clock.now();
      // The settings row's lock orders runners: a charge settled meanwhile shows in the balance read after it.
      const s = await repo.getSettings(tx, workspaceId, true);
      if (!s?.enabled || !s.processorCustomerId || !s.processorPaymentMethodId) return null;
      const availableMicros = (await deps.billingRepo.getBalance(tx, workspaceId))?.availableMicros ?? 0;
      if (!s.thresholdMicros || !s.amountMicros || availableMicros >= s.thresholdMicros) return null;
      if (s.nextAttemptAt && s.nextAttemptAt > now) return null;
      if (await repo.inFlight(tx, workspaceId)) return null;
      const used = await repo.monthUsage(tx, workspaceId, periodStart('month', now));
      if (s.monthlyMaxCount !== null && used.count + 1 > s.monthlyMaxCount) return null;
      if (s.monthlyMaxMicros !== null && used.micros + s.amountMicros > s.monthlyMaxMicros) return null;
      const charge: AutoTopupRow = {
        id: newId('pay', now),
        workspaceId,
        paymentIntentId: null,
        processorCustomerId: s.processorCustomerId,
        processorPaymentMethodId: s.processorPaymentMethodId,
        amountMicros: s.amountMicros,
        currency: 'usd',
        status: 'pending',
        failureCode: null,
        transactionId: null,
        createdAt: now,
        resolvedAt: null,
      };
      await repo.insertCharge(tx, charge);
      return charge;
    });
  }

  /** Charges in flight for a while: their outcome is asked for, or their request sent again. */
  async function followUp(): Promise<number> {
    const now = clock.now();
    const stale = await db.system((tx) => repo.staleCharges(tx, new Date(now.getTime() - STALE_CHARGE_MS), 100));
    let resolved = 0;
    for (const charge of stale) {
      try {
        if (charge.paymentIntentId) {
          const outcome = await processor().retrieveCharge(charge.paymentIntentId);
          if (outcome.status !== 'pending' && (await outcomes.settle(charge.workspaceId, charge.id, outcome)))
            resolved++;
        } else if (now.getTime() - charge.createdAt.getTime() < GIVE_UP_UNSENT_MS) {
          if (await drive(charge)) resolved++;
        } else {
          // Never reached the processor: no money moved. Not a decline of the card.
          await db.tenant(charge.workspaceId, (tx) =>
            repo.updateCharge(tx, charge.workspaceId, charge.id, {
              status: 'failed',
              failureCode: 'processor_unreachable',
              resolvedAt: now,
            }),
          );
          resolved++;
        }
      } catch (err) {
        deps.logger.warn(
          { chargeId: charge.id, code: (err as AppError).code ?? 'error' },
          'auto top-up follow-up failed',
        );
      }
    }
    return resolved;
  }

  return {
    async get(scope: Scope): Promise<AutoTopupView> {
      return db.tenant(scope.workspaceId, async (tx) =>
        viewIn(tx, scope.workspaceId, await repo.getSettings(tx, scope.workspaceId)),
      );
    },

    /**
     * Saves a workspace's auto top-up settings; audited in the same transaction. Turning it on
     * needs a card saved for off-session charges (a checkout with `autoTopup: true`) and resets
     * the count of declines.
     */
    async update(input: { scope: Scope; settings: AutoTopupSettingsInput }): Promise<AutoTopupView> {
      const { scope } = input;
      const choice = checkChoice(input.settings);
      if (choice.enabled) processor();
      return db.tenant(scope.workspaceId, async (tx) => {
        const now = clock.now();
        const current = await repo.getSettings(tx, scope.workspaceId, true);
        if (choice.enabled && !current?.processorPaymentMethodId) {
          throw new AppError(
            'payment_method_required',
            'Auto top-up needs a saved card: pay a top-up with autoTopup: true first.',
          );
        }
        const turningOn = choice.enabled && !current?.enabled;
        await repo.saveChoice(
          tx,
          scope.workspaceId,
          {
            ...choice,
            consecutiveFailures: turningOn ? 0 : (current?.consecutiveFailures ?? 0),
            disabledReason: choice.enabled ? null : (current?.disabledReason ?? null),
            nextAttemptAt: turningOn ? null : (current?.nextAttemptAt ?? null),
          },
          userOf(scope.actor),
          now,
        );
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'billing.auto_topup_changed',
          target: { type: 'auto_topup_settings', id: scope.workspaceId },
          diff: {
            from: current
              ? {
                  enabled: current.enabled,
                  thresholdMicros: current.thresholdMicros,
                  amountMicros: current.amountMicros,
                  monthlyMaxCount: current.monthlyMaxCount,
                  monthlyMaxMicros: current.monthlyMaxMicros,
                }
              : null,
            to: choice,
          },
        });
        return viewIn(tx, scope.workspaceId, await repo.getSettings(tx, scope.workspaceId));
      });
    },

    /**
     * A workspace being deleted: auto top-up stops and the saved card's references go (the
     * charges already made stay, as billing records), in the deleting transaction.
     */
    async onWorkspaceEvent(event: WorkspaceEvent, tx: Database): Promise<void> {
      if (event.type !== 'workspace.deleting') return;
      await repo.updateSettings(tx, event.workspaceId, {
        enabled: false,
        disabledReason: 'workspace_deleted',
        processorCustomerId: null,
        processorPaymentMethodId: null,
        cardBrand: null,
        cardLast4: null,
        updatedAt: clock.now(),
      });
    },

    /** Keeps the processor's references to a card saved at a checkout, inside the checkout's transaction. */
    async saveCardIn(tx: Database, workspaceId: string, card: SavedCard): Promise<void> {
      await repo.saveCard(tx, workspaceId, card, clock.now());
    },

    /** A verified `payment_intent.*` event, applied once (billing.autotopup.outcomes.ts). */
    handleIntentEvent: outcomes.handleIntentEvent,

    /**
     * The `billing.auto-topup` job (every minute): follows up charges in flight for a while,
     * then charges each opted-in workspace whose available credits are below its threshold.
     * Returns how many charges it started.
     */
    async run(limit = 200): Promise<{ started: number; followedUp: number }> {
      if (!deps.processor) return { started: 0, followedUp: 0 };
      const followedUp = await followUp();
      const due = await db.system((tx) => repo.dueWorkspaces(tx, clock.now(), limit));
      let started = 0;
      for (const workspaceId of due) {
        try {
          const charge = await chargeIfDue(workspaceId);
          if (!charge) continue;
          started++;
          await drive(charge);
        } catch (err) {
          // One workspace's trouble does not stop the others; a second runner's charge wins the in-flight slot.
          deps.logger.warn({ workspaceId, code: (err as AppError).code ?? 'error' }, 'auto top-up not started');
        }
      }
      return { started, followedUp };
    },
  };
}

export type AutoTopupService = ReturnType<typeof autoTopupService>;
