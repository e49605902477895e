import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { createTestDb, type TestDb } from '../../../test/helpers/db.ts';
import { gatewayWorkspace } from '../../../test/helpers/gateway.ts';
import { manualClock } from '../../platform/clock.ts';
import { AppError } from '../../platform/errors.ts';
import { newId } from '../../platform/ids.ts';
import { createLogger } from '../../platform/logger.ts';
import { usageEvents } from '../gateway/gateway.tables.ts';
import { budgetsRepo } from './billing.budgets.repo.ts';
import { creditLeases, leaseClosesAt } from './billing.leases.ts';
import { type LedgerService, ledgerService } from './billing.ledger.ts';
import { billingRepo } from './billing.repo.ts';
import { creditReservations } from './billing.tables.ts';

/**
 * Credit leases: a replica holds calls against one ledger reservation per workspace and
 * settles them in one movement. What must stay exact: the balance after settlement equals
 * the funds minus the sum of the calls' actual costs; budgets and low balances fall back
 * to a reservation per call; a lease its replica never settled is charged from its usage
 * events when it expires.
 */

const operator = { type: 'system', name: 'test' } as const;
const LEASE = 500_000;

describe('credit leases on the ledger', () => {
  let t: TestDb;
  const clock = manualClock('2026-06-10T08:00:00Z');
  let ledger: LedgerService;
  const logger = createLogger({ level: 'silent' });

  beforeAll(async () => {
    t = await createTestDb();
    ledger = ledgerService({ db: t.db, repo: billingRepo, clock, settings: { reservationTtlMs: 15 * 60_000 } });
  });
  afterAll(async () => {
    await t?.drop();
  });

  const leasesOn = (maxAgeMs = 60_000) =>
    creditLeases({ ledger, clock, logger, settings: { leaseMicros: LEASE, maxAgeMs, sweepMs: 3_600_000 } });

  async function funded(micros: number) {
    const w = newId('ws');
    await ledger.grant({ workspaceId: w, amountMicros: micros, idempotencyKey: `fund-${w}`, actor: operator });
    return w;
  }

  /** The workspace's reservations on the ledger, oldest first. */
  async function reservationsOf(workspaceId: string) {
    const rows = await t.db.tenant(workspaceId, (tx) =>
      tx
        .select()
        .from(creditReservations)
        .where(eq(creditReservations.workspaceId, workspaceId))
        .orderBy(creditReservations.createdAt, creditReservations.id),
    );
    return rows.map((r) => ({
      kind: r.kind,
      status: r.status,
      amountMicros: r.amountMicros,
      settledMicros: r.settledMicros,
    }));
  }

  const call = (workspaceId: string, amountMicros: number) => ({
    workspaceId,
    keyId: null,
    requestId: newId('req'),
    amountMicros,
  });

  it('holds parallel calls against one lease and settles their exact total in one movement', async () => {
    const w = await funded(10_000_000);
    const gate = leasesOn();
    const held = await Promise.all(Array.from({ length: 40 }, () => gate.reserve(call(w, 1_000))));
    const leaseIds = new Set(held.map((r) => r.leaseId));
    expect(leaseIds.size).toBe(1);
    // One reservation on the ledger, of the lease's size, while 40 calls are in flight.
    expect(await reservationsOf(w)).toEqual([
      { kind: 'lease', status: 'open', amountMicros: LEASE, settledMicros: null },
    ]);
    expect(await ledger.balance(w)).toMatchObject({ availableMicros: 10_000_000 - LEASE, heldMicros: LEASE });
    let total = 0;
    for (const [i, r] of held.entries()) {
      if (i % 10 === 9) {
        await gate.release(r);
      } else {
        await gate.settle(r, 100 + i);
        total += 100 + i;
      }
    }
    await gate.flush?.();
    expect(await ledger.balance(w)).toEqual({ workspaceId: w, availableMicros: 10_000_000 - total, heldMicros: 0 });
    const [settled] = await ledger.entries(w, { limit: 1 });
    expect(settled).toMatchObject({ kind: 'settle', amountMicros: total, memo: 'credit lease: 36 calls' });
    expect((await ledger.verify(w))[0]?.ok).toBe(true);
  });

  it('renews a lease that is too empty for the next call, settling the old one once its calls finished', async () => {
    const w = await funded(20_000_000);
    const gate = leasesOn();
    const first = await gate.reserve(call(w, 100_000));
    // 400,000 left in the first lease: not enough for this one, whose lease is four times its worst case.
    const second = await gate.reserve(call(w, 450_000));
    expect(second.leaseId).not.toBe(first.leaseId);
    // The first lease closed but its call is still in flight: it stays open on the ledger.
    expect((await reservationsOf(w)).map((r) => r.status)).toEqual(['open', 'open']);
    await gate.settle(first, 90_000);
    await gate.settle(second, 10_000);
    await gate.flush?.();
    expect((await reservationsOf(w)).map((r) => [r.amountMicros, r.status, r.settledMicros])).toEqual([
      [LEASE, 'settled', 90_000],
      [1_800_000, 'settled', 10_000],
    ]);
    expect(await ledger.balance(w)).toMatchObject({ availableMicros: 20_000_000 - 100_000, heldMicros: 0 });
  });

  it('stops taking calls on a lease older than its age, by the clock', async () => {
    const w = await funded(20_000_000);
    const gate = leasesOn(5_000);
    const a = await gate.reserve(call(w, 1_000));
    await gate.settle(a, 700);
    clock.advance(5_000);
    const b = await gate.reserve(call(w, 1_000));
    expect(b.leaseId).not.toBe(a.leaseId);
    await gate.settle(b, 300);
    await gate.flush?.();
    expect((await reservationsOf(w)).map((r) => r.settledMicros)).toEqual([700, 300]);
  });

  it('closes a lease when its month ends, so each month settles its own calls', async () => {
    const w = await funded(20_000_000);
    const gate = leasesOn(60_000);
    clock.set('2026-06-30T23:59:59.500Z');
    const june = await gate.reserve(call(w, 1_000));
    await gate.settle(june, 400);
    clock.set('2026-07-01T00:00:00.000Z');
    const july = await gate.reserve(call(w, 1_000));
    expect(july.leaseId).not.toBe(june.leaseId);
    await gate.settle(july, 600);
    await gate.flush?.();
    expect((await reservationsOf(w)).map((r) => r.settledMicros)).toEqual([400, 600]);
    expect(leaseClosesAt(Date.parse('2026-06-30T23:59:59.500Z'), 60_000)).toBe(Date.parse('2026-07-01T00:00:00Z'));
    expect(leaseClosesAt(Date.parse('2026-06-10T08:00:00Z'), 60_000)).toBe(Date.parse('2026-06-10T08:01:00Z'));
  });

  it('reserves each call on its own where a budget applies, and enforces the budget exactly', async () => {
    const w = await funded(20_000_000);
    await t.db.tenant(w, async (tx) => {
      const now = clock.now();
      await budgetsRepo.lockBalance(tx, w, now);
      await budgetsRepo.addToCount(tx, w, 1);
      await budgetsRepo.insert(tx, {
        id: newId('bud'),
        workspaceId: w,
        keyId: null,
        period: 'month',
        limitMicros: 25_000,
        createdBy: null,
        createdAt: now,
        updatedAt: now,
      });
    });
    const gate = leasesOn();
    const results = await Promise.allSettled(Array.from({ length: 5 }, () => gate.reserve(call(w, 10_000))));
    const ok = results.filter((r) => r.status === 'fulfilled');
    expect(ok).toHaveLength(2);
    expect(ok.every((r) => r.value.leaseId === undefined)).toBe(true);
    const refused = results.filter((r) => r.status === 'rejected').map((r) => (r.reason as AppError).code);
    expect(refused).toEqual(['budget_exceeded', 'budget_exceeded', 'budget_exceeded']);
    expect((await reservationsOf(w)).map((r) => r.kind)).toEqual(['call', 'call']);
    for (const r of ok) await gate.settle(r.value, 4_000);
    expect(await ledger.balance(w)).toMatchObject({ availableMicros: 20_000_000 - 8_000, heldMicros: 0 });
  });

  it('reserves each call on its own when the balance is under ten leases, refusing at the same point as without leases', async () => {
    const w = await funded(LEASE * 10 - 1);
    const gate = leasesOn();
    const r = await gate.reserve(call(w, 2_000_000));
    expect(r.leaseId).toBeUndefined();
    expect(await ledger.balance(w)).toMatchObject({ availableMicros: LEASE * 10 - 1 - 2_000_000 });
    const more = await gate.reserve(call(w, LEASE * 10 - 1 - 2_000_000));
    const refused = await gate.reserve(call(w, 1)).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(AppError);
    expect((refused as AppError).code).toBe('insufficient_credits');
    await gate.release(more);
    await gate.settle(r, 1_500_000);
    expect(await ledger.balance(w)).toMatchObject({ availableMicros: LEASE * 10 - 1 - 1_500_000, heldMicros: 0 });
  });
});

describe('a lease its replica never settled', () => {
  let app: TestApp;
  let fake: FakeOpenAi;

  beforeAll(async () => {
    fake = await startFakeOpenAi();
    app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_FREE_CREDITS_USD: '20' } });
  });
  afterAll(async () => {
    await app?.close();
    await fake?.close();
  });

  it('is charged, when it expires, what the usage events recorded under it cost', async () => {
    const w = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }] });
    for (let i = 0; i < 6; i++) {
      await w.openai.chat.completions.create({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: `call ${i}` }],
        max_tokens: 50,
      });
    }
    // The replica "stops" here: its lease is never settled, but its usage events reached the table.
    await app.modules.gateway.service.usage.flush();
    const events = await app.db.tenant(w.workspaceId, (tx) =>
      tx.select().from(usageEvents).where(eq(usageEvents.workspaceId, w.workspaceId)),
    );
    expect(events).toHaveLength(6);
    const leaseId = events[0]?.creditLeaseId;
    expect(leaseId).toMatch(/^rsv_/);
    expect(events.every((e) => e.creditLeaseId === leaseId)).toBe(true);
    const cost = events.reduce((s, e) => s + e.costMicros, 0);
    expect(cost).toBeGreaterThan(0);

    app.clock.advance(16 * 60_000);
    expect(await app.modules.billing.ledger.expireReservations()).toBe(1);
    expect(await app.modules.billing.ledger.balance(w.workspaceId)).toMatchObject({
      availableMicros: 20_000_000 - cost,
      heldMicros: 0,
    });
    const [entry] = await app.modules.billing.ledger.entries(w.workspaceId, { limit: 1 });
    expect(entry).toMatchObject({
      kind: 'settle',
      amountMicros: cost,
      memo: 'credit lease expired: charged from its usage events',
    });
    // The replica coming back late settles nothing twice.
    await app.modules.gateway.service.idle();
    expect(await app.modules.billing.ledger.balance(w.workspaceId)).toMatchObject({
      availableMicros: 20_000_000 - cost,
    });
  });

  it('closes the lease when a budget is set, so the next call counts against the budget', async () => {
    const w = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }] });
    const ask = () =>
      w.openai.chat.completions.create({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 20,
      });
    await ask();
    const budget = await w.owner.put(`/api/workspaces/${w.workspaceId}/billing/budgets`, {
      period: 'month',
      limitMicros: 5_000_000,
    });
    expect(budget.status).toBe(200);
    await ask();
    await app.modules.gateway.service.idle();
    const rows = await app.db.tenant(w.workspaceId, (tx) =>
      tx
        .select()
        .from(creditReservations)
        .where(eq(creditReservations.workspaceId, w.workspaceId))
        .orderBy(creditReservations.createdAt, creditReservations.id),
    );
    expect(rows.map((r) => [r.kind, r.status, r.budgetIds === null ? 0 : r.budgetIds.length])).toEqual([
      ['lease', 'settled', 0],
      ['call', 'settled', 1],
    ]);
    const list = await w.owner.get<{ data: Array<{ current: { spentMicros: number } }> }>(
      `/api/workspaces/${w.workspaceId}/billing/budgets`,
    );
    expect(list.body.data[0]?.current.spentMicros).toBe(rows[1]?.settledMicros);
  });
});
