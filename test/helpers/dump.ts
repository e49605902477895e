import pg from 'pg';
import type { TestApp } from './app.ts';

/**
 * Every row of every table in every schema (Berth's and the job runner's), read by the
 * database owner: what a full dump shows. For leak scans.
 *
 * @example expect(await fullDatabaseText(app)).not.toContain(secret);
 */
export async function fullDatabaseText(app: TestApp): Promise<string> {
  const list =
    "select table_schema as s, table_name as t from information_schema.tables where table_schema not in ('pg_catalog', 'information_schema') and table_type = 'BASE TABLE'";
  const run = async (query: (text: string) => Promise<Array<Record<string, unknown>>>) => {
    const parts: string[] = [];
    for (const r of await query(list)) {
      const rows = await query(`select x::text as row from "${String(r.s)}"."${String(r.t)}" x`);
      for (const row of rows) parts.push(String(row.row));
    }
    return parts.join('\n');
  };
  if (!app.testDb.url) return run((text) => app.db.query(text));
  const client = new pg.Client({ connectionString: app.testDb.url });
  await client.connect();
  try {
    return await run(async (text) => (await client.query(text)).rows);
  } finally {
    await client.end();
  }
}
