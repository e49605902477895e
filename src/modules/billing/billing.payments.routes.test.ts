import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type FakeStripe,
  startFakeStripe,
  stripeEvent,
  signature as stripeSignature,
  TEST_CARDS,
} from '../../../test/fakes/stripe.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { fullDatabaseText } from '../../../test/helpers/dump.ts';
import { gatewayWorkspace, listen } from '../../../test/helpers/gateway.ts';
import type { SignedInClient } from '../../../test/helpers/identity.ts';

/**
 * Card top-ups against a fake that speaks Stripe's HTTP API: Checkout sessions, then
 * webhooks correctly signed, badly signed, stale, replayed, signed with a rotated secret,
 * for checkouts Berth never started and in currencies it does not keep. Of the card, Berth
 * keeps the brand, last 4 and postal code Stripe shows, and nothing else.
 */

const OLD_SECRET = 'whsec_old_0123456789abcdef';
const NEW_SECRET = 'whsec_new_fedcba9876543210';

let app: TestApp;
let stripe: FakeStripe;
let url: string;

beforeAll(async () => {
  stripe = await startFakeStripe();
  app = await createTestApp({
    config: {
      BERTH_STRIPE_SECRET_KEY: stripe.secretKey,
      BERTH_STRIPE_WEBHOOK_SECRETS: `${NEW_SECRET},${OLD_SECRET}`,
      BERTH_STRIPE_API_URL: stripe.url,
      BERTH_FREE_CREDITS_USD: '0',
    },
  });
  url = await listen(app);
});
afterAll(async () => {
  await app?.close();
  await stripe?.close();
});

/** Signed as Stripe would, at Berth's (test) time unless told otherwise. */
function signature(body: string, secret: string, at = Math.floor(app.clock.now().getTime() / 1000)): string {
  return stripeSignature(body, secret, at);
}

function deliver(body: string, sig: string | null) {
  return fetch(`${url}/api/billing/webhooks/stripe`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(sig === null ? {} : { 'stripe-signature': sig }) },
    body,
  });
}

async function available(owner: SignedInClient, workspaceId: string): Promise<number> {
  const res = await owner.get<{ availableMicros: number }>(`/api/workspaces/${workspaceId}/billing/balance`);
  return res.body.availableMicros;
}

async function checkout(amountMicros = 12_500_000) {
  const w = await gatewayWorkspace(app);
  const res = await w.owner.post<{ paymentId: string; url: string }>(
    `/api/workspaces/${w.workspaceId}/billing/checkout`,
    {
      amountMicros,
    },
  );
  expect(res.status).toBe(201);
  const session = [...stripe.sessions.values()].find((s) => s.metadata.payment_id === res.body.paymentId);
  if (!session) throw new Error('no session at the processor');
  return { w, paymentId: res.body.paymentId, session, checkoutUrl: res.body.url };
}

describe('happy', () => {
  it('tops up once per paid checkout, however often its event is delivered', async () => {
    const { w, session, checkoutUrl } = await checkout();
    expect(checkoutUrl).toBe(session.url);
    expect(session).toMatchObject({ amount_total: 1250, currency: 'usd', metadata: { workspace_id: w.workspaceId } });
    const body = stripe.completedEvent(session.id);
    const first = await deliver(body, signature(body, NEW_SECRET));
    expect(first.status).toBe(200);
    expect(await first.json()).toEqual({ applied: true });
    expect(await available(w.owner, w.workspaceId)).toBe(12_500_000);
    // Stripe redelivers; several at once, too.
    const again = await Promise.all(Array.from({ length: 5 }, () => deliver(body, signature(body, NEW_SECRET))));
    for (const r of again) expect(await r.json()).toEqual({ applied: false });
    expect(await available(w.owner, w.workspaceId)).toBe(12_500_000);
    const entries = await w.owner.get<{ data: Array<{ kind: string; idempotencyKey: string }> }>(
      `/api/workspaces/${w.workspaceId}/billing/entries`,
    );
    expect(entries.body.data).toEqual([
      expect.objectContaining({ kind: 'topup', idempotencyKey: `stripe:${session.id}` }),
    ]);
    // What Berth keeps of the payment: the processor's references, brand, last 4 and postal code.
    const rows = await app.db.system(async (tx) => {
      const res = (await tx.execute(
        sql`select status, amount_micros::int as amount, postal_code, transaction_id, card_brand, card_last4 from payments where checkout_id = ${session.id}`,
      )) as unknown as { rows: Array<Record<string, unknown>> };
      return res.rows;
    });
    expect(rows).toEqual([
      {
        status: 'paid',
        amount: 12_500_000,
        postal_code: '10115',
        transaction_id: expect.stringMatching(/^ltx_/),
        card_brand: 'visa',
        card_last4: '4242',
      },
    ]);
    // Read from Stripe's API as Stripe shows it: the session with its payment's card expanded.
    const reads = stripe.requests.filter((r) => r.method === 'GET' && r.path === `/v1/checkout/sessions/${session.id}`);
    expect(reads.length).toBeGreaterThanOrEqual(1);
    // Its own payment's event (payment_intent.succeeded) is acknowledged and tops up nothing more.
    const pi = stripe.sessions.get(session.id)?.payment_intent ?? '';
    const piEvent = stripeEvent('payment_intent.succeeded', stripe.paymentIntents.get(pi));
    const acked = await deliver(piEvent, signature(piEvent, NEW_SECRET));
    expect(await acked.json()).toEqual({ applied: false });
    expect(await available(w.owner, w.workspaceId)).toBe(12_500_000);
  });

  it('keeps of the card only its brand, last 4 and postal code: no number, expiry or fingerprint anywhere', async () => {
    const { w, session } = await checkout(3_000_000);
    const card = TEST_CARDS.mastercard;
    const body = stripe.completedEvent(session.id, { card, postalCode: '75008' });
    expect(await (await deliver(body, signature(body, NEW_SECRET))).json()).toEqual({ applied: true });
    const pm = [...stripe.paymentMethods.values()].find((m) => m.card === card && m.postalCode === '75008');
    if (!pm) throw new Error('the fake kept no payment method');
    const dump = await fullDatabaseText(app);
    expect(dump).toContain('mastercard');
    expect(dump).toContain('75008');
    const logs = app.logs.join('\n');
    const expiry = String(card.expMonth).padStart(2, '0');
    for (const leak of [
      card.number,
      pm.fingerprint,
      'exp_month',
      'exp_year',
      `${expiry}/${card.expYear}`,
      `${expiry}/${String(card.expYear).slice(2)}`,
      `${card.expYear}-${expiry}`,
      'Pat Payer',
      'Invalidenstr',
    ]) {
      expect(dump.includes(leak), `database holds ${leak}`).toBe(false);
      expect(logs.includes(leak), `logs hold ${leak}`).toBe(false);
    }
    const balance = await w.owner.get<{ availableMicros: number }>(`/api/workspaces/${w.workspaceId}/billing/balance`);
    expect(balance.body.availableMicros).toBe(3_000_000);
  });

  it('accepts the previous secret during a rotation, and marks expired checkouts', async () => {
    const { w, session } = await checkout(5_000_000);
    const body = stripe.completedEvent(session.id);
    const res = await deliver(body, signature(body, OLD_SECRET));
    expect(await res.json()).toEqual({ applied: true });
    expect(await available(w.owner, w.workspaceId)).toBe(5_000_000);
    const other = await checkout(2_000_000);
    const expired = stripe.expiredEvent(other.session.id);
    expect(await (await deliver(expired, signature(expired, NEW_SECRET))).json()).toEqual({ applied: true });
    expect(await available(other.w.owner, other.w.workspaceId)).toBe(0);
  });
});

describe('errors', () => {
  it('refuses badly signed, stale and unsigned events, changing nothing', async () => {
    const { w, session } = await checkout();
    const body = stripe.completedEvent(session.id);
    // Berth's clock (a test clock that moves only when told) decides what is stale.
    const now = Math.floor(app.clock.now().getTime() / 1000);
    const cases = [
      signature(body, 'whsec_not_the_secret_000'),
      signature(body, NEW_SECRET, now - 301),
      signature(body, NEW_SECRET, now + 301),
      signature(`${body} `, NEW_SECRET),
      'v1=deadbeef',
      null,
    ];
    for (const sig of cases) {
      const res = await deliver(body, sig);
      expect(res.status, String(sig)).toBe(400);
      expect(((await res.json()) as { code: string }).code).toBe('invalid_signature');
    }
    expect(await available(w.owner, w.workspaceId)).toBe(0);
    // Still applicable once correctly signed: the refused deliveries were not noted.
    expect(await (await deliver(body, signature(body, NEW_SECRET))).json()).toEqual({ applied: true });
  });

  it('refuses events of checkouts Berth never started, and bad top-up amounts', async () => {
    const { w, session } = await checkout();
    const forged = stripe.completedEvent(session.id).replace(session.id, 'cs_test_unknown');
    const res = await deliver(forged, signature(forged, NEW_SECRET));
    expect(res.status).toBe(400);
    expect(((await res.json()) as { code: string }).code).toBe('unknown_payment');
    // A signed event whose amount differs from the checkout Berth started is refused too.
    const altered = stripe.completedEvent(session.id).replace('"amount_total":1250', '"amount_total":125000');
    const mismatch = await deliver(altered, signature(altered, NEW_SECRET));
    expect(mismatch.status).toBe(400);
    expect(((await mismatch.json()) as { code: string }).code).toBe('unknown_payment');
    expect(await available(w.owner, w.workspaceId)).toBe(0);
    for (const amountMicros of [999_999, 1_234_567, 20_000_000_000]) {
      const bad = await w.owner.post(`/api/workspaces/${w.workspaceId}/billing/checkout`, { amountMicros });
      expect(bad.status, String(amountMicros)).toBe(400);
    }
  });

  it('refuses unknown currencies in checkout requests and events with unknown_currency, changing nothing', async () => {
    const { w, session } = await checkout(5_000_000);
    const sessions = stripe.sessions.size;
    for (const currency of ['eur', 'XYZ', 'btc']) {
      const bad = await w.owner.post(`/api/workspaces/${w.workspaceId}/billing/checkout`, {
        amountMicros: 5_000_000,
        currency,
      });
      expect(bad.status, currency).toBe(400);
      expect(bad.body.code).toBe('unknown_currency');
    }
    expect(stripe.sessions.size).toBe(sessions);
    const inEuros = stripe.completedEvent(session.id).replace('"currency":"usd"', '"currency":"eur"');
    expect(inEuros).toContain('"currency":"eur"');
    const res = await deliver(inEuros, signature(inEuros, NEW_SECRET));
    expect(res.status).toBe(400);
    expect(((await res.json()) as { code: string }).code).toBe('unknown_currency');
    expect(await available(w.owner, w.workspaceId)).toBe(0);
    // The right event still applies (the refused one was not noted).
    const body = stripe.completedEvent(session.id);
    expect(await (await deliver(body, signature(body, NEW_SECRET))).json()).toEqual({ applied: true });
    expect(await available(w.owner, w.workspaceId)).toBe(5_000_000);
  });

  it('refuses payment events of payments Berth never started with unknown_payment, changing nothing', async () => {
    const { w } = await checkout(5_000_000);
    const base = {
      id: 'pi_test_not_berths',
      object: 'payment_intent',
      amount: 500,
      currency: 'usd',
      customer: 'cus_someone_else',
      status: 'succeeded',
    };
    for (const metadata of [
      {},
      { workspace_id: w.workspaceId },
      { workspace_id: w.workspaceId, payment_id: 'pay_01JD6F3Q4N8ZK5R2W7XH9YB0C1' },
      { workspace_id: w.workspaceId, auto_topup_id: 'pay_01JD6F3Q4N8ZK5R2W7XH9YB0C1' },
    ]) {
      const body = stripeEvent('payment_intent.succeeded', { ...base, metadata });
      const res = await deliver(body, signature(body, NEW_SECRET));
      expect(res.status, JSON.stringify(metadata)).toBe(400);
      expect(((await res.json()) as { code: string }).code).toBe('unknown_payment');
    }
    const inEuros = stripeEvent('payment_intent.payment_failed', {
      ...base,
      currency: 'eur',
      metadata: { workspace_id: w.workspaceId, auto_topup_id: 'pay_01JD6F3Q4N8ZK5R2W7XH9YB0C1' },
    });
    const res = await deliver(inEuros, signature(inEuros, NEW_SECRET));
    expect(((await res.json()) as { code: string }).code).toBe('unknown_currency');
    expect(await available(w.owner, w.workspaceId)).toBe(0);
    const noted = await app.db.system(async (tx) => {
      const r = (await tx.execute(
        sql`select count(*)::int as n from payment_events where workspace_id = ${w.workspaceId}`,
      )) as unknown as { rows: Array<{ n: number }> };
      return r.rows[0]?.n;
    });
    expect(noted).toBe(0);
  });
});

describe('security', () => {
  it('lets only holders of billing:manage start a checkout, and sends the processor its key only', async () => {
    const { w } = await checkout();
    const key = await w.owner.post<{ secret: string }>(`/api/workspaces/${w.workspaceId}/keys`, {
      name: 'reader',
      scopes: ['billing:read'],
    });
    const byReader = await fetch(`${url}/api/workspaces/${w.workspaceId}/billing/checkout`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.body.secret}`, 'content-type': 'application/json' },
      body: JSON.stringify({ amountMicros: 5_000_000 }),
    });
    expect(byReader.status).toBe(403);
    expect(stripe.unauthorised).toBe(0);
  });
});
