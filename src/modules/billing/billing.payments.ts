import type { Clock } from '../../platform/clock.ts';
import type { Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Scope } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { AuditService } from '../audit/index.ts';
import type { LedgerService } from './billing.ledger.ts';
import type { BillingRepo } from './billing.repo.ts';
import type { PaymentProcessor } from './payments/stripe.ts';

/** Top-ups a checkout may buy: whole cents, 1 to 10,000 USD. */
export const MIN_TOPUP_MICROS = 1_000_000;
export const MAX_TOPUP_MICROS = 10_000_000_000;

type Deps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: BillingRepo;
  ledger: Pick<LedgerService, 'topUpIn'>;
  audit: Pick<AuditService, 'record'>;
  clock: Clock;
  /** Null when no processor is configured (no BERTH_STRIPE_SECRET_KEY). */
  processor: PaymentProcessor | null;
  publicUrl: string;
};

/**
 * Card top-ups: a checkout page at the processor, then its signed event, applied exactly
 * once (the event id is noted in the same transaction as the top-up, and the top-up's
 * idempotency key is the checkout's).
 */
export function paymentsService(deps: Deps) {
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

  return {
    /** Starts a top-up: the processor's checkout page the member pays on. */
    async startCheckout(input: { scope: Scope; amountMicros: number }) {
      const { scope, amountMicros } = input;
      if (amountMicros < MIN_TOPUP_MICROS || amountMicros > MAX_TOPUP_MICROS || amountMicros % 10_000 !== 0) {
        throw new AppError('invalid_amount', 'A top-up is a whole number of cents from 1 to 10,000 USD.');
      }
      const paymentId = newId('pay', clock.now());
      const back = `${deps.publicUrl.replace(/\/+$/, '')}/billing?payment=${paymentId}`;
      const session = await processor().createCheckout({
        paymentId,
        workspaceId: scope.workspaceId,
        amountMicros,
        successUrl: `${back}&status=success`,
        cancelUrl: `${back}&status=cancelled`,
      });
      await db.tenant(scope.workspaceId, async (tx) => {
        const now = clock.now();
        await repo.insertPayment(tx, {
          id: paymentId,
          workspaceId: scope.workspaceId,
          processor: 'stripe',
          checkoutId: session.id,
          amountMicros,
          currency: 'usd',
          status: 'pending',
          cardBrand: null,
          cardLast4: null,
          postalCode: null,
          transactionId: null,
          createdBy: scope.actor.type === 'system' ? null : scope.actor.userId,
          createdAt: now,
          paidAt: null,
        });
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'billing.checkout_started',
          target: { type: 'payment', id: paymentId },
          diff: { amountMicros },
        });
      });
      return { paymentId, url: session.url, amountMicros };
    },

    /**
     * A processor webhook: verified, then applied once. A paid checkout tops the workspace
     * up by what was paid; an expired one is marked so. Events of no checkout Berth started
     * are refused (`unknown_payment`) and change nothing.
     */
    async handleWebhook(rawBody: Buffer, signature: string | undefined): Promise<{ applied: boolean }> {
      // Without a processor there is no webhook endpoint to speak of.
      if (!deps.processor) throw new AppError('not_found', 'No payment processor sends events here.');
      const event = deps.processor.parseWebhook(rawBody, signature, clock.now());
      const c = event.checkout;
      const seen = { id: event.id, processor: 'stripe', type: event.type, receivedAt: clock.now() };
      if (!c) {
        // Not an event billing acts on: acknowledged, so the processor stops sending it.
        await db.system((tx) => repo.notePaymentEvent(tx, { ...seen, workspaceId: null }));
        return { applied: false };
      }
      const { workspaceId, paymentId } = c;
      if (!workspaceId || !paymentId) throw new AppError('unknown_payment', 'The event names no Berth checkout.');
      return db.tenant(workspaceId, async (tx) => {
        const payment = await repo.lockPayment(tx, workspaceId, paymentId);
        if (!payment || payment.checkoutId !== c.id) {
          throw new AppError('unknown_payment', 'The event names no checkout Berth started.');
        }
        if (!(await repo.notePaymentEvent(tx, { ...seen, workspaceId }))) return { applied: false };
        const now = clock.now();
        if (event.type === 'checkout.session.expired' && payment.status === 'pending') {
          await repo.updatePayment(tx, workspaceId, payment.id, { status: 'expired' });
          return { applied: true };
        }
        if (event.type !== 'checkout.session.completed' || !c.paid || payment.status === 'paid') {
          return { applied: false };
        }
        if (c.amountMicros !== payment.amountMicros || c.currency !== payment.currency) {
          throw new AppError(
            'unknown_payment',
            'The event does not match the checkout Berth started (amount or currency).',
          );
        }
        const row = await deps.ledger.topUpIn(tx, {
          workspaceId,
          amountMicros: payment.amountMicros,
          idempotencyKey: `stripe:${c.id}`,
          actor: { type: 'system', name: 'stripe' },
          memo: `Card payment ${payment.id}`,
        });
        await repo.updatePayment(tx, workspaceId, payment.id, {
          status: 'paid',
          transactionId: row.id,
          postalCode: c.postalCode,
          paidAt: now,
        });
        return { applied: true };
      });
    },
  };
}

export type PaymentsService = ReturnType<typeof paymentsService>;
