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
}

export type CheckoutInput = {
  paymentId: string;
  workspaceId: string;
  amountMicros: number;
  successUrl: string;
  cancelUrl: string;
  customerEmail?: string | undefined;
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
      currency: str(o.currency),
      workspaceId: str(metadata.workspace_id),
      paymentId: str(metadata.payment_id) ?? str(o.client_reference_id),
      postalCode: str(details.address?.postal_code)?.slice(0, 20) ?? null,
    },
  };
}

/** Stripe over its HTTP API: Checkout sessions (form-encoded) and signed webhooks. */
export function stripeProcessor(opts: StripeOptions): PaymentProcessor {
  const base = opts.apiUrl.replace(/\/+$/, '');
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
      if (input.customerEmail) form.set('customer_email', input.customerEmail);
      let res: Response;
      try {
        res = await fetch(`${base}/v1/checkout/sessions`, {
          method: 'POST',
          headers: {
            authorization: `Bearer ${opts.secretKey}`,
            'content-type': 'application/x-www-form-urlencoded',
            'idempotency-key': `berth-${input.paymentId}`,
          },
          body: form,
          signal: AbortSignal.timeout(15_000),
        });
      } catch {
        throw new AppError('unavailable', 'The payment processor could not be reached; try again.');
      }
      // The processor's error bodies are not relayed.
      if (!res.ok) throw new AppError('unavailable', `The payment processor refused the checkout (${res.status}).`);
      const session = (await res.json().catch(() => null)) as { id?: unknown; url?: unknown } | null;
      const id = str(session?.id);
      const url = str(session?.url);
      if (!id || !url) throw new AppError('unavailable', 'The payment processor answered without a checkout page.');
      return { id, url };
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
