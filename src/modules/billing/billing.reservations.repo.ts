import { and, inArray, type SQL, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { type BudgetPeriodRow, type BudgetRow, budgets } from './billing.budgets.tables.ts';
import type { BatchWrites } from './billing.reservations.plan.ts';
import {
  creditBalances,
  creditReservations,
  ledgerTransactions,
  type PostingRow,
  type ReservationRow,
  type TransactionRow,
} from './billing.tables.ts';

/**
 * The statements of a batch of reservations, settlements and releases: a fixed number per
 * batch whatever its size (reads by lists of ids, writes with one array parameter per
 * column through unnest), so concurrent calls share one transaction's round trips.
 */

type Rows = { rows: Array<Record<string, unknown>> };
const rowsOf = (res: unknown) => (res as Rows).rows;
const num = (v: unknown) => Number(v);
const date = (v: unknown) => (v instanceof Date ? v : new Date(String(v)));
const iso = (d: Date) => d.toISOString();

export type LockedBalance = { workspaceId: string; availableMicros: number; heldMicros: number; budgetCount: number };

export const reservationsRepo = {
  /** Locks the workspaces' balance rows, in workspace order (so two batches never deadlock). */
  async lockBalances(tx: Database, workspaceIds: string[]): Promise<LockedBalance[]> {
    return tx
      .select({
        workspaceId: creditBalances.workspaceId,
        availableMicros: creditBalances.availableMicros,
        heldMicros: creditBalances.heldMicros,
        budgetCount: creditBalances.budgetCount,
      })
      .from(creditBalances)
      .where(inArray(creditBalances.workspaceId, workspaceIds))
      .orderBy(creditBalances.workspaceId)
      .for('update');
  },

  async ensureBalances(tx: Database, workspaceIds: string[], now: Date): Promise<void> {
    await tx.execute(sql`
      insert into credit_balances (workspace_id, available_micros, held_micros, updated_at)
      select w, 0, 0, ${iso(now)}::timestamptz from unnest(${sql.param(workspaceIds)}::text[]) as w
      on conflict (workspace_id) do nothing`);
  },

  /** Transactions made before with these reservation keys (the caller matches them to their workspaces). */
  async findByKeys(tx: Database, workspaceIds: string[], keys: string[]): Promise<TransactionRow[]> {
    return tx
      .select()
      .from(ledgerTransactions)
      .where(
        and(inArray(ledgerTransactions.workspaceId, workspaceIds), inArray(ledgerTransactions.idempotencyKey, keys)),
      );
  },

  /** Locks reservations by id within the batch's workspaces, in id order. */
  async lockReservations(tx: Database, workspaceIds: string[], ids: string[]): Promise<ReservationRow[]> {
    return tx
      .select()
      .from(creditReservations)
      .where(and(inArray(creditReservations.id, ids), inArray(creditReservations.workspaceId, workspaceIds)))
      .orderBy(creditReservations.id)
      .for('update');
  },

  async budgetsOf(tx: Database, workspaceIds: string[]): Promise<BudgetRow[]> {
    return tx.select().from(budgets).where(inArray(budgets.workspaceId, workspaceIds)).orderBy(budgets.id);
  },

  /** Creates the missing (budget, period) rows and locks them all, in key order. */
  async lockBudgetPeriods(
    tx: Database,
    keys: Array<{ budgetId: string; workspaceId: string; periodStart: Date }>,
  ): Promise<BudgetPeriodRow[]> {
    const budgetIds = sql.param(keys.map((k) => k.budgetId));
    const workspaceIds = sql.param(keys.map((k) => k.workspaceId));
    const starts = sql.param(keys.map((k) => iso(k.periodStart)));
    await tx.execute(sql`
      insert into budget_periods (budget_id, workspace_id, period_start)
      select * from unnest(${budgetIds}::text[], ${workspaceIds}::text[], ${starts}::timestamptz[])
      on conflict do nothing`);
    const res = await tx.execute(sql`
      select p.budget_id, p.workspace_id, p.period_start, p.spent_micros::text as spent, p.held_micros::text as held,
        p.reached_pct, p.notified_pct
      from budget_periods p
      join unnest(${budgetIds}::text[], ${workspaceIds}::text[], ${starts}::timestamptz[])
        as k(budget_id, workspace_id, period_start)
        on p.budget_id = k.budget_id and p.workspace_id = k.workspace_id and p.period_start = k.period_start
      order by p.budget_id, p.period_start for update of p`);
    return rowsOf(res).map((r) => ({
      budgetId: String(r.budget_id),
      workspaceId: String(r.workspace_id),
      periodStart: date(r.period_start),
      spentMicros: num(r.spent),
      heldMicros: num(r.held),
      reachedPct: num(r.reached_pct),
      notifiedPct: num(r.notified_pct),
    }));
  },

  /**
   * Writes a decided batch in one statement: its transactions, their postings, new
   * reservations, resolved ones, the balances and budget periods. Only the parts the batch
   * has are sent (a smaller statement is planned faster: this runs for every call).
   * Foreign keys are checked at the statement's end, when the transactions exist.
   */
  async writeBatch(tx: Database, w: BatchWrites, now: Date): Promise<void> {
    const parts: SQL[] = [];
    if (w.transactions.length > 0) {
      const t = <K extends keyof TransactionRow>(k: K) => sql.param(w.transactions.map((r) => r[k]));
      parts.push(sql`new_transactions as (
        insert into ledger_transactions (id, workspace_id, kind, idempotency_key, request_hash, amount_micros,
          reservation_id, available_after_micros, held_after_micros, actor_type, actor_id, memo, created_at)
        select * from unnest(${t('id')}::text[], ${t('workspaceId')}::text[], ${t('kind')}::text[],
          ${t('idempotencyKey')}::text[], ${t('requestHash')}::text[], ${t('amountMicros')}::bigint[],
          ${t('reservationId')}::text[], ${t('availableAfterMicros')}::bigint[], ${t('heldAfterMicros')}::bigint[],
          ${t('actorType')}::text[], ${t('actorId')}::text[], ${t('memo')}::text[],
          ${sql.param(w.transactions.map((r) => iso(r.createdAt)))}::timestamptz[]))`);
    }
    if (w.postings.length > 0) {
      const p = <K extends keyof PostingRow>(k: K) => sql.param(w.postings.map((r) => r[k]));
      parts.push(sql`new_postings as (
        insert into ledger_postings (transaction_id, workspace_id, account, amount_micros)
        select * from unnest(${p('transactionId')}::text[], ${p('workspaceId')}::text[], ${p('account')}::text[],
          ${p('amountMicros')}::bigint[]))`);
    }
    if (w.newReservations.length > 0) {
      const n = <K extends keyof ReservationRow>(k: K) => sql.param(w.newReservations.map((r) => r[k]));
      // Arrays of arrays do not bind as text[][] rows of different lengths: budget ids travel joined.
      const budgetIds = sql.param(w.newReservations.map((r) => (r.budgetIds ? r.budgetIds.join(',') : null)));
      parts.push(sql`new_reservations as (
        insert into credit_reservations (id, workspace_id, key_id, request_id, amount_micros, status, expires_at,
          created_at, budget_ids, kind)
        select u.id, u.workspace_id, u.key_id, u.request_id, u.amount, 'open', u.expires_at, u.created_at,
          case when u.budgets is null then null else string_to_array(u.budgets, ',') end, u.kind
        from unnest(${n('id')}::text[], ${n('workspaceId')}::text[], ${n('keyId')}::text[], ${n('requestId')}::text[],
          ${n('amountMicros')}::bigint[], ${sql.param(w.newReservations.map((r) => iso(r.expiresAt)))}::timestamptz[],
          ${sql.param(w.newReservations.map((r) => iso(r.createdAt)))}::timestamptz[], ${budgetIds}::text[],
          ${n('kind')}::text[])
          as u(id, workspace_id, key_id, request_id, amount, expires_at, created_at, budgets, kind))`);
    }
    if (w.resolved.length > 0) {
      parts.push(sql`resolved as (
        update credit_reservations r set status = u.status, settled_micros = u.settled, resolved_at = u.resolved_at
        from unnest(${sql.param(w.resolved.map((r) => r.id))}::text[], ${sql.param(w.resolved.map((r) => r.status))}::text[],
          ${sql.param(w.resolved.map((r) => r.settledMicros))}::bigint[],
          ${sql.param(w.resolved.map((r) => iso(r.resolvedAt)))}::timestamptz[]) as u(id, status, settled, resolved_at)
        where r.id = u.id and r.workspace_id = any(${sql.param(w.balances.map((b) => b.workspaceId))}::text[]))`);
    }
    if (w.periods.length > 0) {
      parts.push(sql`periods as (
        update budget_periods bp set spent_micros = u.spent, held_micros = u.held, reached_pct = u.reached
        from unnest(${sql.param(w.periods.map((r) => r.budgetId))}::text[],
          ${sql.param(w.periods.map((r) => iso(r.periodStart)))}::timestamptz[],
          ${sql.param(w.periods.map((r) => r.spentMicros))}::bigint[],
          ${sql.param(w.periods.map((r) => r.heldMicros))}::bigint[],
          ${sql.param(w.periods.map((r) => r.reachedPct))}::int[]) as u(budget_id, period_start, spent, held, reached)
        where bp.budget_id = u.budget_id and bp.period_start = u.period_start)`);
    }
    if (w.balances.length === 0) return;
    // The balances last, as the statement's main part.
    const balances = sql`update credit_balances b set available_micros = u.available, held_micros = u.held,
        updated_at = ${iso(now)}::timestamptz
      from unnest(${sql.param(w.balances.map((r) => r.workspaceId))}::text[],
        ${sql.param(w.balances.map((r) => r.availableMicros))}::bigint[],
        ${sql.param(w.balances.map((r) => r.heldMicros))}::bigint[]) as u(workspace_id, available, held)
      where b.workspace_id = u.workspace_id`;
    await tx.execute(parts.length > 0 ? sql`with ${sql.join(parts, sql`, `)} ${balances}` : balances);
  },
};

export type ReservationsRepo = typeof reservationsRepo;
