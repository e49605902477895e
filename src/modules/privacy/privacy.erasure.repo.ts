import { and, asc, eq, lte, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { type AccountDeletionRow, accountDeletions } from './privacy.erasure.tables.ts';

/** Every SQL statement of the erasure part: account_deletions, and the generic erasure by the data map. */
export const erasureRepo = {
  /** Inserts unless the user has a scheduled deletion already: null then. */
  async insertUnlessScheduled(tx: Database, row: AccountDeletionRow): Promise<AccountDeletionRow | null> {
    const rows = await tx.insert(accountDeletions).values(row).onConflictDoNothing().returning();
    return rows[0] ?? null;
  },

  async scheduledFor(tx: Database, userId: string): Promise<AccountDeletionRow | null> {
    const rows = await tx
      .select()
      .from(accountDeletions)
      .where(and(eq(accountDeletions.userId, userId), eq(accountDeletions.status, 'scheduled')));
    return rows[0] ?? null;
  },

  async lock(tx: Database, id: string): Promise<AccountDeletionRow | null> {
    const rows = await tx.select().from(accountDeletions).where(eq(accountDeletions.id, id)).for('update');
    return rows[0] ?? null;
  },

  async byTokenHash(tx: Database, tokenHash: string): Promise<AccountDeletionRow | null> {
    const rows = await tx
      .select()
      .from(accountDeletions)
      .where(eq(accountDeletions.cancelTokenHash, tokenHash))
      .for('update');
    return rows[0] ?? null;
  },

  async markCancelled(tx: Database, id: string, at: Date): Promise<void> {
    await tx
      .update(accountDeletions)
      .set({ status: 'cancelled', cancelledAt: at, cancelTokenHash: null })
      .where(eq(accountDeletions.id, id));
  },

  async markErased(tx: Database, id: string, at: Date): Promise<void> {
    await tx
      .update(accountDeletions)
      .set({ status: 'erased', erasedAt: at, cancelTokenHash: null })
      .where(eq(accountDeletions.id, id));
  },

  /** Scheduled deletions whose grace period is over, oldest first. */
  async due(tx: Database, now: Date, limit: number): Promise<AccountDeletionRow[]> {
    return tx
      .select()
      .from(accountDeletions)
      .where(and(eq(accountDeletions.status, 'scheduled'), lte(accountDeletions.eraseAfter, now)))
      .orderBy(asc(accountDeletions.eraseAfter), asc(accountDeletions.id))
      .limit(limit);
  },

  /**
   * Columns of Berth's tables as the database has them: whether each may be null and
   * whether it is a foreign key to `users` (such a column is set null, or its row goes with
   * the account, never given a pseudonym).
   */
  async columnFacts(tx: Database): Promise<Map<string, { nullable: boolean; userForeignKey: boolean }>> {
    const res = (await tx.execute(sql`
      select case when n.nspname = 'public' then c.relname else n.nspname || '.' || c.relname end as "table",
             a.attname as "column", not a.attnotnull as nullable,
             exists (select 1 from pg_constraint k
                      where k.conrelid = c.oid and k.contype = 'f' and a.attnum = any (k.conkey)
                        and k.confrelid = 'public.users'::regclass) as "userForeignKey"
        from pg_attribute a
        join pg_class c on c.oid = a.attrelid
        join pg_namespace n on n.oid = c.relnamespace
       where n.nspname in ('public', 'pgboss') and c.relkind in ('r', 'p') and a.attnum > 0 and not a.attisdropped`)) as unknown as {
      rows: Array<{ table: string; column: string; nullable: boolean; userForeignKey: boolean }>;
    };
    return new Map(
      res.rows.map((r) => [`${r.table}.${r.column}`, { nullable: r.nullable, userForeignKey: r.userForeignKey }]),
    );
  },

  /** Deletes the rows whose `column` is `value`; returns how many. */
  async deleteWhere(tx: Database, table: string, column: string, value: string): Promise<number> {
    const res = (await tx.execute(
      sql`with gone as (delete from ${sql.raw(table)} where ${sql.raw(column)} = ${value} returning 1) select count(*)::int as n from gone`,
    )) as unknown as { rows: Array<{ n: number }> };
    return Number(res.rows[0]?.n ?? 0);
  },

  /** Sets `column` to `to` (null allowed) and clears `clear` in the rows whose `column` is `value`; returns how many. */
  async replaceWhere(
    tx: Database,
    table: string,
    column: string,
    value: string,
    to: string | null,
    clear: string[],
  ): Promise<number> {
    const sets = [sql`${sql.raw(column)} = ${to}`, ...clear.map((c) => sql`${sql.raw(c)} = null`)];
    const res = (await tx.execute(
      sql`with changed as (update ${sql.raw(table)} set ${sql.join(sets, sql`, `)} where ${sql.raw(column)} = ${value} returning 1) select count(*)::int as n from changed`,
    )) as unknown as { rows: Array<{ n: number }> };
    return Number(res.rows[0]?.n ?? 0);
  },
};

export type ErasureRepo = typeof erasureRepo;
