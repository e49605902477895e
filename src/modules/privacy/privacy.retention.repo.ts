import { and, desc, eq, inArray, lt, type SQL, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import {
  type RetentionResultRow,
  type RetentionRunRow,
  retentionRunResults,
  retentionRuns,
} from './privacy.retention.tables.ts';

type CountRows = { rows: Array<{ n: string | number }> };

/** One month of a table partitioned by month: rows with `rangeStart <= key < rangeEnd`. */
export type MonthPartition = { name: string; rangeStart: Date; rangeEnd: Date };

/**
 * The retention runs' own tables, and the generic statements the retention job runs on any
 * table the data map names (by its declared name, quoted as an identifier): counting and
 * deleting the rows a class's rule matches, and the monthly partitions of the run log tables.
 * Always in a system transaction.
 */
export const retentionRepo = {
  async insertRun(tx: Database, row: RetentionRunRow): Promise<void> {
    await tx.insert(retentionRuns).values(row);
  },

  async finishRun(
    tx: Database,
    id: string,
    end: { status: 'completed' | 'failed'; finishedAt: Date; errorCode: string | null },
  ): Promise<void> {
    await tx
      .update(retentionRuns)
      .set({ status: end.status, finishedAt: end.finishedAt, errorCode: end.errorCode })
      .where(sql`${retentionRuns.id} = ${id}`);
  },

  async insertResults(tx: Database, rows: RetentionResultRow[]): Promise<void> {
    if (rows.length > 0) await tx.insert(retentionRunResults).values(rows);
  },

  /** The latest runs, newest first, each with its results. */
  async listRuns(tx: Database, limit: number): Promise<Array<RetentionRunRow & { results: RetentionResultRow[] }>> {
    const runs = await tx
      .select()
      .from(retentionRuns)
      .orderBy(desc(retentionRuns.startedAt), desc(retentionRuns.id))
      .limit(limit);
    if (runs.length === 0) return [];
    const results = await tx
      .select()
      .from(retentionRunResults)
      .where(
        inArray(
          retentionRunResults.runId,
          runs.map((r) => r.id),
        ),
      );
    return runs.map((r) => ({
      ...r,
      results: results
        .filter((x) => x.runId === r.id)
        .sort((a, b) => a.retentionClass.localeCompare(b.retentionClass) || a.tableName.localeCompare(b.tableName)),
    }));
  },

  async count(tx: Database, table: string, where: SQL): Promise<number> {
    const res = (await tx.execute(
      sql`select count(*) as n from ${sql.identifier(table)} where ${where}`,
    )) as unknown as CountRows;
    return Number(res.rows[0]?.n ?? 0);
  },

  async delete(tx: Database, table: string, where: SQL): Promise<number> {
    const res = (await tx.execute(
      sql`with gone as (delete from ${sql.identifier(table)} where ${where} returning 1) select count(*) as n from gone`,
    )) as unknown as CountRows;
    return Number(res.rows[0]?.n ?? 0);
  },

  /** Marks removing runs left 'running' since before `before` (their process stopped) failed. */
  async failStaleRuns(tx: Database, before: Date, now: Date): Promise<void> {
    await tx
      .update(retentionRuns)
      .set({ status: 'failed', finishedAt: now, errorCode: 'retention_interrupted' })
      .where(
        and(eq(retentionRuns.status, 'running'), eq(retentionRuns.dryRun, false), lt(retentionRuns.startedAt, before)),
      );
  },

  /** The monthly partitions of a table partitioned by month (`berth_month_partitions`), oldest first. */
  async monthPartitions(tx: Database, parent: string): Promise<MonthPartition[]> {
    const res = (await tx.execute(
      sql`select name, range_start, range_end from berth_month_partitions(${parent})`,
    )) as unknown as { rows: Array<{ name: string; range_start: string | Date; range_end: string | Date }> };
    return res.rows.map((r) => ({
      name: r.name,
      rangeStart: new Date(r.range_start),
      rangeEnd: new Date(r.range_end),
    }));
  },

  /** Creates the partition of the month containing `at`, moving that month's rows out of the default partition. */
  async ensureMonthPartition(tx: Database, parent: string, at: Date): Promise<void> {
    await tx.execute(sql`select berth_ensure_month_partition(${parent}, ${at.toISOString()}::timestamptz)`);
  },

  /** The months (UTC) with rows waiting in the table's default partition, by its partition key `column`. */
  async monthsInDefault(tx: Database, parent: string, column: string): Promise<Date[]> {
    // Through the parent: the application role has no access to the partitions' schema.
    const res = (await tx.execute(sql`
      select distinct to_char(date_trunc('month', ${sql.identifier(column)} at time zone 'UTC'), 'YYYY-MM-DD') as month
        from ${sql.identifier(parent)}
       where tableoid = (select c.oid from pg_class c join pg_namespace n on n.oid = c.relnamespace
                          where n.nspname = 'berth_partitions' and c.relname = ${`${parent}_default`})`)) as unknown as {
      rows: Array<{ month: string }>;
    };
    return res.rows.map((r) => new Date(`${r.month}T00:00:00Z`));
  },

  /** Drops a whole month of a run log table that ended before `before`; returns the rows it held. */
  async dropRunPartition(tx: Database, parent: string, part: string, before: Date): Promise<number> {
    const res = (await tx.execute(
      sql`select berth_drop_run_partition(${parent}, ${part}, ${before.toISOString()}::timestamptz)::text as n`,
    )) as unknown as CountRows;
    return Number(res.rows[0]?.n ?? 0);
  },

  /** `column < cutoff` for the rows of one audit chain. */
  olderThanInChain(column: string, cutoff: Date, chain: string): SQL {
    return sql`${sql.identifier(column)} < ${cutoff.toISOString()}::timestamptz and ${sql.identifier('chain')} = ${chain}`;
  },

  /** `column < cutoff`, for a time column named by the data map. */
  olderThan(column: string, cutoff: Date): SQL {
    return sql`${sql.identifier(column)} < ${cutoff.toISOString()}::timestamptz`;
  },
};

export type RetentionRepo = typeof retentionRepo;
