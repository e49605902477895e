import { and, asc, eq, isNull, lte, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { type PromotionRow, promotionalCredits } from './billing.promotions.tables.ts';
import type { TransactionKind } from './billing.tables.ts';

type Rows<T> = { rows: T[] };

/** A ledger transaction as the promotions replay reads it: what it did to the workspace's total. */
export type LedgerMove = {
  id: string;
  kind: TransactionKind;
  idempotencyKey: string;
  createdAt: Date;
  /** The change of available + held (postings on the workspace's own accounts), exact. */
  deltaMicros: bigint;
};

/** Every SQL statement on the promotional credits table, and the ledger reads its replay needs. */
export const promotionsRepo = {
  async insert(tx: Database, row: PromotionRow): Promise<void> {
    await tx.insert(promotionalCredits).values(row);
  },

  async get(tx: Database, workspaceId: string, grantTransactionId: string): Promise<PromotionRow | null> {
    const rows = await tx
      .select()
      .from(promotionalCredits)
      .where(
        and(
          eq(promotionalCredits.workspaceId, workspaceId),
          eq(promotionalCredits.grantTransactionId, grantTransactionId),
        ),
      );
    return rows[0] ?? null;
  },

  async listForWorkspace(tx: Database, workspaceId: string): Promise<PromotionRow[]> {
    return tx
      .select()
      .from(promotionalCredits)
      .where(eq(promotionalCredits.workspaceId, workspaceId))
      .orderBy(asc(promotionalCredits.expiresAt), asc(promotionalCredits.grantTransactionId));
  },

  /** Workspaces with a promotion past its expiry not handled yet (system scope). */
  async dueWorkspaces(tx: Database, now: Date, limit: number): Promise<string[]> {
    const rows = await tx
      .selectDistinct({ workspaceId: promotionalCredits.workspaceId })
      .from(promotionalCredits)
      .where(and(isNull(promotionalCredits.processedAt), lte(promotionalCredits.expiresAt, now)))
      .orderBy(promotionalCredits.workspaceId)
      .limit(limit);
    return rows.map((r) => r.workspaceId);
  },

  async markProcessed(
    tx: Database,
    workspaceId: string,
    grantTransactionId: string,
    set: { expiredMicros: number; expiredTransactionId: string | null; processedAt: Date },
  ): Promise<void> {
    await tx
      .update(promotionalCredits)
      .set(set)
      .where(
        and(
          eq(promotionalCredits.workspaceId, workspaceId),
          eq(promotionalCredits.grantTransactionId, grantTransactionId),
          isNull(promotionalCredits.processedAt),
        ),
      );
  },

  /** The workspace's total (available + held) from the postings of its transactions made before `at`. */
  async totalBefore(tx: Database, workspaceId: string, at: Date): Promise<bigint> {
    const res = (await tx.execute(sql`
      select coalesce(sum(p.amount_micros), 0)::text as total
      from ledger_postings p join ledger_transactions t on t.id = p.transaction_id
      where p.workspace_id = ${workspaceId} and t.workspace_id = ${workspaceId}
        and p.account in ('available', 'held') and t.created_at < ${at.toISOString()}::timestamptz`)) as unknown as Rows<{
      total: string;
    }>;
    return BigInt(res.rows[0]?.total ?? '0');
  },

  /** The workspace's transactions from `at` on, in ledger order, each with its change of the total. */
  async movesFrom(tx: Database, workspaceId: string, at: Date): Promise<LedgerMove[]> {
    const res = (await tx.execute(sql`
      select t.id, t.kind, t.idempotency_key as "idempotencyKey", t.created_at as "createdAt",
        coalesce(sum(p.amount_micros) filter (where p.account in ('available', 'held')), 0)::text as delta
      from ledger_transactions t
      left join ledger_postings p on p.transaction_id = t.id and p.workspace_id = t.workspace_id
      where t.workspace_id = ${workspaceId} and t.created_at >= ${at.toISOString()}::timestamptz
      group by t.id order by t.created_at, t.id`)) as unknown as Rows<{
      id: string;
      kind: TransactionKind;
      idempotencyKey: string;
      createdAt: string | Date;
      delta: string;
    }>;
    return res.rows.map((r) => ({
      id: String(r.id),
      kind: r.kind,
      idempotencyKey: String(r.idempotencyKey),
      createdAt: new Date(r.createdAt),
      deltaMicros: BigInt(r.delta),
    }));
  },
};

export type PromotionsRepo = typeof promotionsRepo;
