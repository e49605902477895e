import type { Clock } from '../../platform/clock.ts';
import { HOUR, MINUTE } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Actor, Scope } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import { microsToUsd } from '../../platform/money.ts';
import type { AuditService } from '../audit/index.ts';
import type { WorkspaceEvent } from '../workspaces/index.ts';
import type { AutoTopupChoice, AutoTopupRepo, SavedCard } from './billing.autotopup.repo.ts';
import type { AutoTopupRow, AutoTopupSettingsRow } from './billing.autotopup.tables.ts';
import type { LedgerService } from './billing.ledger.ts';
import type { BillingNotice, BillingNotices } from './billing.notices.ts';
import { MAX_TOPUP_MICROS, MIN_TOPUP_MICROS } from './billing.payments.ts';
import type { BillingRepo } from './billing.repo.ts';
import type { ChargeOutcome, PaymentProcessor, ProcessorEvent } from './payments/stripe.ts';
import { SUPPORTED_CURRENCIES } from './payments/stripe.ts';

/** Declines in a row after which auto top-up turns itself off. */
export const MAX_CONSECUTIVE_FAILURES = 3;
/** After a decline, the next charge waits this long (three declines take at least 12 hours). */
export const RETRY_AFTER_DECLINE_MS = 6 * HOUR;
/** A charge still in flight this long is asked about (or its request retried with the same key). */
export const STALE_CHARGE_MS = 10 * MINUTE;
/** A charge whose request never reached the processor is given up after this (its key is kept 24 h there). */
export const GIVE_UP_UNSENT_MS = 12 * HOUR;

const STRIPE_ACTOR: Actor = { type: 'system', name: 'stripe' };
const JOB_ACTOR: Actor = { type: 'system', name: 'auto-topup' };

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

/** The first instant of `at`'s month (UTC): the monthly cap counts charges made since. */
export function monthStart(at: Date): Date {
  return new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), 1));
}

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

/** What a charge's outcome means for the owners (sent after the change commits). */
type Outcome = { applied: boolean; notices: BillingNotice[] };

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

  function processor(): PaymentProcessor {
    if (!deps.processor) {
      throw new AppError(
        'payments_not_configured',
        'Card payments are not set up on this Berth (BERTH_STRIPE_SECRET_KEY).',
      );
    }
    return deps.processor;
  }

  async function viewIn(tx: Database, workspaceId: string, s: AutoTopupSettingsRow | null): Promise<AutoTopupView> {
    const used = await repo.monthUsage(tx, workspaceId, monthStart(clock.now()));
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

  function declineNotices(
    workspaceId: string,
    charge: AutoTopupRow,
    s: AutoTopupSettingsRow | null,
    code: string,
    turnedOff: boolean,
  ): BillingNotice[] {
    const card = s?.cardBrand && s.cardLast4 ? `${s.cardBrand} card ending in ${s.cardLast4}` : 'saved card';
    const failed: BillingNotice = {
      workspaceId,
      roles: ['owner'],
      tag: 'billing.auto_topup_failed',
      subject: 'Berth auto top-up failed',
      text: [
        `Berth could not charge the ${card} for an auto top-up of ${microsToUsd(charge.amountMicros)} USD`,
        `(workspace ${workspaceId}). The processor said: ${code}.`,
        turnedOff
          ? ''
          : `Berth tries again in ${RETRY_AFTER_DECLINE_MS / HOUR} hours; after ${MAX_CONSECUTIVE_FAILURES} declines in a row auto top-up turns itself off.`,
      ]
        .filter(Boolean)
        .join('\n'),
    };
    if (!turnedOff) return [failed];
    return [
      failed,
      {
        workspaceId,
        roles: ['owner'],
        tag: 'billing.auto_topup_disabled',
        subject: 'Berth auto top-up was turned off',
        text: [
          `The ${card} was declined ${MAX_CONSECUTIVE_FAILURES} times in a row, so auto top-up is now off`,
          `for workspace ${workspaceId}. Pay a top-up with a working card (saving it for auto top-up)`,
          'and turn auto top-up back on in Billing.',
        ].join('\n'),
      },
    ];
  }

  /**
   * Applies what the processor reported about a charge, inside `tx` (bound to the workspace;
   * the settings row, then the charge, locked: the order every auto top-up transaction takes
   * them in): credits once on success, a recorded decline once on failure.
   */
  async function applyOutcomeIn(
    tx: Database,
    workspaceId: string,
    s: AutoTopupSettingsRow | null,
    charge: AutoTopupRow,
    outcome: ChargeOutcome,
  ): Promise<Outcome> {
    const now = clock.now();
    const piId = outcome.paymentIntentId ?? charge.paymentIntentId;
    if (piId && charge.paymentIntentId !== piId) {
      await repo.updateCharge(tx, workspaceId, charge.id, { paymentIntentId: piId });
    }
    if (outcome.status === 'succeeded') {
      // Money was taken: credits follow, also for a charge given up as failed before.
      if (charge.status === 'succeeded' || !piId) return { applied: false, notices: [] };
      if (outcome.currency !== null && outcome.currency !== charge.currency) {
        throw new AppError('unknown_currency', 'The payment is not in the currency of the charge Berth made.');
      }
      if (outcome.amountMicros !== null && outcome.amountMicros !== charge.amountMicros) {
        throw new AppError('unknown_payment', 'The payment does not match the charge Berth made (amount).');
      }
      const row = await deps.ledger.topUpIn(tx, {
        workspaceId,
        amountMicros: charge.amountMicros,
        idempotencyKey: `stripe:${piId}`,
        actor: STRIPE_ACTOR,
        memo: `Auto top-up ${charge.id}`,
      });
      await repo.updateCharge(tx, workspaceId, charge.id, {
        status: 'succeeded',
        failureCode: null,
        transactionId: row.id,
        resolvedAt: now,
      });
      await repo.updateSettings(tx, workspaceId, { consecutiveFailures: 0, nextAttemptAt: null });
      // A payment like a checkout's (listed, with a receipt), under the charge's id; the
      // processor's reference is the payment intent.
      await deps.billingRepo.insertPayment(tx, {
        id: charge.id,
        workspaceId,
        processor: 'stripe',
        checkoutId: piId,
        amountMicros: charge.amountMicros,
        currency: charge.currency,
        status: 'paid',
        cardBrand: s?.cardBrand ?? null,
        cardLast4: s?.cardLast4 ?? null,
        postalCode: null,
        transactionId: row.id,
        createdBy: null,
        createdAt: charge.createdAt,
        paidAt: now,
      });
      deps.onPaid?.(tx, { workspaceId, paymentId: charge.id });
      return { applied: true, notices: [] };
    }
    if (outcome.status !== 'failed' || charge.status !== 'pending') return { applied: false, notices: [] };
    const code = outcome.failureCode ?? 'payment_failed';
    await repo.updateCharge(tx, workspaceId, charge.id, { status: 'failed', failureCode: code, resolvedAt: now });
    const failures = (s?.consecutiveFailures ?? 0) + 1;
    const turnOff = failures >= MAX_CONSECUTIVE_FAILURES && (s?.enabled ?? false);
    await repo.updateSettings(tx, workspaceId, {
      consecutiveFailures: failures,
      nextAttemptAt: new Date(now.getTime() + RETRY_AFTER_DECLINE_MS),
      ...(turnOff ? { enabled: false, disabledReason: 'card_declined', updatedAt: now } : {}),
    });
    if (turnOff) {
      await deps.audit.record(tx, {
        workspaceId,
        actor: JOB_ACTOR,
        action: 'billing.auto_topup_disabled',
        target: { type: 'auto_topup_settings', id: workspaceId },
        diff: { enabled: false, reason: 'card_declined', consecutiveFailures: failures },
      });
    }
    return { applied: true, notices: declineNotices(workspaceId, charge, s, code, turnOff) };
  }

  async function send(notices: BillingNotice[]) {
    for (const n of notices) await deps.notices.send(n);
  }

  /** Applies an outcome to a charge in its own transaction, then tells the owners. */
  async function settle(workspaceId: string, chargeId: string, outcome: ChargeOutcome): Promise<boolean> {
    const done = await db.tenant(workspaceId, async (tx) => {
      const s = await repo.getSettings(tx, workspaceId, true);
      const charge = await repo.lockCharge(tx, workspaceId, chargeId);
      if (!charge) throw new AppError('unknown_payment', 'No such auto top-up charge.');
      return applyOutcomeIn(tx, workspaceId, s, charge, outcome);
    });
    await send(done.notices);
    return done.applied;
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
    return settle(charge.workspaceId, charge.id, outcome);
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
      const used = await repo.monthUsage(tx, workspaceId, monthStart(now));
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
          if (outcome.status !== 'pending' && (await settle(charge.workspaceId, charge.id, outcome))) resolved++;
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

    /** Keeps the processor's references to a card saved at a checkout, inside the checkout's transaction. */
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

    async saveCardIn(tx: Database, workspaceId: string, card: SavedCard): Promise<void> {
      await repo.saveCard(tx, workspaceId, card, clock.now());
    },

    /**
     * A verified `payment_intent.*` event: applied once (its id is noted in the same
     * transaction). Auto top-up charges are settled by it; the payments of Berth's checkouts
     * are acknowledged (their checkout's event tops up). A payment Berth did not start is
     * refused (`unknown_payment`), as is one of another customer (`unknown_customer`) or in
     * another currency (`unknown_currency`); nothing changes then.
     */
    async handleIntentEvent(event: ProcessorEvent): Promise<{ applied: boolean }> {
      const pi = event.paymentIntent;
      if (!pi) return { applied: false };
      const seen = { id: event.id, processor: 'stripe', type: event.type, receivedAt: clock.now() };
      const acts = event.type === 'payment_intent.succeeded' || event.type === 'payment_intent.payment_failed';
      if (!acts) {
        // Not an event billing acts on: acknowledged, so the processor stops sending it.
        await db.system((tx) => deps.billingRepo.notePaymentEvent(tx, { ...seen, workspaceId: null }));
        return { applied: false };
      }
      const { workspaceId } = pi;
      if (!pi.id || !workspaceId || (!pi.autoTopupId && !pi.paymentId)) {
        throw new AppError('unknown_payment', 'The event names no payment Berth started.');
      }
      if (!pi.currency || !SUPPORTED_CURRENCIES.includes(pi.currency)) {
        throw new AppError('unknown_currency', `Berth keeps credits in ${SUPPORTED_CURRENCIES.join(', ')} only.`);
      }
      const autoTopupId = pi.autoTopupId;
      if (!autoTopupId) {
        const paymentId = pi.paymentId ?? '';
        return db.tenant(workspaceId, async (tx) => {
          const payment = await deps.billingRepo.lockPayment(tx, workspaceId, paymentId);
          if (!payment) throw new AppError('unknown_payment', 'The event names no checkout Berth started.');
          await deps.billingRepo.notePaymentEvent(tx, { ...seen, workspaceId });
          return { applied: false };
        });
      }
      const done = await db.tenant(workspaceId, async (tx): Promise<Outcome> => {
        const s = await repo.getSettings(tx, workspaceId, true);
        const charge = await repo.lockCharge(tx, workspaceId, autoTopupId);
        if (!charge || (charge.paymentIntentId !== null && charge.paymentIntentId !== pi.id)) {
          throw new AppError('unknown_payment', 'The event names no charge Berth made.');
        }
        if (pi.customerId !== charge.processorCustomerId) {
          throw new AppError('unknown_customer', 'The event is for a customer Berth did not charge.');
        }
        if (!(await deps.billingRepo.notePaymentEvent(tx, { ...seen, workspaceId }))) {
          return { applied: false, notices: [] };
        }
        return applyOutcomeIn(tx, workspaceId, s, charge, {
          paymentIntentId: pi.id,
          status: event.type === 'payment_intent.succeeded' ? 'succeeded' : 'failed',
          amountMicros: pi.amountMicros,
          currency: pi.currency,
          failureCode: pi.failureCode,
        });
      });
      await send(done.notices);
      return { applied: done.applied };
    },

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
