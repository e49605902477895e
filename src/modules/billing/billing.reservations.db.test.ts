import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDb, onServerPostgres, type TestDb } from '../../../test/helpers/db.ts';
import { manualClock } from '../../platform/clock.ts';
import { AppError } from '../../platform/errors.ts';
import { newId } from '../../platform/ids.ts';
import { budgetsRepo } from './billing.budgets.repo.ts';
import { type LedgerService, ledgerService } from './billing.ledger.ts';
import { billingRepo } from './billing.repo.ts';
import { reservationsRepo } from './billing.reservations.repo.ts';
import { reservationQueue } from './billing.reservations.ts';

/**
 * The ledger's group commit: operations submitted together are decided in one transaction,
 * in submission order, each seeing the ones before it. A model-based test submits random
 * groups at once (reservations, settlements, releases, replays of request ids, resolutions
 * of closed reservations, across workspaces with and without a budget) and checks every
 * answer against a sequential model, then the balances, the budgets and the postings.
 */

let t: TestDb;
const clock = manualClock('2026-06-10T08:00:00Z');
let ledger: LedgerService;
const operator = { type: 'system', name: 'test' } as const;

beforeAll(async () => {
  t = await createTestDb();
  ledger = ledgerService({
    db: t.db,
    repo: billingRepo,
    clock,
    settings: { reservationTtlMs: 15 * 60_000 },
  });
});
afterAll(async () => {
  await t?.drop();
});

async function outcome<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; code: string }> {
  try {
    return { ok: true, value: await p };
  } catch (err) {
    if (err instanceof AppError) return { ok: false, code: err.code };
    throw err;
  }
}

/** A monthly workspace budget set straight in the tables (the service's checks are tested over HTTP). */
async function addBudget(workspaceId: string, limitMicros: number) {
  await t.db.tenant(workspaceId, async (tx) => {
    const now = clock.now();
    await budgetsRepo.lockBalance(tx, workspaceId, now);
    await budgetsRepo.addToCount(tx, workspaceId, 1);
    await budgetsRepo.insert(tx, {
      id: newId('bud'),
      workspaceId,
      keyId: null,
      period: 'month',
      limitMicros,
      createdBy: null,
      createdAt: now,
      updatedAt: now,
    });
  });
}

type Model = {
  available: number;
  held: number;
  budget: { limit: number; spent: number; held: number } | null;
  open: Map<string, number>;
  closed: string[];
  requests: Map<string, { amount: number; reservationId: string }>;
};

type Op =
  | { op: 'reserve'; ws: number; amount: number }
  | { op: 'replay'; ws: number; pick: number; same: boolean }
  | { op: 'settle'; ws: number; pick: number; actual: number }
  | { op: 'release'; ws: number; pick: number }
  | { op: 'closed'; ws: number; pick: number };

describe('group commit', () => {
  it('answers every operation of concurrent groups as a sequential ledger would (model-based)', async () => {
    const amount = fc.integer({ min: 0, max: 4_000 });
    const wsIx = fc.integer({ min: 0, max: 2 });
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 4, arbitrary: fc.record({ op: fc.constant('reserve' as const), ws: wsIx, amount }) },
      {
        weight: 1,
        arbitrary: fc.record({ op: fc.constant('replay' as const), ws: wsIx, pick: fc.nat(), same: fc.boolean() }),
      },
      {
        weight: 3,
        arbitrary: fc.record({
          op: fc.constant('settle' as const),
          ws: wsIx,
          pick: fc.nat(),
          actual: fc.integer({ min: 0, max: 6_000 }),
        }),
      },
      { weight: 2, arbitrary: fc.record({ op: fc.constant('release' as const), ws: wsIx, pick: fc.nat() }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('closed' as const), ws: wsIx, pick: fc.nat() }) },
    );
    const groups = fc.array(fc.array(op, { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 6 });
    await fc.assert(
      fc.asyncProperty(groups, fc.integer({ min: 2_000, max: 20_000 }), async (steps, limit) => {
        // Three workspaces: two without a budget, one with a monthly one.
        const ids = [newId('ws'), newId('ws'), newId('ws')];
        const models: Model[] = [];
        for (const [i, w] of ids.entries()) {
          await ledger.grant({ workspaceId: w, amountMicros: 12_000, idempotencyKey: `fund-${w}`, actor: operator });
          if (i === 2) await addBudget(w, limit);
          models.push({
            available: 12_000,
            held: 0,
            budget: i === 2 ? { limit, spent: 0, held: 0 } : null,
            open: new Map(),
            closed: [],
            requests: new Map(),
          });
        }
        for (const group of steps) {
          // Operations on reservations open before the group (a call settles what it reserved earlier).
          const openAtStart = models.map((m) => [...m.open.keys()]);
          const taken = new Set<string>();
          const expected: Array<{ ok: boolean; code?: string; amount?: number; reservationId?: string }> = [];
          const calls: Array<Promise<unknown>> = [];
          for (const o of group) {
            const m = models[o.ws] as Model;
            const w = ids[o.ws] as string;
            if (o.op === 'reserve' || o.op === 'replay') {
              const requests = [...m.requests.entries()];
              const replayOf = o.op === 'replay' ? requests[o.pick % Math.max(1, requests.length)] : undefined;
              const requestId = replayOf?.[0] ?? newId('req');
              const amt = o.op === 'reserve' ? o.amount : replayOf ? replayOf[1].amount + (o.same ? 0 : 1) : 1;
              const seen = m.requests.get(requestId);
              if (seen) {
                expected.push(
                  seen.amount === amt
                    ? { ok: true, reservationId: seen.reservationId }
                    : { ok: false, code: 'idempotency_conflict' },
                );
              } else if (amt > m.available) {
                expected.push({ ok: false, code: 'insufficient_credits' });
              } else if (m.budget && m.budget.spent + m.budget.held + amt > m.budget.limit) {
                expected.push({ ok: false, code: 'budget_exceeded' });
              } else {
                m.available -= amt;
                m.held += amt;
                if (m.budget) m.budget.held += amt;
                expected.push({ ok: true });
              }
              const ix = expected.length - 1;
              calls.push(
                outcome(ledger.reserve({ workspaceId: w, keyId: null, requestId, amountMicros: amt })).then((r) => {
                  const e = expected[ix];
                  if (r.ok && e?.ok && !e.reservationId) {
                    m.requests.set(requestId, { amount: amt, reservationId: r.value.id });
                    m.open.set(r.value.id, amt);
                  }
                  return r;
                }),
              );
              continue;
            }
            const candidates = o.op === 'closed' ? m.closed : (openAtStart[o.ws] ?? []).filter((id) => !taken.has(id));
            const id = candidates[o.pick % Math.max(1, candidates.length)];
            if (!id) continue;
            if (o.op === 'closed') {
              expected.push({ ok: false, code: 'reservation_closed' });
              calls.push(outcome(ledger.release(w, id)));
              continue;
            }
            taken.add(id);
            const reserved = m.open.get(id) ?? 0;
            m.open.delete(id);
            m.closed.push(id);
            m.held -= reserved;
            if (m.budget) m.budget.held -= reserved;
            if (o.op === 'release') {
              m.available += reserved;
              expected.push({ ok: true, amount: reserved });
              calls.push(outcome(ledger.release(w, id)));
            } else {
              const charged = Math.min(o.actual, reserved) + Math.max(0, Math.min(o.actual - reserved, m.available));
              m.available += reserved - charged;
              if (m.budget) m.budget.spent += charged;
              expected.push({ ok: true, amount: charged });
              calls.push(outcome(ledger.settle(w, id, o.actual)));
            }
          }
          const answers = (await Promise.all(calls)) as Array<
            { ok: true; value: { id?: string; amountMicros?: number } } | { ok: false; code: string }
          >;
          for (const [i, a] of answers.entries()) {
            const e = expected[i];
            if (!e?.ok) {
              expect(a).toEqual({ ok: false, code: e?.code });
              continue;
            }
            expect(a.ok).toBe(true);
            if (!a.ok) continue;
            if (e.reservationId) expect(a.value.id).toBe(e.reservationId);
            if (e.amount !== undefined) expect(a.value.amountMicros).toBe(e.amount);
          }
        }
        for (const [i, w] of ids.entries()) {
          const m = models[i] as Model;
          expect(await ledger.balance(w)).toMatchObject({ availableMicros: m.available, heldMicros: m.held });
          expect((await ledger.verify(w))[0]?.ok).toBe(true);
          if (m.budget) {
            const rows = await t.db.tenant(w, async (tx) => {
              const list = await budgetsRepo.list(tx, w);
              return budgetsRepo.periodsOf(
                tx,
                w,
                list.map((b) => ({ budgetId: b.id, start: new Date('2026-06-01T00:00:00Z') })),
              );
            });
            // No call counted against the budget yet: no period row.
            expect(rows[0] ?? { spentMicros: 0, heldMicros: 0 }).toMatchObject({
              spentMicros: m.budget.spent,
              heldMicros: m.budget.held,
            });
          }
        }
      }),
      { numRuns: onServerPostgres() ? 12 : 20 },
    );
  });
});

describe('errors', () => {
  it('answers an operation the database refuses with its error, and its batch-mates with theirs', async () => {
    const refused = Object.assign(new Error('new row violates a check constraint'), { code: '23514' });
    let failedBatches = 0;
    const repo: typeof reservationsRepo = {
      ...reservationsRepo,
      async writeBatch(tx, w, now) {
        if (w.transactions.some((x) => x.idempotencyKey === 'reserve:poison')) {
          failedBatches++;
          throw refused;
        }
        return reservationsRepo.writeBatch(tx, w, now);
      },
    };
    const queue = reservationQueue({ db: t.db, repo, clock, reservationTtlMs: 60_000 });
    const w = newId('ws');
    await ledger.grant({ workspaceId: w, amountMicros: 10_000, idempotencyKey: `fund-${w}`, actor: operator });
    const reserve = (requestId: string) =>
      queue.submit({ kind: 'reserve', workspaceId: w, keyId: null, requestId, amountMicros: 1_000, actor: operator });
    // The first goes alone; the other three gather into one batch while it is written.
    const answers = await Promise.allSettled([
      reserve('first'),
      reserve('second'),
      reserve('poison'),
      reserve('third'),
    ]);
    expect(answers.map((a) => a.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    expect((answers[2] as PromiseRejectedResult).reason).toBe(refused);
    // Once as part of the batch, once alone.
    expect(failedBatches).toBe(2);
    expect(await ledger.balance(w)).toMatchObject({ availableMicros: 7_000, heldMicros: 3_000 });
    expect((await ledger.verify(w))[0]?.ok).toBe(true);
  });
});
