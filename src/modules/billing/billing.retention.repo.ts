import { sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';

type Rows<T> = { rows: T[] };
const rowsOf = <T>(res: unknown) => (res as Rows<T>).rows;
const ts = (d: Date) => sql`${d.toISOString()}::timestamptz`;
const count = (res: unknown) => Number(rowsOf<{ n: string | number }>(res)[0]?.n ?? 0);

/**
 * The statements of billing's ledger retention (billing.retention.ts), one workspace at a
 * time, always in a system transaction. "Expired" is `created_at < cutoff`, the cut-off
 * already moved back for the workspace's live promotions.
 */
export const ledgerRetentionRepo = {
  /** Workspaces with a ledger transaction made before `cutoff` (one probe of the workspace/time index each). */
  async workspacesBefore(tx: Database, cutoff: Date): Promise<string[]> {
    const res = await tx.execute(sql`
      select b.workspace_id as "workspaceId" from credit_balances b
      where exists (select 1 from ledger_transactions t
        where t.workspace_id = b.workspace_id and t.created_at < ${ts(cutoff)})
      order by b.workspace_id`);
    return rowsOf<{ workspaceId: string }>(res).map((r) => String(r.workspaceId));
  },

  /** Locks the balance row: a promotion's expiry, which replays the ledger, waits for (or before) the carry-forward. */
  async lockBalance(tx: Database, workspaceId: string): Promise<void> {
    await tx.execute(sql`select 1 from credit_balances where workspace_id = ${workspaceId} for update`);
  },

  /**
   * When the oldest grant of a promotion not yet processed was made, if before `cutoff`: its
   * expiry replays the ledger from its grant on, so the ledger is kept from there.
   */
  async oldestLiveGrantBefore(tx: Database, workspaceId: string, cutoff: Date): Promise<Date | null> {
    const res = await tx.execute(sql`
      select min(t.created_at) as at from promotional_credits pc
      join ledger_transactions t on t.id = pc.grant_transaction_id and t.workspace_id = pc.workspace_id
      where pc.workspace_id = ${workspaceId} and pc.processed_at is null and t.created_at < ${ts(cutoff)}`);
    const at = rowsOf<{ at: string | Date | null }>(res)[0]?.at;
    return at === null || at === undefined ? null : new Date(at);
  },

  /** Per account, the sum and number of the expired postings. */
  async expiredSums(
    tx: Database,
    workspaceId: string,
    cutoff: Date,
  ): Promise<Array<{ account: string; sumMicros: number; postings: number }>> {
    const res = await tx.execute(sql`
      select p.account, sum(p.amount_micros)::text as "sum", count(*)::text as n
      from ledger_postings p
      join ledger_transactions t on t.id = p.transaction_id and t.workspace_id = ${workspaceId}
      where p.workspace_id = ${workspaceId} and t.created_at < ${ts(cutoff)}
      group by p.account order by p.account`);
    return rowsOf<{ account: string; sum: string; n: string }>(res).map((r) => ({
      account: String(r.account),
      sumMicros: Number(r.sum),
      postings: Number(r.n),
    }));
  },

  async countExpiredTransactions(tx: Database, workspaceId: string, cutoff: Date): Promise<number> {
    return count(
      await tx.execute(sql`
        select count(*) as n from ledger_transactions
        where workspace_id = ${workspaceId} and created_at < ${ts(cutoff)}`),
    );
  },

  /**
   * Resolved reservations whose ledger transactions all expired: a reservation's are its
   * `reserve` (made with it) and the settlement or release that resolved it (made at
   * `resolved_at`), so resolved before the cut-off means none is kept. Open ones are kept.
   */
  async expiredReservations(tx: Database, workspaceId: string, cutoff: Date, remove: boolean): Promise<number> {
    const which = sql`r.workspace_id = ${workspaceId} and r.status <> 'open' and r.resolved_at < ${ts(cutoff)}
      and r.id in (select t.reservation_id from ledger_transactions t
        where t.workspace_id = ${workspaceId} and t.created_at < ${ts(cutoff)} and t.reservation_id is not null)`;
    return count(
      await tx.execute(
        remove
          ? sql`with gone as (delete from credit_reservations r where ${which} returning 1) select count(*) as n from gone`
          : sql`select count(*) as n from credit_reservations r where ${which}`,
      ),
    );
  },

  /** Processed promotions whose grant expired (one not yet processed is kept, and keeps its grant). */
  async expiredPromotions(tx: Database, workspaceId: string, cutoff: Date, remove: boolean): Promise<number> {
    const which = sql`workspace_id = ${workspaceId} and processed_at is not null and created_at < ${ts(cutoff)}`;
    return count(
      await tx.execute(
        remove
          ? sql`with gone as (delete from promotional_credits where ${which} returning 1) select count(*) as n from gone`
          : sql`select count(*) as n from promotional_credits where ${which}`,
      ),
    );
  },

  /** Deletes the expired transactions and their postings; returns how many of each went. */
  async deleteExpired(
    tx: Database,
    workspaceId: string,
    cutoff: Date,
  ): Promise<{ transactions: number; postings: number }> {
    const postings = count(
      await tx.execute(sql`
        with gone as (
          delete from ledger_postings p using ledger_transactions t
          where t.id = p.transaction_id and t.workspace_id = ${workspaceId} and p.workspace_id = ${workspaceId}
            and t.created_at < ${ts(cutoff)}
          returning 1)
        select count(*) as n from gone`),
    );
    const transactions = count(
      await tx.execute(sql`
        with gone as (
          delete from ledger_transactions where workspace_id = ${workspaceId} and created_at < ${ts(cutoff)}
          returning 1)
        select count(*) as n from gone`),
    );
    return { transactions, postings };
  },
};

export type LedgerRetentionRepo = typeof ledgerRetentionRepo;
