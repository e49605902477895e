import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { logIn, makeOperator, type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { DAY, MINUTE } from '../../platform/clock.ts';
import type { Actor } from '../../platform/http/context.ts';

/**
 * Promotional credits that expire, with a ManualClock: spending takes promotions first,
 * soonest-expiring first; at its expiry the `billing.expire-promotions` job takes back what
 * is left of each (an `expire` transaction keyed `expire:<grant id>`), never more than is
 * available; rerunning it changes nothing, and every balance still verifies.
 */

const USD = 1_000_000;
const operatorActor: Actor = { type: 'system', name: 'test-operator' };

let app: TestApp;
let op: SignedInClient;
let seq = 0;

beforeAll(async () => {
  app = await createTestApp({ config: { BERTH_FREE_CREDITS_USD: '0' } });
  op = await signUp(app);
  await makeOperator(app, op.userId);
});
afterAll(async () => {
  await app?.close();
});

const billing = () => app.modules.billing;
const inDays = (days: number) => new Date(app.clock.now().getTime() + days * DAY);

async function workspace(): Promise<string> {
  const owner = await signUp(app);
  const ws = await owner.post<{ id: string }>('/api/workspaces', { name: 'Promoted' });
  if (ws.status !== 201) throw new Error(`workspace: ${ws.status} ${ws.text}`);
  return ws.body.id;
}

function grant(workspaceId: string, amountMicros: number, expiresAt?: Date) {
  return billing().promotions.grant({
    actor: operatorActor,
    workspaceId,
    amountMicros,
    idempotencyKey: `grant-${workspaceId}-${++seq}`,
    ...(expiresAt ? { expiresAt } : {}),
  });
}

/** Spends as a settled call does: reserve, then settle at `micros`. */
async function spend(workspaceId: string, micros: number) {
  const r = await billing().ledger.reserve({
    workspaceId,
    keyId: null,
    requestId: `req-${++seq}`,
    amountMicros: micros,
  });
  await billing().ledger.settle(workspaceId, r.id, micros);
}

const available = async (workspaceId: string) => (await billing().ledger.balance(workspaceId)).availableMicros;
const expiries = async (workspaceId: string) =>
  (await billing().ledger.entries(workspaceId, { limit: 1000 })).filter((e) => e.kind === 'expire');

async function expectVerified(workspaceId: string) {
  const [report] = await billing().ledger.verify(workspaceId);
  expect(report).toMatchObject({ ok: true, unbalancedTransactions: 0 });
}

/** Runs the job, then again: the second run must change nothing. */
async function expireTwice(workspaceId: string) {
  await billing().promotions.expireDue();
  const entries = (await billing().ledger.entries(workspaceId, { limit: 1000 })).length;
  const balance = await billing().ledger.balance(workspaceId);
  expect(await billing().promotions.expireDue()).toBe(0);
  expect((await billing().ledger.entries(workspaceId, { limit: 1000 })).length).toBe(entries);
  expect(await billing().ledger.balance(workspaceId)).toEqual(balance);
}

describe('happy', () => {
  it('a promotion partly spent expires only its remainder, after its expiry', async () => {
    const ws = await workspace();
    await grant(ws, 5 * USD);
    const promo = await grant(ws, 3 * USD, inDays(10));
    expect(promo).toMatchObject({ kind: 'grant', amountMicros: 3 * USD, availableAfterMicros: 8 * USD });
    await spend(ws, 1 * USD);
    expect((await billing().promotions.list(ws))[0]).toMatchObject({ remainingMicros: 2 * USD, expiredMicros: null });
    // Not yet: the job leaves it.
    app.clock.advance(10 * DAY - MINUTE);
    await billing().promotions.expireDue();
    expect(await available(ws)).toBe(7 * USD);
    app.clock.advance(2 * MINUTE);
    await expireTwice(ws);
    expect(await available(ws)).toBe(5 * USD);
    expect(await expiries(ws)).toEqual([
      expect.objectContaining({ amountMicros: 2 * USD, idempotencyKey: `expire:${promo.id}` }),
    ]);
    expect((await billing().promotions.list(ws))[0]).toMatchObject({ remainingMicros: 0, expiredMicros: 2 * USD });
    await expectVerified(ws);
  });

  it('a promotion fully spent expires nothing', async () => {
    const ws = await workspace();
    await grant(ws, 5 * USD);
    await grant(ws, 2 * USD, inDays(3));
    await spend(ws, 3 * USD);
    app.clock.advance(3 * DAY + MINUTE);
    await expireTwice(ws);
    expect(await expiries(ws)).toEqual([]);
    expect(await available(ws)).toBe(4 * USD);
    expect((await billing().promotions.list(ws))[0]).toMatchObject({ expiredMicros: 0, expiredTransactionId: null });
    await expectVerified(ws);
  });

  it('two promotions with different expiries are consumed soonest-first', async () => {
    const ws = await workspace();
    await grant(ws, 1 * USD);
    const later = await grant(ws, 3 * USD, inDays(20));
    const sooner = await grant(ws, 2 * USD, inDays(5));
    await spend(ws, 2_500_000);
    const left = new Map((await billing().promotions.list(ws)).map((p) => [p.grantTransactionId, p.remainingMicros]));
    expect(left.get(sooner.id)).toBe(0);
    expect(left.get(later.id)).toBe(2_500_000);
    app.clock.advance(5 * DAY + MINUTE);
    await expireTwice(ws);
    expect(await expiries(ws)).toEqual([]);
    expect(await available(ws)).toBe(3_500_000);
    // Spending between the expiries comes from the remaining promotion first.
    await spend(ws, 500_000);
    app.clock.advance(15 * DAY);
    await expireTwice(ws);
    expect(await expiries(ws)).toEqual([
      expect.objectContaining({ amountMicros: 2 * USD, idempotencyKey: `expire:${later.id}` }),
    ]);
    expect(await available(ws)).toBe(1 * USD);
    await expectVerified(ws);
  });

  it('counts spending after an expiry (before the job ran) against other credits first', async () => {
    const ws = await workspace();
    await grant(ws, 1 * USD);
    await grant(ws, 2 * USD, inDays(1));
    app.clock.advance(DAY + MINUTE);
    // Expired but not taken back yet: this spends the 1 USD of other credits, then 0.5 of the lapsed promotion.
    await spend(ws, 1_500_000);
    await expireTwice(ws);
    expect(await expiries(ws)).toEqual([expect.objectContaining({ amountMicros: 1_500_000 })]);
    expect(await available(ws)).toBe(0);
    await expectVerified(ws);
  });

  it('never takes back more than is available (credits held by a call in flight stay)', async () => {
    const ws = await workspace();
    await grant(ws, 3 * USD, inDays(2));
    const held = await billing().ledger.reserve({
      workspaceId: ws,
      keyId: null,
      requestId: `req-${++seq}`,
      amountMicros: 2 * USD,
    });
    app.clock.advance(2 * DAY + MINUTE);
    await expireTwice(ws);
    expect(await expiries(ws)).toEqual([expect.objectContaining({ amountMicros: 1 * USD })]);
    expect(await billing().ledger.balance(ws)).toMatchObject({ availableMicros: 0, heldMicros: 2 * USD });
    await billing().ledger.settle(ws, held.id, 1 * USD);
    expect(await available(ws)).toBe(1 * USD);
    await expectVerified(ws);
  });
});

describe('errors', () => {
  it('refuses expiries in the past or not dates, and a reused key with another expiry, changing nothing', async () => {
    const ws = await workspace();
    // Signed in now: the clock moved past earlier sessions' lifetimes.
    const operator = await logIn(app, op.email, op.password);
    const post = (body: Record<string, unknown>) =>
      operator.post('/api/operator/billing/grant', { workspaceId: ws, amountMicros: USD, ...body });
    const past = await post({
      idempotencyKey: `past-${ws}`,
      expiresAt: new Date(app.clock.now().getTime() - MINUTE).toISOString(),
    });
    expect(past.status).toBe(400);
    expect(past.body.code).toBe('invalid_expiry');
    const far = await post({ idempotencyKey: `far-${ws}`, expiresAt: '2999-01-01T00:00:00Z' });
    expect(far.body.code).toBe('invalid_expiry');
    for (const expiresAt of ['tomorrow', '2027-02-30', 12345, '']) {
      const res = await post({ idempotencyKey: `bad-${ws}`, expiresAt });
      expect(res.status, String(expiresAt)).toBe(400);
    }
    expect(await available(ws)).toBe(0);
    const expiresAt = inDays(30).toISOString();
    const first = await post({ idempotencyKey: `promo-${ws}`, expiresAt });
    expect(first.status).toBe(201);
    expect(first.body).toMatchObject({ kind: 'grant', amountMicros: USD, expiresAt });
    expect((await post({ idempotencyKey: `promo-${ws}`, expiresAt })).body).toEqual(first.body);
    const other = await post({ idempotencyKey: `promo-${ws}`, expiresAt: inDays(31).toISOString() });
    expect(other.status).toBe(409);
    expect(other.body.code).toBe('idempotency_conflict');
    // An ordinary grant's key reused for a promotion is refused too.
    await post({ idempotencyKey: `plain-${ws}` });
    const promoted = await post({ idempotencyKey: `plain-${ws}`, expiresAt });
    expect(promoted.status).toBe(409);
    expect(await available(ws)).toBe(2 * USD);
    expect(await billing().promotions.list(ws)).toHaveLength(1);
    // Retried after its expiry passed, the grant answers as it did; with other parameters it is refused.
    app.clock.advance(31 * DAY);
    const again = await logIn(app, op.email, op.password);
    const retry = (body: Record<string, unknown>) =>
      again.post('/api/operator/billing/grant', { workspaceId: ws, amountMicros: USD, ...body });
    const retried = await retry({ idempotencyKey: `promo-${ws}`, expiresAt });
    expect(retried.status).toBe(201);
    expect(retried.body).toEqual(first.body);
    const changed = await retry({ idempotencyKey: `promo-${ws}`, expiresAt, memo: 'another reason' });
    expect(changed.body.code).toBe('idempotency_conflict');
    const fresh = await retry({ idempotencyKey: `late-${ws}`, expiresAt });
    expect(fresh.body.code).toBe('invalid_expiry');
    app.clock.advance(-31 * DAY);
  });
});

describe('security', () => {
  it('only operators grant promotional credits', async () => {
    const owner = await signUp(app);
    const ws = await owner.post<{ id: string }>('/api/workspaces', { name: 'Mine' });
    const res = await owner.post('/api/operator/billing/grant', {
      workspaceId: ws.body.id,
      amountMicros: 1_000 * USD,
      idempotencyKey: `self-${ws.body.id}`,
      expiresAt: inDays(30).toISOString(),
    });
    expect(res.status).toBe(403);
    expect(await available(ws.body.id)).toBe(0);
    expect(await billing().promotions.list(ws.body.id)).toEqual([]);
  });
});
