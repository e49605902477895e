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

/**
 * Every column of every table in the live schema (partitions through their parent), cast to
 * text, searched for each needle past row-level security (as the database's owner on server
 * Postgres): the places where any of them is still stored. For erasure proofs.
 *
 * @example expect(await findEverywhere(app, [user.id, user.email])).toEqual([]);
 */
export async function findEverywhere(app: TestApp, needles: string[]): Promise<string[]> {
  const client = app.testDb.url ? new pg.Client({ connectionString: app.testDb.url }) : null;
  await client?.connect();
  const query = async <T extends Record<string, unknown>>(text: string, params: unknown[] = []) =>
    client ? ((await client.query(text, params)).rows as T[]) : app.db.query<T>(text, params);
  try {
    const columns = await query<{ schema: string; table: string; column: string }>(
      `select n.nspname as schema, c.relname as table, a.attname as column
         from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
        where n.nspname in ('public', 'pgboss') and c.relkind in ('r', 'p') and not c.relispartition
          and a.attnum > 0 and not a.attisdropped
        order by 1, 2, 3`,
    );
    if (columns.length < 100) throw new Error(`findEverywhere read only ${columns.length} columns`);
    const hits: string[] = [];
    const q = (s: string) => `"${s.replaceAll('"', '""')}"`;
    for (const { schema, table, column } of columns) {
      const rows = await query<{ needle: string }>(
        `select distinct x.needle from ${q(schema)}.${q(table)} t, unnest($1::text[]) as x(needle)
          where position(lower(x.needle) in lower(t.${q(column)}::text)) > 0`,
        [needles],
      );
      for (const r of rows) hits.push(`${schema}.${table}.${column}: ${r.needle}`);
    }
    return hits;
  } finally {
    await client?.end();
  }
}

/**
 * One statement run as the database's owner (past row-level security and the app role's
 * grants, e.g. on the job runner's tables): to stage what only an operator or a crash could.
 *
 * @example await ownerQuery(app, "delete from pgboss.job where name = 'knowledge.ingest'");
 */
export async function ownerQuery(app: TestApp, text: string, params: unknown[] = []): Promise<void> {
  if (!app.testDb.url) {
    await app.db.query(text, params);
    return;
  }
  const client = new pg.Client({ connectionString: app.testDb.url });
  await client.connect();
  try {
    await client.query(text, params);
  } finally {
    await client.end();
  }
}
