import { sql } from 'drizzle-orm';
import type { Db } from '../../platform/db/db.ts';
import type { AuditCore } from './audit.service.ts';
import { PLATFORM_CHAIN } from './audit.service.ts';

/** One monthly partition of audit_events. */
export type AuditPartition = { name: string; rangeStart: Date; rangeEnd: Date };

/** A chain's events inside one partition, and whether the partition could go without breaking it. */
export type PartitionChain = {
  chain: string;
  workspaceId: string | null;
  events: number;
  lastSeq: number;
  /** The chain's head event is in this partition (retention always keeps the head). */
  holdsHead: boolean;
  /** Some of the chain's events up to lastSeq are outside the partition (not a prefix). */
  scattered: boolean;
};

type Rows<T> = { rows: T[] };

/**
 * Audit retention for the privacy module's retention job. audit_events is partitioned by
 * month on occurred_at (migrations/0024_retention.sql): a month whose every chain has
 * expired goes as a whole partition (`dropPartition`), each chain's anchor moving past it so
 * verification starts from the oldest kept event; a chain that must partly stay (a plan
 * with a longer retention, or its head in that month) loses its expired prefix through
 * `expireChain` (the per-chain removal path). Both are recorded in the platform chain first,
 * which the database functions require.
 */
export function auditRetention(deps: {
  db: Pick<Db, 'system'>;
  record: AuditCore['record'];
  dropBefore: AuditCore['dropBefore'];
}) {
  const { db } = deps;
  return {
    async partitions(): Promise<AuditPartition[]> {
      return db.system(async (tx) => {
        const res = (await tx.execute(
          sql`select name, range_start, range_end from berth_month_partitions('audit_events')`,
        )) as unknown as Rows<{ name: string; range_start: string | Date; range_end: string | Date }>;
        return res.rows.map((r) => ({
          name: r.name,
          rangeStart: new Date(r.range_start),
          rangeEnd: new Date(r.range_end),
        }));
      });
    },

    /** Creates the partitions of these months when missing (rows waiting in the default partition move in). */
    async ensurePartitions(months: Date[]): Promise<string[]> {
      if (months.length === 0) return [];
      return db.system(async (tx) => {
        const names: string[] = [];
        for (const m of months) {
          const res = (await tx.execute(
            sql`select berth_ensure_month_partition('audit_events', ${m.toISOString()}::timestamptz) as name`,
          )) as unknown as Rows<{ name: string }>;
          names.push(res.rows[0]?.name ?? '');
        }
        return names;
      });
    },

    /** Months with events in the default partition (no monthly partition existed when they were written). */
    async monthsInDefault(): Promise<Date[]> {
      return db.system(async (tx) => {
        const res = (await tx.execute(sql`
          select distinct to_char(date_trunc('month', occurred_at at time zone 'UTC'), 'YYYY-MM-DD') as month
            from audit_events
           where tableoid = (select c.oid from pg_class c join pg_namespace n on n.oid = c.relnamespace
                              where n.nspname = 'berth_partitions' and c.relname = 'audit_events_default')`)) as unknown as Rows<{
          month: string;
        }>;
        return res.rows.map((r) => new Date(`${r.month}T00:00:00Z`));
      });
    },

    /**
     * The chains with events in a partition's range. `gone`: an earlier range about to go
     * with it (a dry run's preview), whose events do not count as outside the partition.
     */
    async partitionChains(p: AuditPartition, gone?: { from: Date }): Promise<PartitionChain[]> {
      const outsideFrom = (gone?.from ?? p.rangeStart).toISOString();
      return db.system(async (tx) => {
        const res = (await tx.execute(sql`
          select c.chain, c.workspace_id, c.n::text as events, c.last_seq::text as last_seq,
                 coalesce(h.seq <= c.last_seq, false) as holds_head,
                 exists (select 1 from audit_events ev
                          where ev.chain = c.chain and ev.seq <= c.last_seq
                            and not (ev.occurred_at >= ${outsideFrom}::timestamptz
                                     and ev.occurred_at < ${p.rangeEnd.toISOString()}::timestamptz)) as scattered
            from (select chain, min(workspace_id) as workspace_id, count(*) as n, max(seq) as last_seq
                    from audit_events
                   where occurred_at >= ${p.rangeStart.toISOString()}::timestamptz
                     and occurred_at < ${p.rangeEnd.toISOString()}::timestamptz
                   group by chain) c
            left join audit_chain_heads h on h.chain = c.chain
           order by c.chain`)) as unknown as Rows<{
          chain: string;
          workspace_id: string | null;
          events: string;
          last_seq: string;
          holds_head: boolean;
          scattered: boolean;
        }>;
        return res.rows.map((r) => ({
          chain: r.chain,
          workspaceId: r.workspace_id,
          events: Number(r.events),
          lastSeq: Number(r.last_seq),
          holdsHead: r.holds_head,
          scattered: r.scattered,
        }));
      });
    },

    /**
     * Drops a whole month of events: records `audit.partition_dropped` in the platform chain
     * (the partition and its event count), then the database function moves every chain's
     * anchor past the month and drops it. Returns the number of events dropped.
     */
    async dropPartition(p: AuditPartition, opts: { retentionDays: number }): Promise<number> {
      return db.system(async (tx) => {
        const res = (await tx.execute(sql`
          select count(*)::text as n from audit_events
           where occurred_at >= ${p.rangeStart.toISOString()}::timestamptz
             and occurred_at < ${p.rangeEnd.toISOString()}::timestamptz`)) as unknown as Rows<{ n: string }>;
        const events = Number(res.rows[0]?.n ?? 0);
        await deps.record(tx, {
          workspaceId: null,
          actor: { type: 'system', name: 'audit-retention' },
          action: 'audit.partition_dropped',
          target: { type: 'audit_partition', id: p.name },
          diff: {
            events: String(events),
            from: p.rangeStart.toISOString(),
            to: p.rangeEnd.toISOString(),
            retentionDays: opts.retentionDays,
          },
        });
        const dropped = (await tx.execute(
          sql`select berth_audit_drop_partition(${p.name}, make_interval(days => ${opts.retentionDays}))::text as n`,
        )) as unknown as Rows<{ n: string }>;
        return Number(dropped.rows[0]?.n ?? 0);
      });
    },

    /**
     * The seq before which a chain's events are all older than `cutoff` (the first event at or
     * after it, or the head, which retention always keeps), and how many events that removes.
     */
    async expiredPrefix(chain: string, cutoff: Date): Promise<{ beforeSeq: number; events: number }> {
      return db.system(async (tx) => {
        const res = (await tx.execute(sql`
          with h as (select seq, anchor_seq from audit_chain_heads where chain = ${chain}),
          keep as (
            select least(
              coalesce((select min(seq) from audit_events
                         where chain = ${chain} and occurred_at >= ${cutoff.toISOString()}::timestamptz), (select seq from h)),
              (select seq from h)) as before_seq
          )
          select (select before_seq from keep)::text as before_seq,
                 (select count(*) from audit_events
                   where chain = ${chain} and seq >= (select anchor_seq from h) and seq < (select before_seq from keep))::text as events`)) as unknown as Rows<{
          before_seq: string | null;
          events: string;
        }>;
        const row = res.rows[0];
        return { beforeSeq: Number(row?.before_seq ?? 0), events: Number(row?.events ?? 0) };
      });
    },

    /** Removes a chain's events older than `cutoff` (keeping its head); returns how many. */
    async expireChain(chain: string, cutoff: Date, opts: { retentionDays: number }): Promise<number> {
      const { beforeSeq, events } = await this.expiredPrefix(chain, cutoff);
      if (events === 0) return 0;
      return deps.dropBefore(chain, beforeSeq, opts);
    },

    /** Every chain with events older than `before`, with its workspace (null for the platform chain). */
    async chainsWithEventsBefore(before: Date): Promise<Array<{ chain: string; workspaceId: string | null }>> {
      return db.system(async (tx) => {
        const res = (await tx.execute(sql`
          select distinct chain, workspace_id from audit_events
           where occurred_at < ${before.toISOString()}::timestamptz order by chain`)) as unknown as Rows<{
          chain: string;
          workspace_id: string | null;
        }>;
        return res.rows.map((r) => ({
          chain: r.chain,
          workspaceId: r.chain === PLATFORM_CHAIN ? null : r.workspace_id,
        }));
      });
    },
  };
}

export type AuditRetention = ReturnType<typeof auditRetention>;
