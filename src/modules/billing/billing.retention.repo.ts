import { sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';

type Rows<T> = { rows: T[] };
const rowsOf = <T>(res: unknown) => (res as Rows<T>).rows;
const ts = (d: Date) => sql`${d.toISOString()}::timestamptz`;
const count = (res: unknown) => Number(rowsOf<{ n: string | number }>(res)[0]?.n ?? 0);
const texts = (values: string[]) => sql`${sql.param(values)}::text[]`;
const date = (v: string | Date | null | undefined) => (v === null || v === undefined ? null : new Date(v));

/** The idempotency key of the carry-forward dated at `at` (one per workspace and date). */
export const carryForwardKey = (at: Date) => `carry_forward:${at.toISOString()}`;

/** A promotion as retention sees it: when it was granted and when the replay stopped needing it. */
export type PromotionSpan = {
  grantTransactionId: string;
  grantedAt: Date;
  /** When its expiry closed it (its `expire` transaction, else when it was processed); null while live. */
  closedAt: Date | null;
};

/** Per account, the sum of some deleted postings. */
export type AccountSums = Array<{ account: string; sumMicros: number }>;

/**
 * The statements of billing's ledger retention (billing.retention.ts), one workspace at a
 * time, always in a system transaction. "Expired" is `created_at < at`, `at` being the cut-off
 * already moved back for the promotions whose expiry still replays the ledger.
 *
 * Every statement reaches its rows through an index: transactions by
 * `ledger_transactions_workspace_time_idx` or their id, postings by their primary key
 * (transaction, account), reservations by their id, and the transactions naming a reservation
 * by the unique (workspace, idempotency key) index, since those are exactly its
 * `reserve:<request id>`, `settle:<id>` and `release:<id>` (no index on `reservation_id`: it
 * would cost every call on the gateway's path).
 */
export const ledgerRetentionRepo = {
  /**
   * Workspaces with a ledger movement made before `cutoff` (one probe of the workspace/time
   * index each; one whose only older transaction is its carry-forward has nothing to fold), or
   * with a processed promotion granted before it (whose expiry may have passed the cut-off
   * since: the promotion goes then, even if the workspace moved nothing meanwhile).
   */
  async workspacesBefore(tx: Database, cutoff: Date): Promise<string[]> {
    const res = await tx.execute(sql`
      select b.workspace_id as "workspaceId" from credit_balances b
      where exists (select 1 from ledger_transactions t
        where t.workspace_id = b.workspace_id and t.created_at < ${ts(cutoff)} and t.kind <> 'carry_forward')
      union
      select pc.workspace_id from promotional_credits pc
      where pc.processed_at is not null and pc.created_at < ${ts(cutoff)}
      order by 1`);
    return rowsOf<{ workspaceId: string }>(res).map((r) => String(r.workspaceId));
  },

  /**
   * Serialises the workspace's ledger history: retention takes it alone while it folds a batch,
   * a promotion's replay shares it (`shared`), so a replay never reads half a batch. Not the
   * balance row: calls on the gateway's path never wait for retention.
   */
  async lockHistory(tx: Database, workspaceId: string, shared = false): Promise<void> {
    const key = `billing.ledger_history:${workspaceId}`;
    await tx.execute(
      shared
        ? sql`select pg_advisory_xact_lock_shared(hashtextextended(${key}, 0))`
        : sql`select pg_advisory_xact_lock(hashtextextended(${key}, 0))`,
    );
  },

  /** The workspace's promotions with when each was granted and closed. */
  async promotionSpans(tx: Database, workspaceId: string): Promise<PromotionSpan[]> {
    const res = await tx.execute(sql`
      select pc.grant_transaction_id as id, pc.created_at as "grantedAt", pc.processed_at as "processedAt",
        e.created_at as "expiredAt"
      from promotional_credits pc
      left join ledger_transactions e on e.id = pc.expired_transaction_id and e.workspace_id = ${workspaceId}
      where pc.workspace_id = ${workspaceId}`);
    return rowsOf<{
      id: string;
      grantedAt: string | Date;
      processedAt: string | Date | null;
      expiredAt: string | Date | null;
    }>(res).map((r) => ({
      grantTransactionId: String(r.id),
      grantedAt: new Date(r.grantedAt),
      closedAt: r.processedAt === null ? null : (date(r.expiredAt) ?? date(r.processedAt)),
    }));
  },

  /** Whether a movement other than a carry-forward was made before `at`: else there is nothing to fold. */
  async hasExpiredMovements(tx: Database, workspaceId: string, at: Date): Promise<boolean> {
    const res = await tx.execute(sql`
      select exists (select 1 from ledger_transactions
        where workspace_id = ${workspaceId} and created_at < ${ts(at)} and kind <> 'carry_forward') as found`);
    const found = rowsOf<{ found: boolean | string }>(res)[0]?.found;
    return found === true || found === 't';
  },

  /** Per account, the sum and number of the expired postings (a dry run's count; the carry-forward at `at` included in the sums). */
  async expiredSums(
    tx: Database,
    workspaceId: string,
    at: Date,
  ): Promise<Array<{ account: string; sumMicros: number; postings: number }>> {
    const res = await tx.execute(sql`
      select p.account, sum(p.amount_micros)::text as "sum", count(*) filter (where t.created_at < ${ts(at)})::text as n
      from ledger_postings p
      join ledger_transactions t on t.id = p.transaction_id and t.workspace_id = ${workspaceId}
      where p.workspace_id = ${workspaceId}
        and (t.created_at < ${ts(at)} or t.idempotency_key = ${carryForwardKey(at)})
      group by p.account order by p.account`);
    return rowsOf<{ account: string; sum: string; n: string }>(res).map((r) => ({
      account: String(r.account),
      sumMicros: Number(r.sum),
      postings: Number(r.n),
    }));
  },

  async countExpiredTransactions(tx: Database, workspaceId: string, at: Date): Promise<number> {
    return count(
      await tx.execute(sql`
        select count(*) as n from ledger_transactions
        where workspace_id = ${workspaceId} and created_at < ${ts(at)}`),
    );
  },

  /**
   * A dry run's count of the reservations retention would delete: resolved, named by an
   * expired transaction, and by no kept one. (`= any(array(...))` makes them probes of the
   * primary key: a join lets the planner scan every workspace's reservations.)
   */
  async countExpiredReservations(tx: Database, workspaceId: string, at: Date): Promise<number> {
    return count(
      await tx.execute(sql`
        select count(*) as n from credit_reservations r
        where r.id = any(array(select t.reservation_id from ledger_transactions t
            where t.workspace_id = ${workspaceId} and t.created_at < ${ts(at)} and t.reservation_id is not null))
          and r.workspace_id = ${workspaceId} and r.status <> 'open'
          and not exists (select 1 from ledger_transactions k
            where k.workspace_id = ${workspaceId} and k.created_at >= ${ts(at)} and k.reservation_id = r.id
              and k.idempotency_key in ('reserve:' || r.request_id, 'settle:' || r.id, 'release:' || r.id))`),
    );
  },

  /** The next `limit` expired transactions, oldest first (a previous carry-forward included). */
  async nextBatch(tx: Database, workspaceId: string, at: Date, limit: number): Promise<string[]> {
    const res = await tx.execute(sql`
      select id from ledger_transactions
      where workspace_id = ${workspaceId} and created_at < ${ts(at)}
      order by created_at, id limit ${limit}`);
    return rowsOf<{ id: string }>(res).map((r) => String(r.id));
  },

  /** The carry-forward already dated at `at` (a batch before this one wrote it), if any. */
  async carryForwardAt(tx: Database, workspaceId: string, at: Date): Promise<string | null> {
    const res = await tx.execute(sql`
      select id from ledger_transactions
      where workspace_id = ${workspaceId} and idempotency_key = ${carryForwardKey(at)}`);
    const id = rowsOf<{ id: string }>(res)[0]?.id;
    return id === undefined ? null : String(id);
  },

  /**
   * Deletes these transactions and their postings: how many of each went, the deleted
   * postings' sums per account, and the reservations the transactions named.
   */
  async deleteTransactions(
    tx: Database,
    workspaceId: string,
    ids: string[],
  ): Promise<{ transactions: number; postings: number; sums: AccountSums; reservationIds: string[] }> {
    if (ids.length === 0) return { transactions: 0, postings: 0, sums: [], reservationIds: [] };
    const sums = rowsOf<{ account: string; sum: string; n: string }>(
      await tx.execute(sql`
        with gone as (
          delete from ledger_postings
          where transaction_id = any(${texts(ids)}) and workspace_id = ${workspaceId}
          returning account, amount_micros)
        select account, sum(amount_micros)::text as "sum", count(*)::text as n from gone
        group by account order by account`),
    );
    const gone = rowsOf<{ reservationId: string | null }>(
      await tx.execute(sql`
        delete from ledger_transactions where id = any(${texts(ids)}) and workspace_id = ${workspaceId}
        returning reservation_id as "reservationId"`),
    );
    return {
      transactions: gone.length,
      postings: sums.reduce((n, s) => n + Number(s.n), 0),
      sums: sums.map((s) => ({ account: String(s.account), sumMicros: Number(s.sum) })),
      reservationIds: [...new Set(gone.flatMap((r) => (r.reservationId ? [String(r.reservationId)] : [])))],
    };
  },

  /**
   * Deletes those of these reservations that are resolved and that no kept transaction names
   * (a reservation reserved before the cut-off and settled after it stays with its settlement).
   */
  async deleteResolvedReservations(tx: Database, workspaceId: string, ids: string[]): Promise<number> {
    if (ids.length === 0) return 0;
    return count(
      await tx.execute(sql`
        with gone as (
          delete from credit_reservations r
          where r.id = any(${texts(ids)}) and r.workspace_id = ${workspaceId} and r.status <> 'open'
            and not exists (select 1 from ledger_transactions k
              where k.workspace_id = ${workspaceId} and k.reservation_id = r.id
                and k.idempotency_key in ('reserve:' || r.request_id, 'settle:' || r.id, 'release:' || r.id))
          returning 1)
        select count(*) as n from gone`),
    );
  },

  /** Deletes these processed promotions (retention decided the replay no longer needs them). */
  async deletePromotions(tx: Database, workspaceId: string, grantTransactionIds: string[]): Promise<number> {
    if (grantTransactionIds.length === 0) return 0;
    return count(
      await tx.execute(sql`
        with gone as (
          delete from promotional_credits
          where workspace_id = ${workspaceId} and grant_transaction_id = any(${texts(grantTransactionIds)})
            and processed_at is not null
          returning 1)
        select count(*) as n from gone`),
    );
  },
};

export type LedgerRetentionRepo = typeof ledgerRetentionRepo;
