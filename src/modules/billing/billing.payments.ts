import type { Clock } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Scope } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { AuditService } from '../audit/index.ts';
import type { AutoTopupService } from './billing.autotopup.ts';
import type { LedgerService } from './billing.ledger.ts';
import type { BillingRepo } from './billing.repo.ts';
import {
  type CheckoutDetails,
  checkCurrency,
  type PaymentProcessor,
  type ProcessorEvent,
  requireProcessor,
} from './payments/stripe.ts';

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
  /** Keeps cards saved for auto top-up, and settles its charges' events. */
  autoTopups: Pick<AutoTopupService, 'saveCardIn' | 'handleIntentEvent'>;
  /** Told inside the transaction that first applies a payment (its receipt is queued once that commits). */
  onPaid?: (tx: Database, paid: { workspaceId: string; paymentId: string }) => void;
};

/**
 * Card top-ups: a checkout page at the processor, then its signed event, applied exactly
 * once (the event id is noted in the same transaction as the top-up, and the top-up's
 * idempotency key is the checkout's).
 */
export function paymentsService(deps: Deps) {
  const { db, repo, clock } = deps;

  const processor = () => requireProcessor(deps.processor);

  /**
   * What the processor shows of a paid checkout Berth is still waiting for (its card's brand
   * and last 4, the postal code, a card saved for auto top-up); null for any other event.
   * Fetched before the event's transaction, so no row is locked while the processor answers.
   */
  async function paidCheckoutDetails(event: ProcessorEvent): Promise<CheckoutDetails | null> {
    const c = event.checkout;
    if (event.type !== 'checkout.session.completed' || !c?.paid || !c.workspaceId || !c.paymentId) return null;
    const { workspaceId, paymentId } = c;
    const payment = await db.tenant(workspaceId, (tx) => repo.lockPayment(tx, workspaceId, paymentId));
    if (!payment || payment.checkoutId !== c.id || payment.status === 'paid') return null;
    return processor().retrieveCheckout(c.id);
  }

  return {
    /**
     * Starts a top-up: the processor's checkout page the member pays on. With `autoTopup`,
     * the card is saved at the processor for off-session charges (auto top-up).
     */
    async startCheckout(input: { scope: Scope; amountMicros: number; currency?: string; autoTopup?: boolean }) {
      const { scope, amountMicros } = input;
      checkCurrency(input.currency ?? 'usd');
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
        saveCard: input.autoTopup === true,
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
          diff: { amountMicros, autoTopup: input.autoTopup === true },
        });
      });
      return { paymentId, url: session.url, amountMicros };
    },

    /**
     * A processor webhook: verified, then applied once. A paid checkout tops the workspace
     * up by what was paid and keeps its card's brand and last 4 (and the card's processor
     * references when it was saved for auto top-up); an expired one is marked so. Events of
     * no checkout Berth started are refused (`unknown_payment`), events in a currency Berth
     * does not keep (`unknown_currency`); they change nothing. `payment_intent.*` events go
     * to auto top-up.
     */
    async handleWebhook(rawBody: Buffer, signature: string | undefined): Promise<{ applied: boolean }> {
      // Without a processor there is no webhook endpoint to speak of.
      if (!deps.processor) throw new AppError('not_found', 'No payment processor sends events here.');
      const event = deps.processor.parseWebhook(rawBody, signature, clock.now());
      if (event.paymentIntent) return deps.autoTopups.handleIntentEvent(event);
      const details = await paidCheckoutDetails(event);
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
        checkCurrency(c.currency);
        if (c.amountMicros !== payment.amountMicros || c.currency !== payment.currency) {
          throw new AppError(
            'unknown_payment',
            'The event does not match the checkout Berth started (amount or currency).',
          );
        }
        // The saved card before the top-up: auto top-up locks its settings row, then the
        // balance; taking them in the same order here means the two never deadlock.
        if (details?.savedForOffSession && details.customerId && details.paymentMethodId && details.card) {
          await deps.autoTopups.saveCardIn(tx, workspaceId, {
            customerId: details.customerId,
            paymentMethodId: details.paymentMethodId,
            ...details.card,
          });
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
          // Of the card, only what the processor reports: brand, last 4 and postal code.
          cardBrand: details?.card?.brand ?? null,
          cardLast4: details?.card?.last4 ?? null,
          postalCode: details?.postalCode ?? c.postalCode,
          paidAt: now,
        });
        deps.onPaid?.(tx, { workspaceId, paymentId: payment.id });
        return { applied: true };
      });
    },
  };
}

export type PaymentsService = ReturnType<typeof paymentsService>;
