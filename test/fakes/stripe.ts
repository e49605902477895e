import { createHmac, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A stand-in for Stripe's HTTP API on loopback, speaking what Berth uses, with Stripe's field
 * names (`Authorization: Bearer sk_...`, form-encoded bodies, `Idempotency-Key`):
 *
 * - `POST /v1/checkout/sessions` (with `customer_creation` and
 *   `payment_intent_data[setup_future_usage]` to save the card for off-session use);
 * - `GET /v1/checkout/sessions/:id?expand[]=payment_intent.payment_method`;
 * - `POST /v1/payment_intents` (`confirm=true&off_session=true` on a saved card: 200 with the
 *   PaymentIntent, or 402 `card_error` with it when the card declines) and
 *   `GET /v1/payment_intents/:id`.
 *
 * A card is entered on the checkout page (`completedEvent`): the fake holds its full number
 * and expiry, as Stripe does; its API shows what Stripe shows (brand, last 4, expiry,
 * fingerprint). Event builders make the events Stripe would send, and `signature` the
 * `Stripe-Signature` header it signs webhooks with (HMAC-SHA256 of `<t>.<body>`).
 */

/** A card as the payer types it. `decline` makes charges fail with that decline code. */
export type FakeCard = { number: string; brand: string; expMonth: number; expYear: number; decline?: string };

/** Stripe's test cards: one that pays, one that saves but whose later charges are declined. */
export const TEST_CARDS = {
  visa: { number: '4242424242424242', brand: 'visa', expMonth: 7, expYear: 2031 },
  mastercard: { number: '5555555555554444', brand: 'mastercard', expMonth: 9, expYear: 2032 },
  /** Attaches to a customer, but charging it fails (Stripe's 4000000000000341). */
  declinesLater: { number: '4000000000000341', brand: 'visa', expMonth: 11, expYear: 2033, decline: 'generic_decline' },
  insufficientFunds: {
    number: '4000000000009995',
    brand: 'visa',
    expMonth: 3,
    expYear: 2030,
    decline: 'insufficient_funds',
  },
} satisfies Record<string, FakeCard>;

export type FakeStripeSession = {
  id: string;
  object: 'checkout.session';
  url: string;
  mode: string;
  amount_total: number;
  currency: string;
  client_reference_id: string | null;
  metadata: Record<string, string>;
  payment_status: 'unpaid' | 'paid';
  status: 'open' | 'complete' | 'expired';
  customer: string | null;
  customer_creation: 'always' | 'if_required' | null;
  customer_details: Record<string, unknown> | null;
  payment_intent: string | null;
};

export type FakePaymentMethod = {
  id: string;
  customer: string | null;
  card: FakeCard;
  fingerprint: string;
  postalCode: string;
};

export type FakePaymentIntent = {
  id: string;
  object: 'payment_intent';
  amount: number;
  amount_received: number;
  currency: string;
  customer: string | null;
  payment_method: string | null;
  setup_future_usage: 'off_session' | 'on_session' | null;
  off_session: boolean;
  metadata: Record<string, string>;
  status: 'processing' | 'succeeded' | 'requires_payment_method' | 'canceled';
  last_payment_error: Record<string, unknown> | null;
  created: number;
  livemode: false;
};

export type FakeRequest = { method: string; path: string; form: URLSearchParams; idempotencyKey: string | null };

export type FakeStripe = {
  url: string;
  secretKey: string;
  sessions: Map<string, FakeStripeSession>;
  paymentMethods: Map<string, FakePaymentMethod>;
  paymentIntents: Map<string, FakePaymentIntent>;
  /** Every authorised request, in order. */
  requests: FakeRequest[];
  /** Requests that came without the secret key (answered 401). */
  unauthorised: number;
  /** When set, off-session charges answer `processing` and are settled by an event later. */
  asyncCharges: boolean;
  /** When set, `POST /v1/payment_intents` answers 500 (an outage). */
  failCharges: boolean;
  /** The payer pays on the checkout page with `card`: returns `checkout.session.completed`. */
  completedEvent(sessionId: string, extra?: { postalCode?: string; card?: FakeCard }): string;
  expiredEvent(sessionId: string): string;
  /** Settles a processing PaymentIntent: `payment_intent.succeeded`. */
  intentSucceededEvent(paymentIntentId: string): string;
  /** Fails a PaymentIntent: `payment_intent.payment_failed`. */
  intentFailedEvent(paymentIntentId: string, declineCode?: string): string;
  close(): Promise<void>;
};

/** The header Stripe sends with a webhook `body`, signed with `secret` at `at` (unix seconds). */
export function signature(body: string, secret: string, at = Math.floor(Date.now() / 1000)): string {
  const v1 = createHmac('sha256', secret).update(`${at}.${body}`).digest('hex');
  return `t=${at},v1=${v1}`;
}

async function readBody(req: IncomingMessage): Promise<string> {
  let data = '';
  for await (const chunk of req) data += chunk;
  return data;
}

/** An event as Stripe sends it (`data.object` is the object's state at that moment). */
export function stripeEvent(type: string, object: unknown): string {
  return JSON.stringify({
    id: `evt_${randomBytes(12).toString('hex')}`,
    object: 'event',
    api_version: '2025-03-31.basil',
    type,
    created: Math.floor(Date.now() / 1000),
    livemode: false,
    data: { object },
  });
}

const rid = (prefix: string) => `${prefix}_${randomBytes(12).toString('hex')}`;

function bracketed(form: URLSearchParams, prefix: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = new RegExp(`^${prefix.replace(/[[\]]/g, '\\$&')}\\[(.+)\\]$`);
  for (const [k, v] of form) {
    const m = re.exec(k);
    if (m?.[1]) out[m[1]] = v;
  }
  return out;
}

export async function startFakeStripe(): Promise<FakeStripe> {
  const secretKey = `sk_test_${randomBytes(12).toString('hex')}`;
  const sessions = new Map<string, FakeStripeSession>();
  const paymentMethods = new Map<string, FakePaymentMethod>();
  const paymentIntents = new Map<string, FakePaymentIntent>();
  const customers = new Map<string, { id: string; paymentMethods: string[] }>();
  /** Stripe keeps a request's answer under its Idempotency-Key (and the parameters it came with). */
  const idempotent = new Map<string, { params: string; status: number; body: unknown }>();
  /** Per session: what Checkout will do with its payment when it completes. */
  const intentData = new Map<string, { setupFutureUsage: string | null; metadata: Record<string, string> }>();
  const fake = {
    secretKey,
    sessions,
    paymentMethods,
    paymentIntents,
    requests: [],
    unauthorised: 0,
    asyncCharges: false,
    failCharges: false,
  } as unknown as FakeStripe;

  /** A PaymentMethod as Stripe's API shows it: never the full number. */
  const paymentMethodView = (pm: FakePaymentMethod) => ({
    id: pm.id,
    object: 'payment_method',
    type: 'card',
    customer: pm.customer,
    billing_details: {
      address: { city: null, country: 'DE', line1: null, line2: null, postal_code: pm.postalCode, state: null },
      email: 'payer@example.com',
      name: 'Pat Payer',
      phone: null,
    },
    card: {
      brand: pm.card.brand,
      checks: { address_line1_check: null, address_postal_code_check: 'pass', cvc_check: 'pass' },
      country: 'US',
      display_brand: pm.card.brand,
      exp_month: pm.card.expMonth,
      exp_year: pm.card.expYear,
      fingerprint: pm.fingerprint,
      funding: 'credit',
      last4: pm.card.number.slice(-4),
      networks: { available: [pm.card.brand], preferred: null },
      wallet: null,
    },
    created: Math.floor(Date.now() / 1000),
    livemode: false,
  });

  const declineError = (pm: FakePaymentMethod, declineCode: string) => ({
    type: 'card_error',
    code: 'card_declined',
    decline_code: declineCode,
    message: 'Your card was declined.',
    charge: rid('ch'),
    doc_url: 'https://stripe.com/docs/error-codes/card-declined',
    payment_method: paymentMethodView(pm),
  });

  function chargeSavedCard(form: URLSearchParams): { status: number; body: unknown } {
    if (fake.failCharges) return { status: 500, body: { error: { type: 'api_error', message: 'An error occurred' } } };
    const amount = Number(form.get('amount'));
    const pm = paymentMethods.get(form.get('payment_method') ?? '');
    const customer = form.get('customer');
    if (!Number.isInteger(amount) || amount < 50 || !form.get('currency')) {
      return { status: 400, body: { error: { type: 'invalid_request_error', message: 'Invalid amount or currency' } } };
    }
    if (!pm || !customer || pm.customer !== customer) {
      return {
        status: 400,
        body: { error: { type: 'invalid_request_error', code: 'resource_missing', message: 'No such PaymentMethod' } },
      };
    }
    if (form.get('confirm') !== 'true' || form.get('off_session') !== 'true') {
      return {
        status: 400,
        body: { error: { type: 'invalid_request_error', message: 'Expected an off-session confirm' } },
      };
    }
    const pi: FakePaymentIntent = {
      id: rid('pi'),
      object: 'payment_intent',
      amount,
      amount_received: 0,
      currency: form.get('currency') ?? 'usd',
      customer,
      payment_method: pm.id,
      setup_future_usage: null,
      off_session: true,
      metadata: bracketed(form, 'metadata'),
      status: 'processing',
      last_payment_error: null,
      created: Math.floor(Date.now() / 1000),
      livemode: false,
    };
    paymentIntents.set(pi.id, pi);
    if (pm.card.decline) {
      const error = declineError(pm, pm.card.decline);
      pi.status = 'requires_payment_method';
      pi.last_payment_error = error;
      return { status: 402, body: { error: { ...error, payment_intent: { ...pi } } } };
    }
    if (!fake.asyncCharges) {
      pi.status = 'succeeded';
      pi.amount_received = amount;
    }
    return { status: 200, body: { ...pi } };
  }

  const server: Server = createServer(async (req, res) => {
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.headers.authorization !== `Bearer ${secretKey}`) {
      fake.unauthorised++;
      return json(401, { error: { type: 'invalid_request_error', message: 'Invalid API Key provided' } });
    }
    const url = new URL(req.url ?? '/', 'http://stripe.test');
    const raw = await readBody(req);
    const form = new URLSearchParams(raw);
    const key = typeof req.headers['idempotency-key'] === 'string' ? req.headers['idempotency-key'] : null;
    fake.requests.push({ method: req.method ?? '', path: url.pathname, form, idempotencyKey: key });
    const notFound = () =>
      json(404, { error: { type: 'invalid_request_error', code: 'resource_missing', message: 'No such object' } });

    if (req.method === 'POST' && (url.pathname === '/v1/checkout/sessions' || url.pathname === '/v1/payment_intents')) {
      const seen = key ? idempotent.get(key) : undefined;
      if (seen) {
        if (seen.params !== `${url.pathname}?${raw}`) {
          return json(400, {
            error: { type: 'idempotency_error', message: 'Keys for idempotent requests can only be used once' },
          });
        }
        return json(seen.status, seen.body);
      }
      const answer = url.pathname === '/v1/payment_intents' ? chargeSavedCard(form) : createSession(form);
      // Stripe does not keep 5xx answers under the key: a retry runs again.
      if (key && answer.status < 500) idempotent.set(key, { params: `${url.pathname}?${raw}`, ...answer });
      return json(answer.status, answer.body);
    }
    if (req.method === 'GET') {
      const session = /^\/v1\/checkout\/sessions\/([^/]+)$/.exec(url.pathname);
      if (session?.[1]) {
        const s = sessions.get(decodeURIComponent(session[1]));
        if (!s) return notFound();
        const expand = url.searchParams.getAll('expand[]');
        const pi = s.payment_intent ? paymentIntents.get(s.payment_intent) : undefined;
        let paymentIntent: unknown = s.payment_intent;
        if (pi && (expand.includes('payment_intent') || expand.includes('payment_intent.payment_method'))) {
          const pm = pi.payment_method ? paymentMethods.get(pi.payment_method) : undefined;
          paymentIntent = {
            ...pi,
            payment_method:
              pm && expand.includes('payment_intent.payment_method') ? paymentMethodView(pm) : pi.payment_method,
          };
        }
        return json(200, { ...s, payment_intent: paymentIntent });
      }
      const intent = /^\/v1\/payment_intents\/([^/]+)$/.exec(url.pathname);
      if (intent?.[1]) {
        const pi = paymentIntents.get(decodeURIComponent(intent[1]));
        return pi ? json(200, pi) : notFound();
      }
    }
    return json(404, { error: { type: 'invalid_request_error', message: 'Unrecognized request URL' } });
  });

  function createSession(form: URLSearchParams): { status: number; body: unknown } {
    const amount = Number(form.get('line_items[0][price_data][unit_amount]'));
    const quantity = Number(form.get('line_items[0][quantity]') ?? '1');
    if (!Number.isInteger(amount) || amount < 50 || form.get('mode') !== 'payment' || !form.get('success_url')) {
      return {
        status: 400,
        body: { error: { type: 'invalid_request_error', message: 'Invalid checkout parameters' } },
      };
    }
    const creation = form.get('customer_creation');
    const id = rid('cs_test');
    const session: FakeStripeSession = {
      id,
      object: 'checkout.session',
      url: `https://checkout.stripe.test/c/pay/${id}`,
      mode: 'payment',
      amount_total: amount * quantity,
      currency: form.get('line_items[0][price_data][currency]') ?? 'usd',
      client_reference_id: form.get('client_reference_id'),
      metadata: bracketed(form, 'metadata'),
      payment_status: 'unpaid',
      status: 'open',
      customer: null,
      customer_creation: creation === 'always' || creation === 'if_required' ? creation : null,
      customer_details: null,
      payment_intent: null,
    };
    sessions.set(id, session);
    intentData.set(id, {
      setupFutureUsage: form.get('payment_intent_data[setup_future_usage]'),
      metadata: bracketed(form, 'payment_intent_data[metadata]'),
    });
    return { status: 200, body: session };
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  fake.completedEvent = (sessionId, extra = {}) => {
    const s = sessions.get(sessionId);
    if (!s) throw new Error(`no session ${sessionId}`);
    const data = intentData.get(sessionId) ?? { setupFutureUsage: null, metadata: {} };
    const card = extra.card ?? TEST_CARDS.visa;
    const postalCode = extra.postalCode ?? '10115';
    // Checkout makes a customer when asked to, or to save the card for later.
    const customer: { id: string; paymentMethods: string[] } | null =
      s.customer_creation === 'always' || data.setupFutureUsage ? { id: rid('cus'), paymentMethods: [] } : null;
    if (customer) customers.set(customer.id, customer);
    const pm: FakePaymentMethod = {
      id: rid('pm'),
      customer: customer && data.setupFutureUsage ? customer.id : null,
      card,
      fingerprint: randomBytes(8).toString('hex'),
      postalCode,
    };
    paymentMethods.set(pm.id, pm);
    if (pm.customer) customer?.paymentMethods.push(pm.id);
    const pi: FakePaymentIntent = {
      id: rid('pi'),
      object: 'payment_intent',
      amount: s.amount_total,
      amount_received: s.amount_total,
      currency: s.currency,
      customer: customer?.id ?? null,
      payment_method: pm.id,
      setup_future_usage: data.setupFutureUsage === 'off_session' ? 'off_session' : null,
      off_session: false,
      metadata: data.metadata,
      status: 'succeeded',
      last_payment_error: null,
      created: Math.floor(Date.now() / 1000),
      livemode: false,
    };
    paymentIntents.set(pi.id, pi);
    s.payment_status = 'paid';
    s.status = 'complete';
    s.customer = customer?.id ?? null;
    s.payment_intent = pi.id;
    s.customer_details = {
      email: 'payer@example.com',
      name: 'Pat Payer',
      address: {
        city: 'Berlin',
        country: 'DE',
        line1: 'Invalidenstr. 1',
        line2: null,
        postal_code: postalCode,
        state: null,
      },
      phone: null,
      tax_exempt: 'none',
    };
    return stripeEvent('checkout.session.completed', { ...s });
  };
  fake.expiredEvent = (sessionId) => {
    const s = sessions.get(sessionId);
    if (!s) throw new Error(`no session ${sessionId}`);
    s.status = 'expired';
    return stripeEvent('checkout.session.expired', { ...s });
  };
  fake.intentSucceededEvent = (paymentIntentId) => {
    const pi = paymentIntents.get(paymentIntentId);
    if (!pi) throw new Error(`no payment intent ${paymentIntentId}`);
    pi.status = 'succeeded';
    pi.amount_received = pi.amount;
    pi.last_payment_error = null;
    return stripeEvent('payment_intent.succeeded', { ...pi });
  };
  fake.intentFailedEvent = (paymentIntentId, declineCode = 'generic_decline') => {
    const pi = paymentIntents.get(paymentIntentId);
    if (!pi) throw new Error(`no payment intent ${paymentIntentId}`);
    const pm = pi.payment_method ? paymentMethods.get(pi.payment_method) : undefined;
    if (!pm) throw new Error(`no payment method on ${paymentIntentId}`);
    pi.status = 'requires_payment_method';
    pi.last_payment_error = declineError(pm, declineCode);
    return stripeEvent('payment_intent.payment_failed', { ...pi });
  };
  fake.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return fake;
}
