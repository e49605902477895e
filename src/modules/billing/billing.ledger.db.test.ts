import { sql } from 'drizzle-orm';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDb, onServerPostgres, type TestDb } from '../../../test/helpers/db.ts';
import { manualClock } from '../../platform/clock.ts';
import { AppError } from '../../platform/errors.ts';
import { newId } from '../../platform/ids.ts';
import { type LedgerService, ledgerService } from './billing.ledger.ts';
import { billingRepo } from './billing.repo.ts';

/**
 * The credit ledger on a real database: every movement balanced and idempotent, every
 * reservation resolving once, balances equal to the sum of postings. On server Postgres the
 * concurrency cases run with real parallel connections.
 */

let t: TestDb;
const clock = manualClock('2026-06-01T00:00:00Z');
let ledger: LedgerService;
const operator = { type: 'system', name: 'test' } as const;

beforeAll(async () => {
  t = await createTestDb();
  ledger = ledgerService({ db: t.db, repo: billingRepo, clock, settings: { reservationTtlMs: 15 * 60_000 } });
});
afterAll(async () => {
  await t?.drop();
});

const ws = () => newId('ws');
const key = () => `k-${newId('req')}`;

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    if (err instanceof AppError) return err.code;
    throw err;
  }
}

async function expectVerified(workspaceId: string) {
  const [report] = await ledger.verify(workspaceId);
  // A workspace that never had a movement has no balance row, and nothing to verify.
  if (!report) expect(await ledger.entries(workspaceId, { limit: 1 })).toEqual([]);
  else expect(report).toMatchObject({ workspaceId, ok: true });
}

describe('happy', () => {
  it('grants, reserves, settles and releases with balanced postings', async () => {
    const w = ws();
    await ledger.grant({ workspaceId: w, amountMicros: 10_000_000, idempotencyKey: key(), actor: operator });
    const r1 = await ledger.reserve({ workspaceId: w, keyId: null, requestId: newId('req'), amountMicros: 3_000_000 });
    expect(await ledger.balance(w)).toMatchObject({ availableMicros: 7_000_000, heldMicros: 3_000_000 });
    const settled = await ledger.settle(w, r1.id, 1_250_000);
    expect(settled).toMatchObject({ kind: 'settle', amountMicros: 1_250_000, availableAfterMicros: 8_750_000 });
    const r2 = await ledger.reserve({ workspaceId: w, keyId: null, requestId: newId('req'), amountMicros: 500_000 });
    await ledger.release(w, r2.id);
    expect(await ledger.balance(w)).toMatchObject({ availableMicros: 8_750_000, heldMicros: 0 });
    const entries = await ledger.entries(w, { limit: 10 });
    expect(entries.map((e) => e.kind)).toEqual(['release', 'reserve', 'settle', 'reserve', 'grant']);
    await expectVerified(w);
  });

  it('replays a key with the first result, and refuses it with other parameters', async () => {
    const w = ws();
    const k = key();
    const first = await ledger.grant({ workspaceId: w, amountMicros: 2_000_000, idempotencyKey: k, actor: operator });
    await ledger.grant({ workspaceId: w, amountMicros: 1, idempotencyKey: key(), actor: operator });
    const again = await ledger.grant({ workspaceId: w, amountMicros: 2_000_000, idempotencyKey: k, actor: operator });
    expect(again).toEqual(first);
    expect(await codeOf(ledger.grant({ workspaceId: w, amountMicros: 3, idempotencyKey: k, actor: operator }))).toBe(
      'idempotency_conflict',
    );
    expect(
      await codeOf(ledger.topUp({ workspaceId: w, amountMicros: 2_000_000, idempotencyKey: k, actor: operator })),
    ).toBe('idempotency_conflict');
    expect((await ledger.balance(w)).availableMicros).toBe(2_000_001);
    await expectVerified(w);
  });

  it('charges a cost above the reservation from what is available, never below zero', async () => {
    const w = ws();
    await ledger.grant({ workspaceId: w, amountMicros: 1_000, idempotencyKey: key(), actor: operator });
    const r = await ledger.reserve({ workspaceId: w, keyId: null, requestId: newId('req'), amountMicros: 600 });
    const s = await ledger.settle(w, r.id, 5_000);
    expect(s.amountMicros).toBe(1_000);
    expect(await ledger.balance(w)).toMatchObject({ availableMicros: 0, heldMicros: 0 });
    await expectVerified(w);
  });

  it('releases reservations left open past their expiry', async () => {
    const w = ws();
    await ledger.grant({ workspaceId: w, amountMicros: 1_000, idempotencyKey: key(), actor: operator });
    const r = await ledger.reserve({ workspaceId: w, keyId: null, requestId: newId('req'), amountMicros: 700 });
    clock.advance(15 * 60_000 - 1);
    await ledger.expireReservations();
    expect((await ledger.balance(w)).heldMicros).toBe(700);
    clock.advance(1);
    expect(await ledger.expireReservations()).toBeGreaterThanOrEqual(1);
    expect(await ledger.balance(w)).toMatchObject({ availableMicros: 1_000, heldMicros: 0 });
    expect(await codeOf(ledger.settle(w, r.id, 10))).toBe('reservation_closed');
    await expectVerified(w);
  });
});

describe('errors', () => {
  it('refuses bad amounts, double resolution and overdrafts, changing nothing', async () => {
    const w = ws();
    await ledger.grant({ workspaceId: w, amountMicros: 1_000, idempotencyKey: key(), actor: operator });
    for (const amountMicros of [0, -5, 1.5, Number.NaN, 2 ** 60]) {
      expect(await codeOf(ledger.grant({ workspaceId: w, amountMicros, idempotencyKey: key(), actor: operator }))).toBe(
        'invalid_amount',
      );
    }
    const r = await ledger.reserve({ workspaceId: w, keyId: null, requestId: newId('req'), amountMicros: 400 });
    await ledger.release(w, r.id);
    expect(await codeOf(ledger.settle(w, r.id, 10))).toBe('reservation_closed');
    expect(await codeOf(ledger.release(w, r.id))).toBe('reservation_closed');
    const r2 = await ledger.reserve({ workspaceId: w, keyId: null, requestId: newId('req'), amountMicros: 400 });
    await ledger.settle(w, r2.id, 100);
    expect(await codeOf(ledger.settle(w, r2.id, 100))).toBe('reservation_closed');
    expect(await codeOf(ledger.settle(w, 'rsv_nope', 1))).toBe('not_found');
    expect(
      await codeOf(ledger.reserve({ workspaceId: w, keyId: null, requestId: newId('req'), amountMicros: 901 })),
    ).toBe('insufficient_credits');
    expect(
      await codeOf(ledger.refund({ workspaceId: w, amountMicros: 901, idempotencyKey: key(), actor: operator })),
    ).toBe('insufficient_credits');
    expect(await ledger.balance(w)).toMatchObject({ availableMicros: 900, heldMicros: 0 });
    await expectVerified(w);
  });
});

describe('security', () => {
  it("finds a balance changed outside the ledger, and refuses another workspace's reservation", async () => {
    const w = ws();
    await ledger.grant({ workspaceId: w, amountMicros: 1_000, idempotencyKey: key(), actor: operator });
    const r = await ledger.reserve({ workspaceId: w, keyId: null, requestId: newId('req'), amountMicros: 300 });
    expect(await codeOf(ledger.settle(ws(), r.id, 10))).toBe('not_found');
    expect(await codeOf(ledger.release(ws(), r.id))).toBe('not_found');
    await expectVerified(w);
    await t.db.system((tx) =>
      tx.execute(sql`update credit_balances set available_micros = available_micros + 1 where workspace_id = ${w}`),
    );
    const [report] = await ledger.verify(w);
    expect(report).toMatchObject({ ok: false, availableMicros: 701, postedAvailableMicros: 700, heldMicros: 300 });
    await t.db.system((tx) =>
      tx.execute(sql`update credit_balances set available_micros = available_micros - 1 where workspace_id = ${w}`),
    );
    await expectVerified(w);
  });

  it('50 parallel reservations where the balance covers 10: exactly 10 succeed', async () => {
    const w = ws();
    await ledger.grant({ workspaceId: w, amountMicros: 10_000, idempotencyKey: key(), actor: operator });
    const results = await Promise.all(
      Array.from({ length: 50 }, () =>
        codeOf(ledger.reserve({ workspaceId: w, keyId: null, requestId: newId('req'), amountMicros: 1_000 })),
      ),
    );
    expect(results.filter((r) => r === 'ok')).toHaveLength(10);
    expect(results.filter((r) => r === 'insufficient_credits')).toHaveLength(40);
    expect(await ledger.balance(w)).toMatchObject({ availableMicros: 0, heldMicros: 10_000 });
    await expectVerified(w);
  });

  it('the same key sent 20 times at once makes one transaction, with identical replies', async () => {
    const w = ws();
    const k = key();
    const replies = await Promise.all(
      Array.from({ length: 20 }, () =>
        ledger.grant({ workspaceId: w, amountMicros: 777, idempotencyKey: k, actor: operator }),
      ),
    );
    for (const r of replies) expect(r).toEqual(replies[0]);
    expect(await ledger.entries(w, { limit: 100 })).toHaveLength(1);
    expect((await ledger.balance(w)).availableMicros).toBe(777);
    const requestId = newId('req');
    const reservations = await Promise.all(
      Array.from({ length: 20 }, () => ledger.reserve({ workspaceId: w, keyId: null, requestId, amountMicros: 100 })),
    );
    for (const r of reservations) expect(r).toEqual(reservations[0]);
    expect(await ledger.balance(w)).toMatchObject({ availableMicros: 677, heldMicros: 100 });
    await expectVerified(w);
  });

  it('keeps every invariant through random sequences of movements (model-based)', async () => {
    type Op =
      | { op: 'grant' | 'refund'; amount: number }
      | { op: 'reserve'; amount: number }
      | { op: 'settle'; pick: number; actual: number }
      | { op: 'release'; pick: number };
    const amount = fc.integer({ min: 1, max: 5_000 });
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ op: fc.constantFrom('grant' as const, 'refund' as const), amount }),
      fc.record({ op: fc.constant('reserve' as const), amount }),
      fc.record({ op: fc.constant('settle' as const), pick: fc.nat(), actual: fc.integer({ min: 0, max: 8_000 }) }),
      fc.record({ op: fc.constant('release' as const), pick: fc.nat() }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 25 }), async (ops) => {
        const w = ws();
        const model = { available: 0, held: 0 };
        const open: Array<{ id: string; amount: number }> = [];
        const closed: string[] = [];
        for (const o of ops) {
          if (o.op === 'grant') {
            await ledger.grant({ workspaceId: w, amountMicros: o.amount, idempotencyKey: key(), actor: operator });
            model.available += o.amount;
          } else if (o.op === 'refund') {
            const code = await codeOf(
              ledger.refund({ workspaceId: w, amountMicros: o.amount, idempotencyKey: key(), actor: operator }),
            );
            expect(code).toBe(o.amount <= model.available ? 'ok' : 'insufficient_credits');
            if (code === 'ok') model.available -= o.amount;
          } else if (o.op === 'reserve') {
            const code = await codeOf(
              ledger
                .reserve({ workspaceId: w, keyId: null, requestId: newId('req'), amountMicros: o.amount })
                .then((r) => open.push({ id: r.id, amount: o.amount })),
            );
            expect(code).toBe(o.amount <= model.available ? 'ok' : 'insufficient_credits');
            if (code === 'ok') {
              model.available -= o.amount;
              model.held += o.amount;
            }
          } else if (open.length === 0 && (o.op === 'settle' || o.op === 'release')) {
            // Nothing open: resolving one that was resolved before is refused.
            const gone = closed[o.pick % Math.max(1, closed.length)];
            if (gone) expect(await codeOf(ledger.release(w, gone))).toBe('reservation_closed');
          } else if (o.op === 'settle' || o.op === 'release') {
            const [r] = open.splice(o.pick % open.length, 1);
            if (!r) continue;
            closed.push(r.id);
            model.held -= r.amount;
            if (o.op === 'release') {
              await ledger.release(w, r.id);
              model.available += r.amount;
            } else {
              const charged =
                Math.min(o.actual, r.amount) + Math.max(0, Math.min(o.actual - r.amount, model.available));
              const s = await ledger.settle(w, r.id, o.actual);
              expect(s.amountMicros).toBe(charged);
              model.available += r.amount - charged;
            }
          }
          expect(await ledger.balance(w)).toMatchObject({ availableMicros: model.available, heldMicros: model.held });
        }
        await expectVerified(w);
      }),
      { numRuns: onServerPostgres() ? 15 : 25 },
    );
  });
});
