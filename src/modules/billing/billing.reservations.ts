import type { Clock } from '../../platform/clock.ts';
import { type Database, type Db, isUniqueViolation } from '../../platform/db/db.ts';
import type { BudgetPeriodRow, BudgetRow } from './billing.budgets.tables.ts';
import {
  type BatchState,
  type OpResult,
  periodKey,
  periodsNeeded,
  planBatch,
  type ReservationOp,
  seenKey,
} from './billing.reservations.plan.ts';
import type { ReservationsRepo } from './billing.reservations.repo.ts';
import type { TransactionRow } from './billing.tables.ts';

export type { ReservationOp } from './billing.reservations.plan.ts';

type Deps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: ReservationsRepo;
  clock: Clock;
  reservationTtlMs: number;
  /** Most operations in one transaction. */
  maxBatch?: number;
  /** Most batches in flight at once (each on its own connection). */
  maxInFlight?: number;
};

type Pending = { op: ReservationOp; resolve(row: TransactionRow): void; reject(err: unknown): void };

/**
 * Group commit for the ledger's hot path. Reservations, settlements and releases queue;
 * while a batch is in flight the next one gathers, then runs as one transaction: the
 * balances of its workspaces (and their budget periods) are locked once, every operation
 * is decided in order on them, and all their transactions, postings and reservation
 * changes are written with a fixed number of statements. Each caller is answered only
 * once its batch committed, so nothing is acknowledged that a crash could lose, and the
 * balance row of a busy workspace is locked once per batch instead of once per call.
 */
export function reservationQueue(deps: Deps) {
  const { db, repo, clock } = deps;
  const maxBatch = deps.maxBatch ?? 256;
  const maxInFlight = deps.maxInFlight ?? 1;
  const queue: Pending[] = [];
  let inFlight = 0;

  async function runIn(tx: Database, ops: ReservationOp[]): Promise<OpResult[]> {
    const now = clock.now();
    const wsIds = [...new Set(ops.map((o) => o.workspaceId))].sort();
    let locked = await repo.lockBalances(tx, wsIds);
    if (locked.length < wsIds.length) {
      // A workspace's first movement: its balance row starts at zero.
      await repo.ensureBalances(tx, wsIds, now);
      locked = await repo.lockBalances(tx, wsIds);
    }
    const balances = new Map(locked.map((b) => [b.workspaceId, b]));
    const reserveKeys = ops.flatMap((o) => (o.kind === 'reserve' ? [`reserve:${o.requestId}`] : []));
    const resolveIds = ops.flatMap((o) => (o.kind === 'reserve' ? [] : [o.reservationId]));
    const seenRows = reserveKeys.length > 0 ? await repo.findByKeys(tx, wsIds, reserveKeys) : [];
    const reservationRows =
      resolveIds.length > 0 ? await repo.lockReservations(tx, wsIds, [...new Set(resolveIds)].sort()) : [];
    const reservations = new Map(reservationRows.map((r) => [r.id, r]));
    const budgeted = locked.filter((b) => b.budgetCount > 0).map((b) => b.workspaceId);
    const budgets = new Map<string, BudgetRow[]>();
    const periods = new Map<string, BudgetPeriodRow>();
    if (budgeted.length > 0) {
      for (const b of await repo.budgetsOf(tx, budgeted)) {
        budgets.set(b.workspaceId, [...(budgets.get(b.workspaceId) ?? []), b]);
      }
      const needed = periodsNeeded(ops, budgets, reservations, now);
      if (needed.length > 0) {
        for (const p of await repo.lockBudgetPeriods(tx, needed)) periods.set(periodKey(p.budgetId, p.periodStart), p);
      }
    }
    const state: BatchState = {
      balances,
      seen: new Map(seenRows.map((r) => [seenKey(r.workspaceId, r.idempotencyKey), r])),
      reservations,
      budgets,
      periods,
    };
    const { results, writes } = planBatch(ops, state, now, deps.reservationTtlMs);
    await repo.writeBatch(tx, writes, now);
    return results;
  }

  async function run(batch: Pending[]) {
    const ops = batch.map((p) => p.op);
    const only = ops[0]?.workspaceId;
    const single = only !== undefined && ops.every((o) => o.workspaceId === only);
    let results: OpResult[] | null = null;
    for (let attempt = 0; results === null; attempt++) {
      try {
        // One workspace: bound to it, so row-level security is the second lock; several: system work.
        results = await (single ? db.tenant(only, (tx) => runIn(tx, ops)) : db.system((tx) => runIn(tx, ops)));
      } catch (err) {
        // Another replica committed one of these keys meanwhile: the retry reads it as a replay.
        if (attempt < 2 && isUniqueViolation(err)) continue;
        if (batch.length > 1) {
          // One operation the database refuses must not fail its batch-mates: each alone.
          for (const p of batch) await run([p]);
          return;
        }
        for (const p of batch) p.reject(err);
        return;
      }
    }
    batch.forEach((p, i) => {
      const r = results?.[i];
      if (r?.ok) p.resolve(r.row);
      else p.reject(r?.error ?? new Error('no result for a batched ledger operation'));
    });
  }

  function pump() {
    while (inFlight < maxInFlight && queue.length > 0) {
      const batch = queue.splice(0, maxBatch);
      inFlight++;
      void run(batch).finally(() => {
        inFlight--;
        pump();
      });
    }
  }

  return {
    /** Queues one operation; answers its transaction once its batch committed, or rejects with why it was refused. */
    submit(op: ReservationOp): Promise<TransactionRow> {
      return new Promise((resolve, reject) => {
        queue.push({ op, resolve, reject });
        pump();
      });
    },
  };
}

export type ReservationQueue = ReturnType<typeof reservationQueue>;
