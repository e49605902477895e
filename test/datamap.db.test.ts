import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataMap } from '../src/app.ts';
import { columnPolicies, eraseRuleOf } from '../src/platform/db/datamap.ts';
import { isJobPartition } from '../src/platform/jobs/jobs.datamap.ts';
import { createTestApp, type TestApp } from './helpers/app.ts';

/**
 * The data map must explain every column the live schema has, and nothing else: a new
 * column without a classification, or a classification left behind by a dropped column,
 * fails here.
 */
describe('data map', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp();
    // The job runner creates its schema on first use.
    await app.jobs.drain();
  });
  afterAll(async () => {
    await app.close();
  });

  /** Columns of every ordinary or partitioned table, from the catalog (not filtered by privileges). */
  async function liveColumns(schemas: string[]) {
    const rows = await app.db.query<{ schema: string; table: string; column: string }>(
      `select n.nspname as schema, c.relname as table, a.attname as column
         from pg_attribute a
         join pg_class c on c.oid = a.attrelid
         join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = any($1) and c.relkind in ('r', 'p') and a.attnum > 0 and not a.attisdropped
          -- a partition is its parent's rows: the parent (relkind 'p') is the mapped table
          and not c.relispartition
        order by 1, 2, 3`,
      [schemas],
    );
    return rows
      .filter((r) => !isJobPartition(r.schema, r.table))
      .map((r) => `${r.schema === 'public' ? '' : `${r.schema}.`}${r.table}.${r.column}`);
  }

  function mappedColumns() {
    return dataMap(app.modules).flatMap((t) => Object.keys(t.columns).map((c) => `${t.table}.${c}`));
  }

  it('covers every column of every table in the live schema', async () => {
    const live = await liveColumns(['public', 'pgboss']);
    const mapped = new Set(mappedColumns());
    expect(live.length).toBeGreaterThan(10);
    expect(live.some((c) => c.startsWith('pgboss.job.'))).toBe(true);
    expect(live.filter((c) => !mapped.has(c))).toEqual([]);
  });

  it('has no entry for a column that does not exist', async () => {
    const live = new Set(await liveColumns(['public', 'pgboss']));
    expect(mappedColumns().filter((c) => !live.has(c))).toEqual([]);
  });

  it('declares each table once, with a purpose, a lawful basis and a retention class', () => {
    const entries = dataMap(app.modules);
    const names = entries.map((e) => e.table);
    expect(new Set(names).size).toBe(names.length);
    for (const e of entries) {
      expect(e.purpose.length, e.table).toBeGreaterThan(5);
      expect(['contract', 'legitimate_interest', 'legal_obligation', 'consent']).toContain(e.basis);
      expect(Object.keys(e.columns).length, e.table).toBeGreaterThan(0);
    }
  });

  it('gives every column a category, purpose, lawful basis and retention class, and marks credentials secret', () => {
    const policies = columnPolicies(dataMap(app.modules));
    for (const p of policies) {
      const where = `${p.table}.${p.column}`;
      expect(p.purpose.length, where).toBeGreaterThan(5);
      // Credentials (hashes, wrapped keys, encrypted secrets) must never be exported.
      if (p.category === 'credential') expect(p.secret, `${where} is a credential but not marked secret`).toBe(true);
    }
    // Columns that name a person are personal data.
    for (const p of policies.filter((x) => /(^|_)(email|ip|user_agent|display_name)$/.test(x.column))) {
      expect(p.personal, `${p.table}.${p.column}`).toBe(true);
    }
  });

  it('gives every personal column an erase rule (what deleting the person does to it)', () => {
    const unruled = dataMap(app.modules).flatMap((t) =>
      Object.entries(t.columns)
        .filter(([column, c]) => c.personal && eraseRuleOf(t, column) === null)
        .map(([column]) => `${t.table}.${column}`),
    );
    expect(unruled, 'set `erase` on these columns in their data map entries').toEqual([]);
  });
});
