import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PGlite } from '@electric-sql/pglite';
import pg from 'pg';

export const MIGRATIONS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../migrations');

export type Migration = { version: number; name: string; sql: string; checksum: string };

/** Committed SQL migrations, `NNNN_name.sql`, in their one global order. */
export function loadMigrations(dir = MIGRATIONS_DIR): Migration[] {
  const files = readdirSync(dir)
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort();
  const seen = new Set<number>();
  return files.map((file) => {
    const version = Number(file.slice(0, 4));
    if (seen.has(version)) throw new Error(`Two migrations share version ${version}: ${file}`);
    seen.add(version);
    const text = readFileSync(path.join(dir, file), 'utf8');
    return {
      version,
      name: file.replace(/\.sql$/, ''),
      sql: text,
      checksum: createHash('sha256').update(text).digest('hex'),
    };
  });
}

export type MigrateResult = { applied: string[]; current: number };

const LEDGER_SQL = `create table if not exists berth_migrations (
  version integer primary key,
  name text not null,
  checksum text not null,
  applied_at timestamptz not null default now()
)`;

/** Fixed key for the advisory lock that serialises migrations across processes. */
const MIGRATION_LOCK_KEY = 727_310_401;

type Runner = {
  query(text: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
  /** Runs one migration's SQL and its ledger row atomically. */
  applyAtomically(m: Migration): Promise<void>;
};

async function run(runner: Runner, migrations: Migration[]): Promise<MigrateResult> {
  await runner.query(LEDGER_SQL);
  const rows = await runner.query('select version, name, checksum from berth_migrations order by version');
  const done = new Map(rows.map((r) => [Number(r.version), r]));
  for (const m of migrations) {
    const row = done.get(m.version);
    if (row && row.checksum !== m.checksum) {
      throw new Error(`Migration ${m.name} was changed after it was applied; add a new migration instead.`);
    }
  }
  const maxDone = Math.max(0, ...done.keys());
  const pending = migrations.filter((m) => !done.has(m.version));
  const outOfOrder = pending.find((m) => m.version < maxDone);
  if (outOfOrder) throw new Error(`Migration ${outOfOrder.name} is older than the newest applied one (${maxDone}).`);
  for (const m of pending) await runner.applyAtomically(m);
  return { applied: pending.map((m) => m.name), current: Math.max(maxDone, ...pending.map((m) => m.version)) };
}

const insertLedger = 'insert into berth_migrations (version, name, checksum) values ($1, $2, $3)';

export async function migratePglite(client: PGlite, migrations = loadMigrations()): Promise<MigrateResult> {
  return run(
    {
      query: async (text, params) => (await client.query(text, params)).rows as Record<string, unknown>[],
      applyAtomically: (m) =>
        client.transaction(async (tx) => {
          await tx.exec(m.sql);
          await tx.query(insertLedger, [m.version, m.name, m.checksum]);
        }),
    },
    migrations,
  );
}

/**
 * Migrates server Postgres as the connecting (owner) user, holding an advisory lock so two
 * processes starting together apply each migration once. Then makes sure the application
 * role exists, without BYPASSRLS, and may use the tables but owns none of them.
 */
export async function migratePostgres(
  url: string,
  opts: { appRole?: string | null; migrations?: Migration[] } = {},
): Promise<MigrateResult> {
  const client = new pg.Client({ connectionString: url, application_name: 'berth-migrate' });
  await client.connect();
  try {
    await client.query('select pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    const result = await run(
      {
        query: async (text, params) => (await client.query(text, params)).rows,
        applyAtomically: async (m) => {
          await client.query('begin');
          try {
            await client.query(m.sql);
            await client.query(insertLedger, [m.version, m.name, m.checksum]);
            await client.query('commit');
          } catch (err) {
            await client.query('rollback');
            throw err;
          }
        },
      },
      opts.migrations ?? loadMigrations(),
    );
    if (opts.appRole) await grantAppRole(client, opts.appRole);
    return result;
  } finally {
    await client.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]).catch(() => undefined);
    await client.end();
  }
}

async function grantAppRole(client: pg.Client, role: string) {
  const r = pg.escapeIdentifier(role);
  const lit = pg.escapeLiteral(role);
  // Roles are cluster-wide: several databases (or test runs) may create it at once.
  await client.query(`do $$ begin
    if not exists (select 1 from pg_roles where rolname = ${lit}) then
      create role ${r} nologin nobypassrls;
    end if;
  exception when duplicate_object or unique_violation then null;
  end $$`);
  const attrs = await client.query<{ rolsuper: boolean; rolbypassrls: boolean }>(
    'select rolsuper, rolbypassrls from pg_roles where rolname = $1',
    [role],
  );
  if (attrs.rows[0]?.rolsuper || attrs.rows[0]?.rolbypassrls) {
    throw new Error(`The application role ${role} must not be a superuser or have BYPASSRLS.`);
  }
  const { rows } = await client.query<{ current_user: string }>('select current_user');
  const me = rows[0]?.current_user;
  if (me && me !== role) await client.query(`grant ${r} to ${pg.escapeIdentifier(me)}`).catch(() => undefined);
  await client.query(`grant usage on schema public to ${r}`);
  await client.query(`grant select, insert, update, delete on all tables in schema public to ${r}`);
  // Append-only tables (commented 'berth:append-only', e.g. audit_events): read and add rows only.
  const appendOnly = await client.query<{ name: string }>(
    `select c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'public' and c.relkind in ('r', 'p') and obj_description(c.oid, 'pg_class') = 'berth:append-only'`,
  );
  for (const { name } of appendOnly.rows) {
    await client.query(`revoke update, delete, truncate on ${pg.escapeIdentifier(name)} from ${r}`);
  }
  await client.query(`grant usage, select, update on all sequences in schema public to ${r}`);
  // Narrow SECURITY DEFINER paths revoked from PUBLIC (commented 'berth:app-callable'): this role only.
  const callable = await client.query<{ sig: string }>(
    `select p.oid::regprocedure::text as sig from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'public' and obj_description(p.oid, 'pg_proc') = 'berth:app-callable'`,
  );
  for (const { sig } of callable.rows) await client.query(`grant execute on function ${sig} to ${r}`);
}
