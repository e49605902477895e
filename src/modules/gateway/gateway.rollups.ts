import { sql } from 'drizzle-orm';
import { bigint, date, integer, pgTable, primaryKey, text } from 'drizzle-orm/pg-core';
import { col, mapTable } from '../../platform/db/datamap.ts';
import type { Database } from '../../platform/db/db.ts';

/**
 * Daily usage aggregates: what is left of usage events once they are 90 days old. One row
 * per workspace, UTC day, endpoint, provider ('' = none), model and HTTP status, with the
 * counts, tokens and cost of its calls. They name no API key and no user, so a workspace's
 * reports and statements still answer for old months without per-call identity.
 */
export const usageDaily = pgTable(
  'usage_daily',
  {
    workspaceId: text('workspace_id').notNull(),
    day: date('day', { mode: 'string' }).notNull(),
    endpoint: text('endpoint').notNull(),
    provider: text('provider').notNull(),
    model: text('model').notNull(),
    status: integer('status').notNull(),
    requests: bigint('requests', { mode: 'number' }).notNull(),
    inputTokens: bigint('input_tokens', { mode: 'number' }).notNull(),
    outputTokens: bigint('output_tokens', { mode: 'number' }).notNull(),
    cachedTokens: bigint('cached_tokens', { mode: 'number' }).notNull(),
    reasoningTokens: bigint('reasoning_tokens', { mode: 'number' }).notNull(),
    costMicros: bigint('cost_micros', { mode: 'number' }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.workspaceId, t.day, t.endpoint, t.provider, t.model, t.status] })],
);
export type UsageDailyRow = typeof usageDaily.$inferSelect;

const figure = col('usage_metadata', false);

export const usageDailyTable = mapTable(usageDaily, {
  purpose: 'Daily usage totals (no key, no user) kept after per-call events are rolled up, for reports and statements',
  basis: 'contract',
  retention: 'usage_13_months',
  retentionFrom: 'day',
  subject: 'workspace',
  columns: {
    workspaceId: col('identifier', false),
    day: figure,
    endpoint: figure,
    provider: figure,
    model: figure,
    status: figure,
    requests: figure,
    inputTokens: figure,
    outputTokens: figure,
    cachedTokens: figure,
    reasoningTokens: figure,
    costMicros: col('billing', false),
  },
});

export type MonthPartition = { name: string; rangeStart: Date; rangeEnd: Date };

function rowsOf<T>(res: unknown): T[] {
  return (res as { rows: T[] }).rows;
}

/**
 * The retention side of usage events (run by the privacy module's retention job in a system
 * transaction): monthly partitions, and the roll-up of events older than the cut-off into
 * usage_daily. A month wholly before the cut-off is rolled up and dropped as a partition;
 * older rows of the month the cut-off falls in are moved row by row, in one statement.
 */
export const usageRetentionRepo = {
  async partitions(tx: Database): Promise<MonthPartition[]> {
    const res = await tx.execute(sql`select name, range_start, range_end from berth_month_partitions('usage_events')`);
    return rowsOf<{ name: string; range_start: string | Date; range_end: string | Date }>(res).map((r) => ({
      name: r.name,
      rangeStart: new Date(r.range_start),
      rangeEnd: new Date(r.range_end),
    }));
  },

  /** Creates the partition of the month containing `at` (moving that month's rows out of the default partition). */
  async ensurePartition(tx: Database, at: Date): Promise<string> {
    const res = await tx.execute(
      sql`select berth_ensure_month_partition('usage_events', ${at.toISOString()}::timestamptz) as name`,
    );
    return rowsOf<{ name: string }>(res)[0]?.name ?? '';
  },

  /** The months that have rows waiting in the default partition. */
  async monthsInDefault(tx: Database): Promise<Date[]> {
    // Through the parent (the application role has no access to the partitions' schema).
    const res = await tx.execute(sql`
      select distinct to_char(date_trunc('month', created_at at time zone 'UTC'), 'YYYY-MM-DD') as month
        from usage_events
       where tableoid = (select c.oid from pg_class c join pg_namespace n on n.oid = c.relnamespace
                          where n.nspname = 'berth_partitions' and c.relname = 'usage_events_default')`);
    return rowsOf<{ month: string }>(res).map((r) => new Date(`${r.month}T00:00:00Z`));
  },

  async countBefore(tx: Database, cutoff: Date): Promise<number> {
    const res = await tx.execute(
      sql`select count(*)::text as n from usage_events where created_at < ${cutoff.toISOString()}::timestamptz`,
    );
    return Number(rowsOf<{ n: string }>(res)[0]?.n ?? 0);
  },

  /** Rolls a whole month up into usage_daily and drops its partition; returns its event count. */
  async rollUpPartition(tx: Database, name: string, cutoff: Date): Promise<number> {
    const res = await tx.execute(
      sql`select berth_usage_rollup_partition(${name}, ${cutoff.toISOString()}::timestamptz)::text as n`,
    );
    return Number(rowsOf<{ n: string }>(res)[0]?.n ?? 0);
  },

  /** Moves the events older than `cutoff` into usage_daily, in one statement (each event counted once). */
  async rollUpBefore(tx: Database, cutoff: Date): Promise<number> {
    const res = await tx.execute(sql`
      with moved as (
        delete from usage_events where created_at < ${cutoff.toISOString()}::timestamptz
        returning workspace_id, created_at, endpoint, provider, model, status,
          input_tokens, output_tokens, cached_tokens, reasoning_tokens, cost_micros
      ), added as (
        insert into usage_daily as d (workspace_id, day, endpoint, provider, model, status, requests, input_tokens,
          output_tokens, cached_tokens, reasoning_tokens, cost_micros)
        select m.workspace_id, (m.created_at at time zone 'UTC')::date, m.endpoint, coalesce(m.provider, ''), m.model,
          m.status, count(*), sum(m.input_tokens), sum(m.output_tokens), sum(m.cached_tokens), sum(m.reasoning_tokens),
          sum(m.cost_micros)
        from moved m
        where exists (select 1 from workspaces w where w.id = m.workspace_id)
        group by 1, 2, 3, 4, 5, 6
        on conflict (workspace_id, day, endpoint, provider, model, status) do update set
          requests = d.requests + excluded.requests,
          input_tokens = d.input_tokens + excluded.input_tokens,
          output_tokens = d.output_tokens + excluded.output_tokens,
          cached_tokens = d.cached_tokens + excluded.cached_tokens,
          reasoning_tokens = d.reasoning_tokens + excluded.reasoning_tokens,
          cost_micros = d.cost_micros + excluded.cost_micros
        returning 1
      )
      select (select count(*) from moved)::text as n`);
    return Number(rowsOf<{ n: string }>(res)[0]?.n ?? 0);
  },
};
