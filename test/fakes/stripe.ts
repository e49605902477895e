import { createHmac, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A stand-in for Stripe's HTTP API on loopback, speaking what Berth uses: `POST
 * /v1/checkout/sessions` (form-encoded, `Authorization: Bearer sk_...`), answering a
 * session like Stripe's. `completedEvent` builds the `checkout.session.completed` event
 * Stripe would send for a session, and `signature` the `Stripe-Signature` header it signs
 * webhooks with (HMAC-SHA256 of `<t>.<body>`).
 */
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
};

export type FakeStripe = {
  url: string;
  secretKey: string;
  sessions: Map<string, FakeStripeSession>;
  /** Requests that came without the secret key (answered 401). */
  unauthorised: number;
  completedEvent(sessionId: string, extra?: { postalCode?: string }): string;
  expiredEvent(sessionId: string): string;
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

function event(type: string, object: unknown): string {
  return JSON.stringify({
    id: `evt_${randomBytes(12).toString('hex')}`,
    object: 'event',
    type,
    created: Math.floor(Date.now() / 1000),
    data: { object },
  });
}

export async function startFakeStripe(): Promise<FakeStripe> {
  const secretKey = `sk_test_${randomBytes(12).toString('hex')}`;
  const sessions = new Map<string, FakeStripeSession>();
  const fake = { secretKey, sessions, unauthorised: 0 } as FakeStripe;
  const server: Server = createServer(async (req, res) => {
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.headers.authorization !== `Bearer ${secretKey}`) {
      fake.unauthorised++;
      return json(401, { error: { type: 'invalid_request_error', message: 'Invalid API Key provided' } });
    }
    if (req.method !== 'POST' || req.url !== '/v1/checkout/sessions') {
      return json(404, { error: { type: 'invalid_request_error', message: 'Unrecognized request URL' } });
    }
    const form = new URLSearchParams(await readBody(req));
    const amount = Number(form.get('line_items[0][price_data][unit_amount]'));
    const quantity = Number(form.get('line_items[0][quantity]') ?? '1');
    if (!Number.isInteger(amount) || amount < 50 || form.get('mode') !== 'payment' || !form.get('success_url')) {
      return json(400, { error: { type: 'invalid_request_error', message: 'Invalid checkout parameters' } });
    }
    const metadata: Record<string, string> = {};
    for (const [k, v] of form) {
      const m = /^metadata\[(.+)\]$/.exec(k);
      if (m?.[1]) metadata[m[1]] = v;
    }
    const id = `cs_test_${randomBytes(12).toString('hex')}`;
    const session: FakeStripeSession = {
      id,
      object: 'checkout.session',
      url: `https://checkout.stripe.test/c/pay/${id}`,
      mode: 'payment',
      amount_total: amount * quantity,
      currency: form.get('line_items[0][price_data][currency]') ?? 'usd',
      client_reference_id: form.get('client_reference_id'),
      metadata,
      payment_status: 'unpaid',
      status: 'open',
    };
    sessions.set(id, session);
    json(200, session);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  fake.completedEvent = (sessionId, extra = {}) => {
    const s = sessions.get(sessionId);
    if (!s) throw new Error(`no session ${sessionId}`);
    s.payment_status = 'paid';
    s.status = 'complete';
    return event('checkout.session.completed', {
      ...s,
      customer_details: { email: 'payer@example.com', address: { postal_code: extra.postalCode ?? '10115' } },
    });
  };
  fake.expiredEvent = (sessionId) => {
    const s = sessions.get(sessionId);
    if (!s) throw new Error(`no session ${sessionId}`);
    s.status = 'expired';
    return event('checkout.session.expired', s);
  };
  fake.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return fake;
}
