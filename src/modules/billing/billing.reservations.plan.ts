import { AppError } from '../../platform/errors.ts';
import type { Actor } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import { type BudgetLine, budgetsApplying, reachedPct } from './billing.budgets.rules.ts';
import type { BudgetPeriodRow, BudgetRow } from './billing.budgets.tables.ts';
import { periodStart } from './billing.calendar.ts';
import { movementHash, postingsOf, transactionRow } from './billing.movements.ts';
import type { LockedBalance } from './billing.reservations.repo.ts';
import type { PostingRow, ReservationRow, TransactionRow } from './billing.tables.ts';

// The decisions of the ledger's group commit, apart from its I/O (billing.reservations.ts).

/** One call's movement on the ledger's hot path. */
export type ReservationOp =
  | {
      kind: 'reserve';
      workspaceId: string;
      keyId: string | null;
      requestId: string;
      amountMicros: number;
      /**
       * The credit lease a gateway replica asks for instead (more than `amountMicros`):
       * granted while the workspace has no budgets and at least LEASE_HEADROOM leases'
       * worth available; otherwise exactly `amountMicros` is reserved for the one call.
       */
      leaseMicros?: number;
      actor: Actor;
    }
  | {
      kind: 'settle';
      workspaceId: string;
      reservationId: string;
      actualMicros: number;
      actor: Actor;
      memo?: string | null;
    }
  | {
      kind: 'release';
      workspaceId: string;
      reservationId: string;
      status: 'released' | 'expired';
      actor: Actor;
    };

/** What an operation answers: its ledger transaction, or why it was refused. */
export type OpResult = { ok: true; row: TransactionRow } | { ok: false; error: AppError };

/** Everything a batch read, locked in its transaction. */
export type BatchState = {
  balances: Map<string, LockedBalance>;
  /** Transactions made before with the batch's reserve keys, by `workspace \n key`. */
  seen: Map<string, TransactionRow>;
  reservations: Map<string, ReservationRow>;
  budgets: Map<string, BudgetRow[]>;
  /** Budget periods by `budget \n period start`. */
  periods: Map<string, BudgetPeriodRow>;
};

/** What a batch writes. */
export type BatchWrites = {
  transactions: TransactionRow[];
  postings: PostingRow[];
  newReservations: ReservationRow[];
  resolved: Array<{ id: string; status: ReservationRow['status']; settledMicros: number | null; resolvedAt: Date }>;
  balances: LockedBalance[];
  periods: BudgetPeriodRow[];
};

const insufficientCredits = () =>
  new AppError('insufficient_credits', 'The workspace does not have enough credits for this.');

export const seenKey = (workspaceId: string, key: string) => `${workspaceId}\n${key}`;
export const periodKey = (budgetId: string, start: Date) => `${budgetId}\n${start.toISOString()}`;

/** The request hash of a reservation: a replayed request id with another amount is refused. */
const reserveParams = (requestId: string, amount: number, lease: number | undefined) =>
  lease === undefined ? { request: requestId, amount } : { request: requestId, amount, lease };

/** The memo of a lease's reservation: how the ledger's reply says a lease was granted. */
export const LEASE_MEMO = 'credit lease';

/**
 * A lease is granted only while the workspace has this many leases' worth available: near
 * the end of a balance every call reserves its own worst case, so a lease held by one
 * replica never refuses a call another could have paid for.
 */
export const LEASE_HEADROOM = 10;

/**
 * Decides a batch in memory, in arrival order, on the balances and budget periods it
 * locked: each operation sees the effect of the ones before it, exactly as if each had run
 * in a transaction of its own. Pure: the caller reads the state and writes the result.
 */
export function planBatch(
  ops: ReservationOp[],
  state: BatchState,
  now: Date,
  reservationTtlMs: number,
): { results: OpResult[]; writes: BatchWrites } {
  const writes: BatchWrites = {
    transactions: [],
    postings: [],
    newReservations: [],
    resolved: [],
    balances: [],
    periods: [],
  };
  const touchedBalances = new Set<LockedBalance>();
  const touchedPeriods = new Set<BudgetPeriodRow>();

  function record(
    ws: LockedBalance,
    kind: TransactionRow['kind'],
    params: Record<string, unknown>,
    key: string,
    amount: number,
    moves: { available: number; held: number },
    actor: Actor,
    reservationId: string,
    memo: string | null = null,
  ): TransactionRow {
    ws.availableMicros += moves.available;
    ws.heldMicros += moves.held;
    touchedBalances.add(ws);
    const row = transactionRow({
      workspaceId: ws.workspaceId,
      kind,
      idempotencyKey: key,
      requestHash: movementHash(kind, params),
      amountMicros: amount,
      reservationId,
      after: ws,
      actor,
      memo,
      now,
    });
    writes.transactions.push(row);
    writes.postings.push(...postingsOf(row, moves));
    return row;
  }

  function periodOf(budgetId: string, start: Date): BudgetPeriodRow | undefined {
    return state.periods.get(periodKey(budgetId, start));
  }

  function reserve(op: Extract<ReservationOp, { kind: 'reserve' }>): OpResult {
    const key = `reserve:${op.requestId}`;
    const params = reserveParams(op.requestId, op.amountMicros, op.leaseMicros);
    const hash = movementHash('reserve', params);
    const before = state.seen.get(seenKey(op.workspaceId, key));
    if (before) {
      if (before.requestHash !== hash || before.kind !== 'reserve') {
        return {
          ok: false,
          error: new AppError('idempotency_conflict', 'This request id was already used for another reservation.'),
        };
      }
      return { ok: true, row: before };
    }
    const ws = state.balances.get(op.workspaceId);
    if (!ws || ws.availableMicros < op.amountMicros) return { ok: false, error: insufficientCredits() };
    const want = op.leaseMicros ?? 0;
    const lease = want > op.amountMicros && ws.budgetCount === 0 && ws.availableMicros >= want * LEASE_HEADROOM;
    const amount = lease ? want : op.amountMicros;
    const lines: BudgetLine[] = [];
    for (const b of budgetsApplying(state.budgets.get(op.workspaceId) ?? [], op.keyId)) {
      const p = periodOf(b.id, periodStart(b.period, now));
      if (!p) throw new Error(`budget period of ${b.id} was not locked`);
      if (p.spentMicros + p.heldMicros + amount > b.limitMicros) {
        const whose = b.keyId ? 'this API key' : 'the workspace';
        return {
          ok: false,
          error: new AppError(
            'budget_exceeded',
            `The ${b.period === 'day' ? 'daily' : 'monthly'} budget of ${whose} does not cover this call's worst-case cost.`,
          ),
        };
      }
      lines.push({ budget: b, period: p });
    }
    for (const { period } of lines) {
      period.heldMicros += amount;
      touchedPeriods.add(period);
    }
    const reservationId = newId('rsv', now);
    const row = record(
      ws,
      'reserve',
      params,
      key,
      amount,
      { available: -amount, held: amount },
      op.actor,
      reservationId,
      lease ? LEASE_MEMO : null,
    );
    state.seen.set(seenKey(op.workspaceId, key), row);
    const reservation: ReservationRow = {
      id: reservationId,
      workspaceId: op.workspaceId,
      keyId: op.keyId,
      requestId: op.requestId,
      amountMicros: amount,
      status: 'open',
      settledMicros: null,
      expiresAt: new Date(now.getTime() + reservationTtlMs),
      createdAt: now,
      resolvedAt: null,
      budgetIds: lines.length > 0 ? lines.map((l) => l.budget.id) : null,
      kind: lease ? 'lease' : 'call',
    };
    writes.newReservations.push(reservation);
    state.reservations.set(reservationId, reservation);
    return { ok: true, row };
  }

  function resolve(op: Exclude<ReservationOp, { kind: 'reserve' }>): OpResult {
    const r = state.reservations.get(op.reservationId);
    const ws = state.balances.get(op.workspaceId);
    if (!r || r.workspaceId !== op.workspaceId || !ws) {
      return { ok: false, error: new AppError('not_found', 'No such reservation.') };
    }
    if (r.status !== 'open') {
      return {
        ok: false,
        error: new AppError('reservation_closed', `This reservation was already ${r.status}; it resolves once.`),
      };
    }
    // The actual cost may exceed the reservation (the input was estimated): the excess is
    // charged from what is available, never below zero.
    const charge =
      op.kind === 'settle'
        ? Math.min(op.actualMicros, r.amountMicros) +
          Math.min(Math.max(0, op.actualMicros - r.amountMicros), ws.availableMicros)
        : 0;
    for (const budgetId of r.budgetIds ?? []) {
      const p = periodOf(budgetId, periodStart(budgetPeriodOf(budgetId), r.createdAt));
      if (!p) continue; // the budget was removed meanwhile
      p.heldMicros -= Math.min(p.heldMicros, r.amountMicros);
      p.spentMicros += charge;
      const limit = state.budgets.get(r.workspaceId)?.find((b) => b.id === budgetId)?.limitMicros;
      if (limit) p.reachedPct = Math.max(p.reachedPct, reachedPct(p.spentMicros, limit));
      touchedPeriods.add(p);
    }
    const status = op.kind === 'settle' ? 'settled' : op.status;
    r.status = status;
    const params =
      op.kind === 'settle'
        ? { reservation: r.id, amount: charge }
        : { reservation: r.id, amount: r.amountMicros, status };
    const row = record(
      ws,
      op.kind,
      params,
      `${op.kind}:${r.id}`,
      op.kind === 'settle' ? charge : r.amountMicros,
      { available: r.amountMicros - charge, held: -r.amountMicros },
      op.actor,
      r.id,
      status === 'expired' ? 'reservation expired' : op.kind === 'settle' ? (op.memo ?? null) : null,
    );
    writes.resolved.push({
      id: r.id,
      status,
      settledMicros: op.kind === 'settle' ? charge : null,
      resolvedAt: now,
    });
    return { ok: true, row };
  }

  const periodsOfBudget = new Map<string, BudgetRow['period']>();
  for (const list of state.budgets.values()) for (const b of list) periodsOfBudget.set(b.id, b.period);
  const budgetPeriodOf = (id: string) => periodsOfBudget.get(id) ?? 'month';

  const results = ops.map((op) => (op.kind === 'reserve' ? reserve(op) : resolve(op)));
  writes.balances = [...touchedBalances];
  writes.periods = [...touchedPeriods];
  return { results, writes };
}

/** The (budget, period) rows a batch must lock: this period's for reservations, the reservation's own for the rest. */
export function periodsNeeded(
  ops: ReservationOp[],
  budgetsByWs: Map<string, BudgetRow[]>,
  reservations: Map<string, ReservationRow>,
  now: Date,
): Array<{ budgetId: string; workspaceId: string; periodStart: Date }> {
  const keys = new Map<string, { budgetId: string; workspaceId: string; periodStart: Date }>();
  const add = (b: BudgetRow, start: Date) =>
    keys.set(periodKey(b.id, start), {
      budgetId: b.id,
      workspaceId: b.workspaceId,
      periodStart: start,
    });
  for (const op of ops) {
    const list = budgetsByWs.get(op.workspaceId);
    if (!list || list.length === 0) continue;
    if (op.kind === 'reserve') {
      for (const b of budgetsApplying(list, op.keyId)) add(b, periodStart(b.period, now));
      continue;
    }
    const r = reservations.get(op.reservationId);
    if (!r?.budgetIds) continue;
    for (const b of list) if (r.budgetIds.includes(b.id)) add(b, periodStart(b.period, r.createdAt));
  }
  return [...keys.values()].sort((a, b) =>
    a.budgetId === b.budgetId ? a.periodStart.getTime() - b.periodStart.getTime() : a.budgetId < b.budgetId ? -1 : 1,
  );
}
