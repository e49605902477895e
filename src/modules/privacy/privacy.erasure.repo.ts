import { and, asc, eq, isNull, lte, or, type SQL, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import type { ColumnFact } from './privacy.erasure.plan.ts';
import { type AccountDeletionRow, accountDeletions } from './privacy.erasure.tables.ts';

/** A single-column CHECK expression with its column replaced by a typed null (outside string literals). */
function nullFor(check: string, column: string, type: string): string {
  const parts = check.split(/('(?:[^']|'')*')/);
  const name = new RegExp(`(?<![\\w.":])("${column.replaceAll('"', '""')}"|${column})(?![\\w"])`, 'g');
  return parts.map((p, i) => (i % 2 === 1 ? p : p.replace(name, `null::${type}`))).join('');
}

/**
 * How a column naming a person is matched: `exact` for ids, `address` for email addresses,
 * which match ignoring case (the form identity stores, trimmed and lower-case, and any other
 * casing mail or older rows were written with). Export and erasure both match through
 * `subjectMatch`, so they reach the same rows; an index on `lower(to_address)` serves the
 * address form for held mail (migrations/0036).
 */
export type SubjectMatch = 'exact' | 'address';

/** `column` (SQL, quoted) naming `value`, as export and erasure match it. */
export function subjectMatch(column: SQL, value: string, match: SubjectMatch): SQL {
  return match === 'address' ? sql`lower(${column}) = lower(${value})` : sql`${column} = ${value}`;
}

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

  /**
   * Scheduled deletions whose grace period is over, those that never failed first (oldest
   * first), then those that failed once their backoff is over: 2^(attempts-1) hours after
   * the last failure, at most 24.
   */
  async due(tx: Database, now: Date, limit: number): Promise<AccountDeletionRow[]> {
    const backoffOver = or(
      isNull(accountDeletions.lastErrorAt),
      sql`${accountDeletions.lastErrorAt} + interval '1 hour' * least(power(2, ${accountDeletions.attempts} - 1), 24) <= ${now}`,
    );
    return tx
      .select()
      .from(accountDeletions)
      .where(and(eq(accountDeletions.status, 'scheduled'), lte(accountDeletions.eraseAfter, now), backoffOver))
      .orderBy(asc(accountDeletions.attempts), asc(accountDeletions.eraseAfter), asc(accountDeletions.id))
      .limit(limit);
  },

  /** Counts a failed erasure (its transaction rolled back): the deletion waits for its backoff. */
  async recordFailure(tx: Database, id: string, at: Date): Promise<void> {
    await tx
      .update(accountDeletions)
      .set({ attempts: sql`${accountDeletions.attempts} + 1`, lastErrorAt: at })
      .where(and(eq(accountDeletions.id, id), eq(accountDeletions.status, 'scheduled')));
  },

  /** Claims the one alert of a failing deletion: true for the caller that gets to send it. */
  async claimFailureAlert(tx: Database, id: string, at: Date): Promise<boolean> {
    const rows = await tx
      .update(accountDeletions)
      .set({ failureAlertedAt: at })
      .where(and(eq(accountDeletions.id, id), isNull(accountDeletions.failureAlertedAt)))
      .returning({ id: accountDeletions.id });
    return rows.length > 0;
  },

  /**
   * Columns of Berth's tables as the database has them: whether each may be null, whether
   * it is a foreign key to `users` (such a column is set null, or its row goes with the
   * account, never given a pseudonym), and whether null would break or change the meaning
   * of a constraint (see `unsafeClears`): a CHECK constraint on several columns or a partial
   * index's predicate reading the column, or a CHECK on the column alone that null fails.
   */
  async columnFacts(tx: Database): Promise<Map<string, ColumnFact>> {
    const res = (await tx.execute(sql`
      select case when n.nspname = 'public' then c.relname else n.nspname || '.' || c.relname end as "table",
             a.attname as "column", not a.attnotnull as nullable,
             exists (select 1 from pg_constraint k
                      where k.conrelid = c.oid and k.contype = 'f' and a.attnum = any (k.conkey)
                        and k.confrelid = 'public.users'::regclass) as "userForeignKey",
             (exists (select 1 from pg_constraint k
                       where k.conrelid = c.oid and k.contype = 'c' and a.attnum = any (k.conkey)
                         and cardinality(k.conkey) > 1)
              or exists (select 1 from pg_index i
                          where i.indrelid = c.oid and i.indpred is not null
                            and pg_get_expr(i.indpred, i.indrelid) ~ ('\\m' || a.attname || '\\M'))) as constrained,
             format_type(a.atttypid, a.atttypmod) as type,
             coalesce((select array_agg(pg_get_expr(k.conbin, k.conrelid)) from pg_constraint k
                        where k.conrelid = c.oid and k.contype = 'c' and k.conkey = array[a.attnum]), '{}') as checks
        from pg_attribute a
        join pg_class c on c.oid = a.attrelid
        join pg_namespace n on n.oid = c.relnamespace
       where n.nspname in ('public', 'pgboss') and c.relkind in ('r', 'p') and a.attnum > 0 and not a.attisdropped`)) as unknown as {
      rows: Array<{ table: string; column: string; type: string; checks: string[] } & ColumnFact>;
    };
    // A CHECK on one column is evaluated with the column null (a constant expression):
    // "details is null or length(details) <= 4000" passes, "x is not null" does not.
    const single = res.rows.flatMap((r) =>
      r.checks.map((check) => ({ key: `${r.table}.${r.column}`, expr: nullFor(check, r.column, r.type) })),
    );
    const failsOnNull = new Set<string>();
    if (single.length > 0) {
      const verdicts = (await tx.execute(
        sql.raw(`select array[${single.map((s) => `coalesce((${s.expr})::boolean, true)`).join(', ')}] as ok`),
      )) as unknown as { rows: Array<{ ok: boolean[] }> };
      const ok = verdicts.rows[0]?.ok ?? [];
      single.forEach((s, i) => {
        if (ok[i] !== true) failsOnNull.add(s.key);
      });
    }
    return new Map(
      res.rows.map((r) => {
        const key = `${r.table}.${r.column}`;
        return [
          key,
          {
            nullable: r.nullable,
            userForeignKey: r.userForeignKey,
            constrained: r.constrained || failsOnNull.has(key),
          },
        ];
      }),
    );
  },

  /** Deletes the rows whose `column` names `value` (see `subjectMatch`); returns how many. */
  async deleteWhere(
    tx: Database,
    table: string,
    column: string,
    value: string,
    match: SubjectMatch = 'exact',
  ): Promise<number> {
    const where = subjectMatch(sql.raw(column), value, match);
    const res = (await tx.execute(
      sql`with gone as (delete from ${sql.raw(table)} where ${where} returning 1) select count(*)::int as n from gone`,
    )) as unknown as { rows: Array<{ n: number }> };
    return Number(res.rows[0]?.n ?? 0);
  },

  /** Sets `column` to `to` (null allowed) and clears `clear` in the rows whose `column` names `value`; returns how many. */
  async replaceWhere(
    tx: Database,
    table: string,
    column: string,
    value: string,
    to: string | null,
    clear: string[],
    match: SubjectMatch = 'exact',
  ): Promise<number> {
    const sets = [sql`${sql.raw(column)} = ${to}`, ...clear.map((c) => sql`${sql.raw(c)} = null`)];
    const where = subjectMatch(sql.raw(column), value, match);
    const res = (await tx.execute(
      sql`with changed as (update ${sql.raw(table)} set ${sql.join(sets, sql`, `)} where ${where} returning 1) select count(*)::int as n from changed`,
    )) as unknown as { rows: Array<{ n: number }> };
    return Number(res.rows[0]?.n ?? 0);
  },
};

export type ErasureRepo = typeof erasureRepo;
