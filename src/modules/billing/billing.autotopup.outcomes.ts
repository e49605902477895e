import type { Clock } from '../../platform/clock.ts';
import { HOUR } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Actor } from '../../platform/http/context.ts';
import { microsToUsd } from '../../platform/money.ts';
import type { AuditService } from '../audit/index.ts';
import type { AutoTopupRepo } from './billing.autotopup.repo.ts';
import type { AutoTopupRow, AutoTopupSettingsRow } from './billing.autotopup.tables.ts';
import type { LedgerService } from './billing.ledger.ts';
import type { BillingNotice, BillingNotices } from './billing.notices.ts';
import type { BillingRepo } from './billing.repo.ts';
import type { ChargeOutcome, ProcessorEvent } from './payments/stripe.ts';
import { checkCurrency } from './payments/stripe.ts';

// What a charge's outcome does, however it is learnt (the processor's answer, a later look-up,
// or its `payment_intent.*` event); the charges themselves start in billing.autotopup.ts.

/** Declines in a row after which auto top-up turns itself off. */
export const MAX_CONSECUTIVE_FAILURES = 3;
/** After a decline, the next charge waits this long (three declines take at least 12 hours). */
export const RETRY_AFTER_DECLINE_MS = 6 * HOUR;

const STRIPE_ACTOR: Actor = { type: 'system', name: 'stripe' };
const JOB_ACTOR: Actor = { type: 'system', name: 'auto-topup' };

type Deps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: Pick<AutoTopupRepo, 'getSettings' | 'lockCharge' | 'updateCharge' | 'updateSettings'>;
  billingRepo: Pick<BillingRepo, 'lockPayment' | 'notePaymentEvent' | 'insertPayment'>;
  ledger: Pick<LedgerService, 'topUpIn'>;
  audit: Pick<AuditService, 'record'>;
  notices: Pick<BillingNotices, 'send'>;
  clock: Clock;
  /** Told inside the transaction that credits a charge (its receipt is queued once that commits). */
  onPaid?: (tx: Database, paid: { workspaceId: string; paymentId: string }) => void;
};

/** What a charge's outcome means for the owners (sent after the change commits). */
type Outcome = { applied: boolean; notices: BillingNotice[] };

/**
 * Applies what the processor reported about an auto top-up charge: credits once on success
 * (the top-up's ledger key is `stripe:<payment intent id>`), a recorded decline mailed to the
 * owners on failure, the third in a row turning auto top-up off.
 *
 * @example const applied = await outcomes.settle(workspaceId, chargeId, outcome);
 */
export function autoTopupOutcomes(deps: Deps) {
  const { db, repo, clock } = deps;

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

  /**
   * A verified `payment_intent.*` event: applied once (its id is noted in the same
   * transaction). Auto top-up charges are settled by it; the payments of Berth's checkouts
   * are acknowledged (their checkout's event tops up). A payment Berth did not start is
   * refused (`unknown_payment`), as is one of another customer (`unknown_customer`) or in
   * another currency (`unknown_currency`); nothing changes then.
   */
  async function handleIntentEvent(event: ProcessorEvent): Promise<{ applied: boolean }> {
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
    checkCurrency(pi.currency);
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
  }

  return { settle, handleIntentEvent };
}

export type AutoTopupOutcomes = ReturnType<typeof autoTopupOutcomes>;
