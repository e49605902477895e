import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type FakeCard,
  type FakeStripe,
  startFakeStripe,
  stripeEvent,
  signature as stripeSignature,
  TEST_CARDS,
} from '../../../test/fakes/stripe.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { type GatewayWorkspace, gatewayWorkspace, listen } from '../../../test/helpers/gateway.ts';
import { HOUR, MINUTE } from '../../platform/clock.ts';
import type { AutoTopupView } from './billing.autotopup.ts';
import { RECEIPT_JOB } from './index.ts';

/**
 * Auto top-up against a fake that speaks Stripe's API: a checkout that saves the card for
 * off-session use, then the `billing.auto-topup` job charging it (`POST /v1/payment_intents`
 * with `confirm=true&off_session=true` and an Idempotency-Key) when the balance falls below
 * the threshold, once in flight and within the monthly cap; credits exactly once whether
 * Stripe's answer, its `payment_intent.succeeded` event or a later look-up reports success;
 * declines recorded, mailed to the owners, and the third in a row turning auto top-up off.
 * Each test uses its own workspaces; the clock only moves forward.
 */

const SECRET = 'whsec_autotopup_0123456789';
const USD = 1_000_000;

let app: TestApp;
let stripe: FakeStripe;
let url: string;

beforeAll(async () => {
  stripe = await startFakeStripe();
  app = await createTestApp({
    config: {
      BERTH_STRIPE_SECRET_KEY: stripe.secretKey,
      BERTH_STRIPE_WEBHOOK_SECRETS: SECRET,
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

function deliver(body: string) {
  const at = Math.floor(app.clock.now().getTime() / 1000);
  return fetch(`${url}/api/billing/webhooks/stripe`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'stripe-signature': stripeSignature(body, SECRET, at) },
    body,
  });
}

const ledger = () => app.modules.billing.ledger;
const autoTopups = () => app.modules.billing.autoTopups;
const available = async (workspaceId: string) => (await ledger().balance(workspaceId)).availableMicros;
const settingsUrl = (w: GatewayWorkspace) => `/api/workspaces/${w.workspaceId}/billing/auto-topup`;
const ownerScope = (w: GatewayWorkspace) => ({
  workspaceId: w.workspaceId,
  actor: { type: 'user' as const, userId: w.owner.userId },
  role: 'owner' as const,
});

/** Spends credits as settled calls do (reserve, then settle at the full amount). */
async function spend(workspaceId: string, micros: number) {
  const r = await ledger().reserve({
    workspaceId,
    keyId: null,
    requestId: `req-${Math.random().toString(36).slice(2)}`,
    amountMicros: micros,
  });
  await ledger().settle(workspaceId, r.id, micros);
}

/** A workspace that paid a 5 USD checkout with `card`, saving it for auto top-up. */
async function withSavedCard(card: FakeCard = TEST_CARDS.visa): Promise<GatewayWorkspace> {
  const w = await gatewayWorkspace(app);
  const res = await w.owner.post<{ paymentId: string }>(`/api/workspaces/${w.workspaceId}/billing/checkout`, {
    amountMicros: 5 * USD,
    autoTopup: true,
  });
  expect(res.status).toBe(201);
  const session = [...stripe.sessions.values()].find((s) => s.metadata.payment_id === res.body.paymentId);
  if (!session) throw new Error('no session at the processor');
  const paid = await deliver(stripe.completedEvent(session.id, { card }));
  expect(await paid.json()).toEqual({ applied: true });
  return w;
}

async function enable(w: GatewayWorkspace, extra: Record<string, unknown> = {}) {
  const res = await w.owner.put<AutoTopupView>(settingsUrl(w), {
    enabled: true,
    thresholdMicros: 10 * USD,
    amountMicros: 20 * USD,
    monthlyMaxCount: 5,
    ...extra,
  });
  expect(res.status, res.text).toBe(200);
  return res.body;
}

function intentsOf(workspaceId: string) {
  return stripe.requests.filter(
    (r) =>
      r.method === 'POST' && r.path === '/v1/payment_intents' && r.form.get('metadata[workspace_id]') === workspaceId,
  );
}

async function mailsTo(email: string, tag: string) {
  const all = await app.modules.notifications.service.listOutbox({ limit: 1000 });
  return all.filter((m) => m.to === email && m.tag === tag);
}

async function chargeRows(workspaceId: string) {
  return app.db.system(async (tx) => {
    const res = (await tx.execute(
      sql`select id, status, failure_code as "failureCode", payment_intent_id as "paymentIntentId", amount_micros::text as amount
          from auto_topups where workspace_id = ${workspaceId} order by created_at, id`,
    )) as unknown as {
      rows: Array<{ id: string; status: string; failureCode: string | null; paymentIntentId: string | null }>;
    };
    return res.rows;
  });
}

describe('happy', () => {
  it("saves the card at checkout for off-session use, keeping only Stripe's ids with brand and last 4", async () => {
    const w = await withSavedCard(TEST_CARDS.mastercard);
    const created = stripe.requests.find(
      (r) => r.path === '/v1/checkout/sessions' && r.form.get('metadata[workspace_id]') === w.workspaceId,
    );
    expect(created?.form.get('customer_creation')).toBe('always');
    expect(created?.form.get('payment_intent_data[setup_future_usage]')).toBe('off_session');
    const view = await w.owner.get<AutoTopupView>(settingsUrl(w));
    expect(view.status).toBe(200);
    expect(view.body).toMatchObject({
      enabled: false,
      paymentMethod: { brand: 'mastercard', last4: '4444' },
      thresholdMicros: null,
      inFlight: false,
    });
    // The member sees the card; the processor's references stay inside Berth.
    expect(view.text).not.toMatch(/cus_|pm_/);
    const row = await app.db.system(async (tx) => {
      const res = (await tx.execute(
        sql`select processor_customer_id as c, processor_payment_method_id as p, card_brand as b, card_last4 as l
            from auto_topup_settings where workspace_id = ${w.workspaceId}`,
      )) as unknown as { rows: Array<Record<string, string>> };
      return res.rows[0];
    });
    expect(row).toEqual({
      c: expect.stringMatching(/^cus_/),
      p: expect.stringMatching(/^pm_/),
      b: 'mastercard',
      l: '4444',
    });
    // A checkout without autoTopup saves nothing.
    const other = await gatewayWorkspace(app);
    await other.owner.post(`/api/workspaces/${other.workspaceId}/billing/checkout`, { amountMicros: 5 * USD });
    const plain = stripe.requests.find(
      (r) => r.path === '/v1/checkout/sessions' && r.form.get('metadata[workspace_id]') === other.workspaceId,
    );
    expect(plain?.form.get('customer_creation')).toBeNull();
    expect(plain?.form.get('payment_intent_data[setup_future_usage]')).toBeNull();
  });

  it('charges the saved card below the threshold, credits it once, and keeps to the monthly cap', async () => {
    const w = await withSavedCard();
    expect(await available(w.workspaceId)).toBe(5 * USD);
    const view = await enable(w, { monthlyMaxCount: 2 });
    expect(view).toMatchObject({
      enabled: true,
      thresholdMicros: 10 * USD,
      amountMicros: 20 * USD,
      consecutiveFailures: 0,
    });

    await autoTopups().run();
    expect(await available(w.workspaceId)).toBe(25 * USD);
    const [first] = intentsOf(w.workspaceId);
    expect(first?.form.get('confirm')).toBe('true');
    expect(first?.form.get('off_session')).toBe('true');
    expect(first?.form.get('amount')).toBe('2000');
    expect(first?.form.get('currency')).toBe('usd');
    expect(first?.idempotencyKey).toMatch(/^berth-auto-topup-pay_/);
    const [charge] = await chargeRows(w.workspaceId);
    expect(charge).toMatchObject({ status: 'succeeded', paymentIntentId: expect.stringMatching(/^pi_/) });
    const entries = await ledger().entries(w.workspaceId, { limit: 10 });
    expect(entries.filter((e) => e.kind === 'topup').map((e) => e.idempotencyKey)).toContain(
      `stripe:${charge?.paymentIntentId}`,
    );
    // A payment like a checkout's: listed with the card, and its receipt mailed to the owner once.
    const listed = await w.owner.get<{ data: Array<Record<string, unknown>> }>(
      `/api/workspaces/${w.workspaceId}/billing/payments`,
    );
    expect(listed.body.data.find((p) => p.id === charge?.id)).toMatchObject({
      amountMicros: 20 * USD,
      status: 'paid',
      cardLast4: expect.stringMatching(/^\d{4}$/),
    });
    // (The checkout that saved the card has its own receipt in the queue too.)
    expect((await app.jobs.drain(RECEIPT_JOB)).failed).toBe(0);
    const receipts = (await app.modules.notifications.service.listOutbox({ limit: 1000 })).filter(
      (m) => m.tag === 'billing.receipt' && m.text.includes(charge?.id ?? '-'),
    );
    expect(receipts.map((m) => m.to)).toEqual([w.owner.email]);
    // Stripe's event for the same payment changes nothing more, however often it comes.
    const event = stripe.intentSucceededEvent(charge?.paymentIntentId ?? '');
    for (const r of await Promise.all([deliver(event), deliver(event)]))
      expect(await r.json()).toEqual({ applied: false });
    expect(await available(w.workspaceId)).toBe(25 * USD);

    // Above the threshold: nothing to do.
    await autoTopups().run();
    expect(intentsOf(w.workspaceId)).toHaveLength(1);
    await spend(w.workspaceId, 16 * USD);
    await autoTopups().run();
    expect(await available(w.workspaceId)).toBe(29 * USD);
    // The cap (2 a month) is reached: below the threshold again, no third charge this month.
    await spend(w.workspaceId, 25 * USD);
    await autoTopups().run();
    expect(intentsOf(w.workspaceId)).toHaveLength(2);
    expect(await available(w.workspaceId)).toBe(4 * USD);
    const capped = await w.owner.get<AutoTopupView>(settingsUrl(w));
    expect(capped.body.thisMonth).toEqual({ count: 2, amountMicros: 40 * USD });
    expect((await ledger().verify(w.workspaceId))[0]?.ok).toBe(true);
  });

  it('waits for payment_intent.succeeded when Stripe answers processing: one charge in flight, credited once', async () => {
    const w = await withSavedCard();
    await enable(w);
    stripe.asyncCharges = true;
    try {
      await autoTopups().run();
      await autoTopups().run();
    } finally {
      stripe.asyncCharges = false;
    }
    expect(intentsOf(w.workspaceId)).toHaveLength(1);
    expect(await available(w.workspaceId)).toBe(5 * USD);
    expect((await w.owner.get<AutoTopupView>(settingsUrl(w))).body.inFlight).toBe(true);
    const [charge] = await chargeRows(w.workspaceId);
    const event = stripe.intentSucceededEvent(charge?.paymentIntentId ?? '');
    const answers = await Promise.all(Array.from({ length: 4 }, () => deliver(event)));
    const applied = await Promise.all(answers.map(async (r) => ((await r.json()) as { applied: boolean }).applied));
    expect(applied.filter(Boolean)).toHaveLength(1);
    expect(await available(w.workspaceId)).toBe(25 * USD);
    expect((await chargeRows(w.workspaceId))[0]?.status).toBe('succeeded');
  });

  it('asks Stripe about a charge whose event never came, and credits it then', async () => {
    const w = await withSavedCard();
    await enable(w);
    stripe.asyncCharges = true;
    try {
      await autoTopups().run();
    } finally {
      stripe.asyncCharges = false;
    }
    const [charge] = await chargeRows(w.workspaceId);
    // Stripe settled it, but the event is lost.
    stripe.intentSucceededEvent(charge?.paymentIntentId ?? '');
    await autoTopups().run();
    expect(await available(w.workspaceId)).toBe(5 * USD);
    app.clock.advance(11 * MINUTE);
    await autoTopups().run();
    expect(await available(w.workspaceId)).toBe(25 * USD);
    expect(intentsOf(w.workspaceId)).toHaveLength(1);
  });

  it('sends a charge again with the same Idempotency-Key when Stripe could not be reached', async () => {
    const w = await withSavedCard();
    await enable(w);
    stripe.failCharges = true;
    try {
      await autoTopups().run();
    } finally {
      stripe.failCharges = false;
    }
    expect(await available(w.workspaceId)).toBe(5 * USD);
    expect((await chargeRows(w.workspaceId))[0]?.status).toBe('pending');
    app.clock.advance(11 * MINUTE);
    await autoTopups().run();
    expect(await available(w.workspaceId)).toBe(25 * USD);
    const keys = intentsOf(w.workspaceId).map((r) => r.idempotencyKey);
    expect(keys).toHaveLength(2);
    expect(keys[1]).toBe(keys[0]);
    expect(await chargeRows(w.workspaceId)).toHaveLength(1);
  });
});

describe('errors', () => {
  it('refuses negative, zero and fractional amounts and a missing cap with 400, changing nothing', async () => {
    const w = await withSavedCard();
    const good = { enabled: true, thresholdMicros: 10 * USD, amountMicros: 20 * USD, monthlyMaxCount: 3 };
    const bad: Array<Record<string, unknown>> = [
      { thresholdMicros: -1 },
      { thresholdMicros: 0 },
      { thresholdMicros: 1.5 },
      { thresholdMicros: '100' },
      { amountMicros: -20 * USD },
      { amountMicros: 0 },
      { amountMicros: 20.5 },
      { amountMicros: 1_234_567 },
      { monthlyMaxCount: 0 },
      { monthlyMaxCount: -1 },
      { monthlyMaxCount: 2.5 },
      { monthlyMaxCount: null, monthlyMaxMicros: 0 },
      { monthlyMaxCount: null, monthlyMaxMicros: -5 },
      { monthlyMaxCount: null, monthlyMaxMicros: 7.25 },
      { monthlyMaxCount: null },
      { monthlyMaxCount: undefined },
      { enabled: 'yes' },
      { extra: 1 },
    ];
    for (const change of bad) {
      const res = await w.owner.put(settingsUrl(w), { ...good, ...change });
      expect(res.status, JSON.stringify(change)).toBe(400);
      expect(['validation_failed', 'invalid_amount']).toContain(res.body.code);
    }
    // A cap on the amount below one top-up could never charge.
    const below = await w.owner.put(settingsUrl(w), { ...good, monthlyMaxCount: null, monthlyMaxMicros: 10 * USD });
    expect(below.status).toBe(400);
    expect(below.body.code).toBe('invalid_amount');
    const after = await w.owner.get<AutoTopupView>(settingsUrl(w));
    expect(after.body).toMatchObject({ enabled: false, thresholdMicros: null, amountMicros: null });
  });

  it('needs a saved card to turn auto top-up on', async () => {
    const w = await gatewayWorkspace(app);
    const on = await w.owner.put(settingsUrl(w), {
      enabled: true,
      thresholdMicros: 10 * USD,
      amountMicros: 20 * USD,
      monthlyMaxMicros: 100 * USD,
    });
    expect(on.status).toBe(409);
    expect(on.body.code).toBe('payment_method_required');
    const off = await w.owner.put<AutoTopupView>(settingsUrl(w), {
      enabled: false,
      thresholdMicros: 10 * USD,
      amountMicros: 20 * USD,
      monthlyMaxMicros: 100 * USD,
    });
    expect(off.status).toBe(200);
    expect(off.body).toMatchObject({ enabled: false, paymentMethod: null, monthlyMaxMicros: 100 * USD });
    await autoTopups().run();
    expect(intentsOf(w.workspaceId)).toHaveLength(0);
  });

  it('records declines and mails the owners; the third in a row turns auto top-up off', async () => {
    const w = await withSavedCard(TEST_CARDS.declinesLater);
    await enable(w);
    await autoTopups().run();
    let rows = await chargeRows(w.workspaceId);
    expect(rows).toEqual([expect.objectContaining({ status: 'failed', failureCode: 'generic_decline' })]);
    expect(await mailsTo(w.owner.email, 'billing.auto_topup_failed')).toHaveLength(1);
    // Not again at once: the next try waits.
    await autoTopups().run();
    expect(intentsOf(w.workspaceId)).toHaveLength(1);
    // Stripe's event for the same decline is not a second one.
    const failedEvent = stripe.intentFailedEvent(rows[0]?.paymentIntentId ?? '');
    expect(await (await deliver(failedEvent)).json()).toEqual({ applied: false });
    const view = await autoTopups().get(ownerScope(w));
    expect(view).toMatchObject({ enabled: true, consecutiveFailures: 1 });

    app.clock.advance(6 * HOUR + MINUTE);
    await autoTopups().run();
    app.clock.advance(6 * HOUR + MINUTE);
    await autoTopups().run();
    rows = await chargeRows(w.workspaceId);
    expect(rows.map((r) => r.status)).toEqual(['failed', 'failed', 'failed']);
    expect(await autoTopups().get(ownerScope(w))).toMatchObject({
      enabled: false,
      consecutiveFailures: 3,
      disabledReason: 'card_declined',
    });
    expect(await mailsTo(w.owner.email, 'billing.auto_topup_failed')).toHaveLength(3);
    const off = await mailsTo(w.owner.email, 'billing.auto_topup_disabled');
    expect(off).toHaveLength(1);
    expect(off[0]?.text).toContain('ending in 0341');
    expect(off[0]?.text).not.toContain(TEST_CARDS.declinesLater.number);
    // Off means off.
    app.clock.advance(6 * HOUR + MINUTE);
    await autoTopups().run();
    expect(intentsOf(w.workspaceId)).toHaveLength(3);
    expect(await available(w.workspaceId)).toBe(5 * USD);
  });

  it('records a decline Stripe reports by payment_intent.payment_failed', async () => {
    const w = await withSavedCard();
    await enable(w);
    stripe.asyncCharges = true;
    try {
      await autoTopups().run();
    } finally {
      stripe.asyncCharges = false;
    }
    const [charge] = await chargeRows(w.workspaceId);
    const event = stripe.intentFailedEvent(charge?.paymentIntentId ?? '', 'insufficient_funds');
    expect(await (await deliver(event)).json()).toEqual({ applied: true });
    expect(await (await deliver(event)).json()).toEqual({ applied: false });
    expect(await chargeRows(w.workspaceId)).toEqual([
      expect.objectContaining({ status: 'failed', failureCode: 'insufficient_funds' }),
    ]);
    const mails = await mailsTo(w.owner.email, 'billing.auto_topup_failed');
    expect(mails).toHaveLength(1);
    expect(mails[0]?.text).toContain('insufficient_funds');
    expect(await available(w.workspaceId)).toBe(5 * USD);
  });

  it('keeps a decline code longer than its column to its first 100 characters, answering 200', async () => {
    const w = await withSavedCard();
    await enable(w);
    stripe.asyncCharges = true;
    try {
      await autoTopups().run();
    } finally {
      stripe.asyncCharges = false;
    }
    const [charge] = await chargeRows(w.workspaceId);
    const long = `issuer_${'x'.repeat(200)}`;
    const res = await deliver(stripe.intentFailedEvent(charge?.paymentIntentId ?? '', long));
    expect(res.status).toBe(200);
    expect(await chargeRows(w.workspaceId)).toEqual([
      expect.objectContaining({ status: 'failed', failureCode: long.slice(0, 100) }),
    ]);
  });

  it('refuses events for an unknown customer or payment intent, changing nothing', async () => {
    const w = await withSavedCard();
    await enable(w);
    stripe.asyncCharges = true;
    try {
      await autoTopups().run();
    } finally {
      stripe.asyncCharges = false;
    }
    const [charge] = await chargeRows(w.workspaceId);
    const pi = stripe.paymentIntents.get(charge?.paymentIntentId ?? '');
    if (!pi) throw new Error('no payment intent at the fake');
    const succeeded = { ...pi, status: 'succeeded', amount_received: pi.amount };
    const cases: Array<[string, unknown]> = [
      ['unknown_customer', { ...succeeded, customer: 'cus_not_the_workspaces' }],
      ['unknown_customer', { ...succeeded, customer: null }],
      ['unknown_payment', { ...succeeded, id: 'pi_not_berths_charge' }],
      ['unknown_payment', { ...succeeded, amount: pi.amount * 10 }],
      ['unknown_currency', { ...succeeded, currency: 'eur' }],
      [
        'unknown_payment',
        { ...succeeded, metadata: { ...pi.metadata, auto_topup_id: 'pay_01JD6F3Q4N8ZK5R2W7XH9YB0C1' } },
      ],
    ];
    for (const [code, object] of cases) {
      const res = await deliver(stripeEvent('payment_intent.succeeded', object));
      expect(res.status, code).toBe(400);
      expect(((await res.json()) as { code: string }).code).toBe(code);
    }
    expect(await available(w.workspaceId)).toBe(5 * USD);
    expect((await chargeRows(w.workspaceId))[0]?.status).toBe('pending');
    // The genuine event still applies.
    expect(await (await deliver(stripe.intentSucceededEvent(pi.id))).json()).toEqual({ applied: true });
    expect(await available(w.workspaceId)).toBe(25 * USD);
  });
});

describe('security', () => {
  it('lets only owners (billing:manage) see and change auto top-up, and audits each change', async () => {
    const w = await withSavedCard();
    const key = await w.owner.post<{ secret: string }>(`/api/workspaces/${w.workspaceId}/keys`, {
      name: 'reader',
      scopes: ['billing:read'],
    });
    const asKey = (method: string, body?: unknown) =>
      fetch(`${url}${settingsUrl(w)}`, {
        method,
        headers: { authorization: `Bearer ${key.body.secret}`, 'content-type': 'application/json' },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
    expect((await asKey('GET')).status).toBe(403);
    const put = await asKey('PUT', { enabled: true, thresholdMicros: USD, amountMicros: 5 * USD, monthlyMaxCount: 1 });
    expect(put.status).toBe(403);
    expect((await autoTopups().get(ownerScope(w))).enabled).toBe(false);
    await enable(w);
    const events = await app.db.system(async (tx) => {
      const res = (await tx.execute(
        // Events name users by pseudonym; audit_subjects resolves it while the account exists.
        sql`select e.action, coalesce(s.user_id, e.actor_id) as "actorId" from audit_events e
              left join audit_subjects s on s.pseudonym = e.actor_id
             where e.chain = ${w.workspaceId} and e.action like 'billing.auto_topup%'`,
      )) as unknown as { rows: Array<{ action: string; actorId: string }> };
      return res.rows;
    });
    expect(events).toEqual([{ action: 'billing.auto_topup_changed', actorId: w.owner.userId }]);
  });

  it("stops with its workspace: a deleted workspace's saved card is never charged, and its references go", async () => {
    const w = await withSavedCard();
    await enable(w);
    // Below the threshold (5 < 10 USD) when the workspace is deleted.
    const deleted = await w.owner.delete(`/api/workspaces/${w.workspaceId}`, { confirmName: 'Gateway' });
    expect(deleted.status).toBe(204);
    await autoTopups().run();
    expect(intentsOf(w.workspaceId)).toHaveLength(0);
    const row = await app.db.system(async (tx) => {
      const res = (await tx.execute(
        sql`select enabled, disabled_reason as "disabledReason", processor_customer_id as customer,
              processor_payment_method_id as method, card_last4 as last4
            from auto_topup_settings where workspace_id = ${w.workspaceId}`,
      )) as unknown as { rows: Array<Record<string, unknown>> };
      return res.rows[0];
    });
    expect(row).toEqual({
      enabled: false,
      disabledReason: 'workspace_deleted',
      customer: null,
      method: null,
      last4: null,
    });
  });

  it('starts one charge per workspace when two job runners race', async () => {
    const w = await withSavedCard();
    await enable(w);
    stripe.asyncCharges = true;
    try {
      await Promise.all([autoTopups().run(), autoTopups().run(), autoTopups().run()]);
    } finally {
      stripe.asyncCharges = false;
    }
    expect(intentsOf(w.workspaceId)).toHaveLength(1);
    expect(await chargeRows(w.workspaceId)).toHaveLength(1);
  });
});
