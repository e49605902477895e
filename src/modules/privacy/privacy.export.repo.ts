import { and, desc, eq, inArray, isNull, lt, lte, or, type SQL, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { type SubjectMatch, subjectMatch } from './privacy.erasure.repo.ts';
import { type ExportKind, type ExportRow, privacyExports } from './privacy.export.tables.ts';

type Rows<T> = { rows: T[] };

/** Every SQL statement of the export: its own table, and the data map's reads of every other. */
export const exportRepo = {
  /** Inserts unless an export of the same data is pending or building (null then). */
  async insertUnlessPending(tx: Database, row: ExportRow): Promise<ExportRow | null> {
    const rows = await tx.insert(privacyExports).values(row).onConflictDoNothing().returning();
    return rows[0] ?? null;
  },

  async findPending(tx: Database, userId: string, kind: ExportKind, workspaceId: string | null) {
    const rows = await tx
      .select({ id: privacyExports.id })
      .from(privacyExports)
      .where(
        and(
          eq(privacyExports.userId, userId),
          eq(privacyExports.kind, kind),
          sql`coalesce(${privacyExports.workspaceId}, '') = ${workspaceId ?? ''}`,
          inArray(privacyExports.status, ['pending', 'building']),
        ),
      );
    return rows[0] ?? null;
  },

  async find(tx: Database, id: string): Promise<ExportRow | null> {
    const rows = await tx.select().from(privacyExports).where(eq(privacyExports.id, id));
    return rows[0] ?? null;
  },

  /** The row, locked for the rest of the transaction. */
  async lock(tx: Database, id: string): Promise<ExportRow | null> {
    const rows = await tx.select().from(privacyExports).where(eq(privacyExports.id, id)).for('update');
    return rows[0] ?? null;
  },

  async listForUser(tx: Database, userId: string, limit: number): Promise<ExportRow[]> {
    return tx
      .select()
      .from(privacyExports)
      .where(eq(privacyExports.userId, userId))
      .orderBy(desc(privacyExports.createdAt), desc(privacyExports.id))
      .limit(limit);
  },

  async update(tx: Database, id: string, patch: Partial<ExportRow>): Promise<void> {
    await tx.update(privacyExports).set(patch).where(eq(privacyExports.id, id));
  },

  /** Deletes the exports whose link expired by `now` (archive and all); returns what went. */
  async deleteExpired(tx: Database, now: Date): Promise<Array<Pick<ExportRow, 'id' | 'userId'>>> {
    return tx
      .delete(privacyExports)
      .where(lte(privacyExports.expiresAt, now))
      .returning({ id: privacyExports.id, userId: privacyExports.userId });
  },

  /** Marks failed the exports asked for before `before` and still not built; they are deleted at `expiresAt`. */
  async failStale(tx: Database, before: Date, expiresAt: Date): Promise<Array<Pick<ExportRow, 'id' | 'requestId'>>> {
    return tx
      .update(privacyExports)
      .set({ status: 'failed', expiresAt })
      .where(and(inArray(privacyExports.status, ['pending', 'building']), lt(privacyExports.createdAt, before)))
      .returning({ id: privacyExports.id, requestId: privacyExports.requestId });
  },

  /** Exports asked for before `before` whose job has not finished: not built, or built and not mailed. */
  async unfinishedBefore(tx: Database, before: Date): Promise<string[]> {
    const rows = await tx
      .select({ id: privacyExports.id })
      .from(privacyExports)
      .where(
        and(
          lt(privacyExports.createdAt, before),
          or(
            inArray(privacyExports.status, ['pending', 'building']),
            and(eq(privacyExports.status, 'ready'), isNull(privacyExports.linkSentAt)),
          ),
        ),
      );
    return rows.map((r) => r.id);
  },

  /**
   * The rows of `table` where any of `match` holds, with only `columns` (names come from the
   * data map, never from input; values are parameters), as JSON values.
   */
  async selectRows(
    tx: Database,
    table: string,
    columns: string[],
    match: Array<{ column: string; value: string; match?: SubjectMatch }>,
  ): Promise<Array<Record<string, unknown>>> {
    if (columns.length === 0 || match.length === 0) return [];
    const where: SQL = sql.join(
      match.map((m) => subjectMatch(sql`${sql.identifier(m.column)}`, m.value, m.match ?? 'exact')),
      sql` or `,
    );
    const cols = sql.join(
      columns.map((c) => sql.identifier(c)),
      sql`, `,
    );
    // As JSON from Postgres itself: the same ISO timestamps and numbers on both drivers.
    const res = (await tx.execute(
      sql`select to_jsonb(r) as "row" from (select ${cols} from ${sql.identifier(table)} where ${where}) r`,
    )) as unknown as Rows<{ row: Record<string, unknown> | string }>;
    return res.rows.map((r) => (typeof r.row === 'string' ? JSON.parse(r.row) : r.row));
  },

  /** The rows of `table` whose `column` is one of `values` (at most a few thousand), as `selectRows` reads them. */
  async selectRowsIn(
    tx: Database,
    table: string,
    columns: string[],
    column: string,
    values: readonly string[],
  ): Promise<Array<Record<string, unknown>>> {
    if (columns.length === 0 || values.length === 0) return [];
    const cols = sql.join(
      columns.map((c) => sql.identifier(c)),
      sql`, `,
    );
    const list = sql.join(
      values.map((v) => sql`${v}`),
      sql`, `,
    );
    const res = (await tx.execute(
      sql`select to_jsonb(r) as "row" from (select ${cols} from ${sql.identifier(table)} where ${sql.identifier(column)} in (${list})) r`,
    )) as unknown as Rows<{ row: Record<string, unknown> | string }>;
    return res.rows.map((r) => (typeof r.row === 'string' ? JSON.parse(r.row) : r.row));
  },
};

export type ExportRepo = typeof exportRepo;
