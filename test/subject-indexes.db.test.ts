import { sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { LEGACY_EVENT } from '../src/modules/audit/audit.repo.ts';
import { subjectMatch } from '../src/modules/privacy/privacy.erasure.repo.ts';
import type { Database } from '../src/platform/db/db.ts';
import { useTestApp } from './helpers/app.ts';

/**
 * Export and erasure find a person's rows by the columns naming them; on the large tables
 * (usage and audit events, partitioned by month) those scans must read an index, in every
 * partition, including the partitions retention creates later. The planner is told to
 * avoid sequential scans (the test tables are tiny): a plan still scanning a partition
 * sequentially, or not naming the index, means the index is missing there.
 */
const app = useTestApp();

type Rows<T> = { rows: T[] };

async function plan(query: ReturnType<typeof sql>): Promise<string> {
  return app().db.system(async (tx: Database) => {
    await tx.execute(sql`set local enable_seqscan = off`);
    const res = (await tx.execute(sql`explain ${query}`)) as unknown as Rows<Record<string, string>>;
    return res.rows.map((r) => Object.values(r)[0]).join('\n');
  });
}

const USER = 'usr_01JD6F3Q4N8ZK5R2W7XH9YB0C1';
const ANON = `anon_${'a'.repeat(32)}`;

/** Every scan node of the plan that reads a table (the partitions, or the table itself). */
function scans(text: string): string[] {
  return text.split('\n').filter((l) => /Scan/.test(l) && !/Append|Result/.test(l));
}

describe('happy', () => {
  it('export and erasure find usage events by user through an index on every partition', async () => {
    const select = await plan(sql`select * from usage_events where user_id = ${USER}`);
    expect(scans(select).length).toBeGreaterThan(1);
    for (const line of scans(select)) expect(line).toMatch(/Index.*Scan.*user_id/);
    const update = await plan(sql`update usage_events set user_id = ${ANON} where user_id = ${USER}`);
    expect(update).not.toMatch(/Seq Scan/);
    expect(update).toMatch(/user_id/);
  });

  it('audit events are found by actor, acting user and target through indexes', async () => {
    const text = await plan(
      sql`select * from audit_events where actor_id = ${USER} or actor_id = ${ANON} or actor_user_id = ${ANON} or target_id = ${ANON}`,
    );
    expect(text).not.toMatch(/Seq Scan/);
    expect(text).toMatch(/actor_id_idx/);
    expect(text).toMatch(/actor_user_id_idx/);
    expect(text).toMatch(/target_id_idx/);
    const legacy = await plan(sql`select distinct chain from audit_events where ${LEGACY_EVENT}`);
    expect(legacy).not.toMatch(/Seq Scan/);
    // Erasure's search for a user's raw id inside diffs reads only the old-shape events.
    const inDiffs = await plan(
      sql`select chain from audit_events where ${LEGACY_EVENT} and jsonb_path_exists(diff, 'strict $.** ? (@ == $u)', jsonb_build_object('u', ${USER}::text))`,
    );
    expect(inDiffs).not.toMatch(/Seq Scan/);
    // The partial index of old-shape events (its predicate is the recheck condition).
    expect(inDiffs).toMatch(/Index Scan/);
    expect(inDiffs).toMatch(/Cond: \(\(ip IS NOT NULL\) OR \(user_agent IS NOT NULL\)/);
  });

  it('held mail is found by address (ignoring case) and by account through indexes', async () => {
    const text = await plan(
      sql`select * from email_outbox where user_id = ${USER} or ${subjectMatch(sql`to_address`, 'A@Example.test', 'address')}`,
    );
    expect(text).not.toMatch(/Seq Scan/);
    expect(text).toMatch(/email_outbox_user_idx/);
    expect(text).toMatch(/email_outbox_to_lower_idx/);
  });

  it('a month partition created later (the retention job) gets the same indexes', async () => {
    const names = await app().db.system(async (tx) => {
      const u = (await tx.execute(
        sql`select berth_ensure_month_partition('usage_events', '2031-05-10T00:00:00Z'::timestamptz) as name`,
      )) as unknown as Rows<{ name: string }>;
      const a = (await tx.execute(
        sql`select berth_ensure_month_partition('audit_events', '2031-05-10T00:00:00Z'::timestamptz) as name`,
      )) as unknown as Rows<{ name: string }>;
      return [u.rows[0]?.name, a.rows[0]?.name];
    });
    expect(names).toEqual(['usage_events_p203105', 'audit_events_p203105']);
    const defs = await app().db.system(async (tx) => {
      const res = (await tx.execute(sql`
        select tablename, indexdef from pg_indexes
         where schemaname = 'berth_partitions' and tablename in ('usage_events_p203105', 'audit_events_p203105')`)) as unknown as Rows<{
        tablename: string;
        indexdef: string;
      }>;
      return res.rows;
    });
    const on = (table: string) => defs.filter((d) => d.tablename === table).map((d) => d.indexdef);
    expect(on('usage_events_p203105').some((d) => /\(user_id\) WHERE \(user_id IS NOT NULL\)/.test(d))).toBe(true);
    const audit = on('audit_events_p203105');
    expect(audit.some((d) => /\(actor_id\)$/.test(d))).toBe(true);
    expect(audit.some((d) => /\(actor_user_id\) WHERE/.test(d))).toBe(true);
    expect(audit.some((d) => /\(target_id\)$/.test(d))).toBe(true);
    expect(audit.some((d) => /\(chain, seq\) WHERE .*ip IS NOT NULL/.test(d))).toBe(true);
  });
});
