import { createHmac, timingSafeEqual } from 'node:crypto';
import { AppError } from '../../../platform/errors.ts';

/**
 * What billing needs from a payment processor: a hosted checkout page for a top-up, and
 * its events, verified. Card data never reaches Berth.
 */
export interface PaymentProcessor {
  readonly name: 'stripe';
  createCheckout(input: CheckoutInput): Promise<{ id: string; url: string }>;
  /** Verifies a webhook's signature and reads the event; AppError `invalid_signature` otherwise. */
  parseWebhook(rawBody: Buffer, signatureHeader: string | undefined, now: Date): ProcessorEvent;
  /** What a completed checkout's card and customer are, as the processor reports them (nothing else of the card). */
  retrieveCheckout(checkoutId: string): Promise<CheckoutDetails>;
  /** Charges a saved card off-session (the payer is not there); a decline is an outcome, not an error. */
  chargeSavedCard(input: SavedCardCharge): Promise<ChargeOutcome>;
  /** Where an off-session charge stands now. */
  retrieveCharge(paymentIntentId: string): Promise<ChargeOutcome>;
}

/** The currencies Berth's ledger is kept in. */
export const SUPPORTED_CURRENCIES: readonly string[] = ['usd'];

/** A currency Berth keeps credits in, or 400 `unknown_currency`. */
export function checkCurrency(currency: string | null | undefined): void {
  if (!currency || !SUPPORTED_CURRENCIES.includes(currency)) {
    throw new AppError('unknown_currency', `Berth keeps credits in ${SUPPORTED_CURRENCIES.join(', ')} only.`);
  }
}

/** The configured processor, or 409 `payments_not_configured` (no BERTH_STRIPE_SECRET_KEY). */
export function requireProcessor(processor: PaymentProcessor | null): PaymentProcessor {
  if (!processor) {
    throw new AppError(
      'payments_not_configured',
      'Card payments are not set up on this Berth (BERTH_STRIPE_SECRET_KEY).',
    );
  }
  return processor;
}

/** Of a completed checkout, only what Berth keeps: references, brand, last 4 and postal code. */
export type CheckoutDetails = {
  id: string;
  customerId: string | null;
  paymentMethodId: string | null;
  /** The card was saved for charges without the payer (auto top-up). */
  savedForOffSession: boolean;
  card: { brand: string; last4: string } | null;
  postalCode: string | null;
};

export type SavedCardCharge = {
  chargeId: string;
  workspaceId: string;
  customerId: string;
  paymentMethodId: string;
  amountMicros: number;
  currency: string;
  /** The processor answers a retried request with this key as it answered the first. */
  idempotencyKey: string;
};

export type ChargeOutcome = {
  paymentIntentId: string | null;
  status: 'succeeded' | 'pending' | 'failed';
  amountMicros: number | null;
  currency: string | null;
  /** Why it failed (the processor's decline code or error code). */
  failureCode: string | null;
};

export type CheckoutInput = {
  paymentId: string;
  workspaceId: string;
  amountMicros: number;
  successUrl: string;
  cancelUrl: string;
  customerEmail?: string | undefined;
  /** Save the card at the processor for off-session charges (auto top-up). */
  saveCard?: boolean | undefined;
};

/** A processor event, reduced to what billing acts on. */
export type ProcessorEvent = {
  id: string;
  type: string;
  /** For checkout events: the session, what was paid, and whose. */
  checkout?: {
    id: string;
    paid: boolean;
    amountMicros: number | null;
    currency: string | null;
    workspaceId: string | null;
    paymentId: string | null;
    postalCode: string | null;
  };
  /** For payment_intent events: the payment, what it was for, and whose. */
  paymentIntent?: {
    id: string;
    status: string | null;
    amountMicros: number | null;
    currency: string | null;
    customerId: string | null;
    workspaceId: string | null;
    /** Set on Berth's off-session charges. */
    autoTopupId: string | null;
    /** Set on the payments of Berth's checkouts. */
    paymentId: string | null;
    failureCode: string | null;
  };
};

/** How far a webhook's signed timestamp may be from now. */
export const WEBHOOK_TOLERANCE_SECONDS = 300;
const MICROS_PER_CENT = 10_000;

export type StripeOptions = {
  secretKey: string;
  /** Endpoint signing secrets: several are accepted while one is rotated. */
  webhookSecrets: string[];
  /** https://api.stripe.com, or a fake speaking its API in tests. */
  apiUrl: string;
};

const str = (v: unknown): string | null => (typeof v === 'string' && v.length > 0 ? v : null);
/** A reference or code from the processor: short, printable, or nothing. */
const ref = (v: unknown): string | null => {
  const s = str(v);
  return s && s.length <= 255 && /^[A-Za-z0-9_.:-]+$/.test(s) ? s : null;
};
const obj = (v: unknown): Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
const centsToMicros = (v: unknown): number | null =>
  typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= 1e11 ? v * MICROS_PER_CENT : null;
/** An expandable field: its id whether it came as a string or as the expanded object. */
const idOf = (v: unknown): string | null => ref(v) ?? ref(obj(v).id);

/** Brand and last 4 of a payment method's card; nothing else of it is read. */
function cardOf(paymentMethod: unknown): { brand: string; last4: string } | null {
  const card = obj(obj(paymentMethod).card);
  const brand = str(card.brand)?.toLowerCase() ?? null;
  const last4 = str(card.last4);
  if (!brand || !/^[a-z0-9_ ]{1,40}$/.test(brand) || !last4 || !/^[0-9]{4}$/.test(last4)) return null;
  return { brand, last4 };
}

function failureCodeOf(error: unknown): string | null {
  const e = obj(error);
  const code = ref(e.decline_code) ?? ref(e.code) ?? (str(e.type) ? 'payment_failed' : null);
  // auto_topups.failure_code holds 100 characters; Stripe's codes are far shorter.
  return code ? code.slice(0, 100) : null;
}

/** A PaymentIntent as a charge outcome: succeeded, still pending, or failed with its reason. */
function outcomeOf(pi: Record<string, unknown>, error?: unknown): ChargeOutcome {
  const status = str(pi.status);
  const failed = error !== undefined || status === 'requires_payment_method' || status === 'canceled';
  return {
    paymentIntentId: ref(pi.id),
    status: status === 'succeeded' ? 'succeeded' : failed || status === 'requires_action' ? 'failed' : 'pending',
    amountMicros: centsToMicros(pi.amount),
    currency: str(pi.currency)?.toLowerCase() ?? null,
    failureCode: failed
      ? (failureCodeOf(error ?? pi.last_payment_error) ?? 'payment_failed')
      : status === 'requires_action'
        ? 'authentication_required'
        : null,
  };
}

function invalidSignature(why: string): AppError {
  return new AppError('invalid_signature', `The webhook signature does not verify: ${why}.`);
}

/**
 * Checks a `Stripe-Signature` header (`t=<unix seconds>,v1=<hex>,v1=<hex>...`): HMAC-SHA256
 * of `<t>.<raw body>` under any of the secrets, and `t` within the tolerance of `now`.
 */
export function verifyStripeSignature(rawBody: Buffer, header: string | undefined, secrets: string[], now: Date) {
  if (!header) throw invalidSignature('no Stripe-Signature header');
  let t: number | null = null;
  const signatures: string[] = [];
  for (const part of header.split(',')) {
    const [k, v] = part.split('=', 2).map((x) => x.trim());
    if (k === 't' && v && /^\d{1,12}$/.test(v)) t = Number(v);
    if (k === 'v1' && v && /^[0-9a-f]{64}$/.test(v)) signatures.push(v);
  }
  if (t === null || signatures.length === 0) throw invalidSignature('no timestamp or v1 signature');
  if (Math.abs(now.getTime() / 1000 - t) > WEBHOOK_TOLERANCE_SECONDS) {
    throw invalidSignature(`its timestamp is more than ${WEBHOOK_TOLERANCE_SECONDS} s from now`);
  }
  const signed = Buffer.concat([Buffer.from(`${t}.`), rawBody]);
  for (const secret of secrets) {
    const expected = createHmac('sha256', secret).update(signed).digest();
    for (const sig of signatures) {
      const given = Buffer.from(sig, 'hex');
      if (given.length === expected.length && timingSafeEqual(given, expected)) return;
    }
  }
  throw invalidSignature('no signature matches');
}

function readEvent(raw: unknown): ProcessorEvent {
  const e = raw as { id?: unknown; type?: unknown; data?: { object?: Record<string, unknown> } };
  const id = str(e?.id);
  const type = str(e?.type);
  if (!id || !type) throw new AppError('bad_request', 'The webhook body is not an event.');
  if (type.startsWith('payment_intent.')) {
    const pi = obj(e.data?.object);
    const metadata = obj(pi.metadata);
    return {
      id,
      type,
      paymentIntent: {
        id: ref(pi.id) ?? '',
        status: str(pi.status),
        amountMicros: centsToMicros(pi.amount),
        currency: str(pi.currency)?.toLowerCase() ?? null,
        customerId: idOf(pi.customer),
        workspaceId: ref(metadata.workspace_id),
        autoTopupId: ref(metadata.auto_topup_id),
        paymentId: ref(metadata.payment_id),
        failureCode: pi.last_payment_error ? failureCodeOf(pi.last_payment_error) : null,
      },
    };
  }
  if (!type.startsWith('checkout.session.')) return { id, type };
  const o = e.data?.object ?? {};
  const metadata = (o.metadata ?? {}) as Record<string, unknown>;
  const details = (o.customer_details ?? {}) as { address?: { postal_code?: unknown } };
  const cents = typeof o.amount_total === 'number' && Number.isSafeInteger(o.amount_total) ? o.amount_total : null;
  return {
    id,
    type,
    checkout: {
      id: str(o.id) ?? '',
      paid: o.payment_status === 'paid',
      amountMicros: cents === null ? null : cents * MICROS_PER_CENT,
      currency: str(o.currency)?.toLowerCase() ?? null,
      workspaceId: str(metadata.workspace_id),
      paymentId: str(metadata.payment_id) ?? str(o.client_reference_id),
      postalCode: str(details.address?.postal_code)?.slice(0, 20) ?? null,
    },
  };
}

/**
 * Stripe over its HTTP API: Checkout sessions (form-encoded), off-session PaymentIntents
 * for auto top-up, and signed webhooks.
 */
export function stripeProcessor(opts: StripeOptions): PaymentProcessor {
  const base = opts.apiUrl.replace(/\/+$/, '');

  /** One call to Stripe; the status and parsed body, or `unavailable` when it cannot be reached. */
  async function call(
    method: 'GET' | 'POST',
    path: string,
    form?: URLSearchParams,
    idempotencyKey?: string,
  ): Promise<{ status: number; body: Record<string, unknown> }> {
    let res: Response;
    try {
      res = await fetch(`${base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${opts.secretKey}`,
          ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
          ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}),
        },
        ...(form ? { body: form } : {}),
        signal: AbortSignal.timeout(15_000),
      });
    } catch {
      throw new AppError('unavailable', 'The payment processor could not be reached; try again.');
    }
    return { status: res.status, body: obj(await res.json().catch(() => null)) };
  }

  return {
    name: 'stripe',
    async createCheckout(input) {
      const form = new URLSearchParams({
        mode: 'payment',
        success_url: input.successUrl,
        cancel_url: input.cancelUrl,
        client_reference_id: input.paymentId,
        'metadata[workspace_id]': input.workspaceId,
        'metadata[payment_id]': input.paymentId,
        'line_items[0][quantity]': '1',
        'line_items[0][price_data][currency]': 'usd',
        'line_items[0][price_data][unit_amount]': String(input.amountMicros / MICROS_PER_CENT),
        'line_items[0][price_data][product_data][name]': 'Berth credits',
      });
      // The payment carries the checkout's references too, so its own events are recognised.
      form.set('payment_intent_data[metadata][workspace_id]', input.workspaceId);
      form.set('payment_intent_data[metadata][payment_id]', input.paymentId);
      if (input.saveCard) {
        form.set('customer_creation', 'always');
        form.set('payment_intent_data[setup_future_usage]', 'off_session');
      }
      if (input.customerEmail) form.set('customer_email', input.customerEmail);
      const { status, body } = await call('POST', '/v1/checkout/sessions', form, `berth-${input.paymentId}`);
      // The processor's error bodies are not relayed.
      if (status !== 200) throw new AppError('unavailable', `The payment processor refused the checkout (${status}).`);
      const id = str(body.id);
      const url = str(body.url);
      if (!id || !url) throw new AppError('unavailable', 'The payment processor answered without a checkout page.');
      return { id, url };
    },
    async retrieveCheckout(checkoutId) {
      const { status, body } = await call(
        'GET',
        `/v1/checkout/sessions/${encodeURIComponent(checkoutId)}?expand[]=payment_intent.payment_method`,
      );
      if (status === 404) throw new AppError('unknown_payment', 'The processor has no such checkout.');
      if (status !== 200 || ref(body.id) !== checkoutId) {
        throw new AppError('unavailable', `The payment processor did not show the checkout (${status}).`);
      }
      const pi = obj(body.payment_intent);
      const details = obj(body.customer_details);
      return {
        id: checkoutId,
        customerId: idOf(body.customer),
        paymentMethodId: idOf(pi.payment_method),
        savedForOffSession: pi.setup_future_usage === 'off_session',
        card: cardOf(pi.payment_method),
        postalCode: str(obj(details.address).postal_code)?.slice(0, 20) ?? null,
      };
    },
    async chargeSavedCard(input) {
      if (!Number.isSafeInteger(input.amountMicros) || input.amountMicros % MICROS_PER_CENT !== 0) {
        throw new AppError('invalid_amount', 'A card charge is a whole number of cents.');
      }
      const form = new URLSearchParams({
        amount: String(input.amountMicros / MICROS_PER_CENT),
        currency: input.currency,
        customer: input.customerId,
        payment_method: input.paymentMethodId,
        confirm: 'true',
        off_session: 'true',
        description: 'Berth credits (auto top-up)',
        'metadata[workspace_id]': input.workspaceId,
        'metadata[auto_topup_id]': input.chargeId,
      });
      const { status, body } = await call('POST', '/v1/payment_intents', form, input.idempotencyKey);
      if (status === 200) return outcomeOf(body);
      const error = obj(body.error);
      // A decline (or a card that needs its holder) answers 402 card_error with the failed PaymentIntent.
      if (status === 402 && error.type === 'card_error') return outcomeOf(obj(error.payment_intent), error);
      // The processor's error bodies are not relayed.
      throw new AppError('unavailable', `The payment processor refused the charge (${status}).`);
    },
    async retrieveCharge(paymentIntentId) {
      const { status, body } = await call('GET', `/v1/payment_intents/${encodeURIComponent(paymentIntentId)}`);
      if (status !== 200)
        throw new AppError('unavailable', `The payment processor did not show the charge (${status}).`);
      return outcomeOf(body);
    },
    parseWebhook(rawBody, header, now) {
      verifyStripeSignature(rawBody, header, opts.webhookSecrets, now);
      let parsed: unknown;
      try {
        parsed = JSON.parse(rawBody.toString('utf8'));
      } catch {
        throw new AppError('invalid_json', 'The webhook body is not JSON.');
      }
      return readEvent(parsed);
    },
  };
}
