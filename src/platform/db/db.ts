import { AsyncLocalStorage } from 'node:async_hooks';
import { PGlite } from '@electric-sql/pglite';
import { sql } from 'drizzle-orm';
import { drizzle as drizzlePg } from 'drizzle-orm/node-postgres';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import pg from 'pg';

/** A Drizzle handle: the root database or a transaction. Repos accept either. */
export type Database = PgDatabase<PgQueryResultHKT>;

export type Engine = 'pglite' | 'postgres';

/**
 * Berth's database: the same SQL on embedded PGlite and on server Postgres.
 *
 * Tenant tables carry row-level security keyed on the `berth.workspace_id` setting.
 * `tenant(ws, fn)` runs fn in a transaction bound to one workspace; `system(fn)` runs
 * work that legitimately spans workspaces (sign-in, token lookups, jobs) with the
 * policy's bypass switched on for that transaction only. Queries on `orm` outside both
 * see no tenant rows at all on server Postgres, so a forgotten scope fails closed.
 */
export interface Db {
  readonly engine: Engine;
  readonly orm: Database;
  tenant<T>(workspaceId: string, fn: (tx: Database) => Promise<T>): Promise<T>;
  system<T>(fn: (tx: Database) => Promise<T>): Promise<T>;
  /** Parameterised raw SQL (one statement). */
  query<T extends Record<string, unknown>>(text: string, params?: unknown[]): Promise<T[]>;
  /** Multi-statement raw SQL, no parameters (migrations, maintenance). */
  exec(text: string): Promise<void>;
  /** True when the database answers. */
  ping(): Promise<boolean>;
  close(): Promise<void>;
  /** Present on the embedded engine. */
  readonly pglite?: PGlite;
  /** Present on server Postgres: the application pool (runs as the app role). */
  readonly pool?: pg.Pool;
}

/**
 * Binds `tx` to one workspace for the rest of its transaction (what db.tenant() does on
 * entry): for work that joins a caller's transaction instead of opening its own.
 */
export async function bindTenant(tx: Database, workspaceId: string) {
  await tx.execute(sql`select set_config('berth.workspace_id', ${workspaceId}, true)`);
}

async function bindSystem(tx: Database) {
  await tx.execute(sql`select set_config('berth.bypass_rls', 'on', true)`);
}

/**
 * Which scoped transaction the current async call chain is inside. Using the root handle
 * there (instead of the transaction's) would escape the transaction's atomicity and tenant
 * binding, and on PGlite, which has one connection, wait forever for the transaction
 * itself: so, when the guard is on, it throws at once, naming the mistake.
 *
 * The guard is for tests (the test databases turn it on): it needs an AsyncLocalStorage,
 * and on Node 20 any AsyncLocalStorage in use makes every promise of the process pay an
 * async hook (about a tenth of the gateway's CPU per call), so a served instance runs
 * without it.
 */
type NestingGuard = {
  assertOutside(what: string): void;
  inside<T>(kind: 'tenant' | 'system', fn: () => Promise<T>): Promise<T>;
};

const unguarded: NestingGuard = { assertOutside: () => undefined, inside: (_kind, fn) => fn() };

function nestingGuard(on: boolean): NestingGuard {
  if (!on) return unguarded;
  const open = new AsyncLocalStorage<string>();
  return {
    assertOutside(what) {
      const kind = open.getStore();
      if (kind) {
        throw new Error(
          `${what} was called inside a db.${kind}() transaction: use the transaction handle it gave you.`,
        );
      }
    },
    inside: (kind, fn) => open.run(kind, fn),
  };
}

const ROOT_METHODS = new Set([
  'select',
  'selectDistinct',
  'selectDistinctOn',
  'insert',
  'update',
  'delete',
  'execute',
  'transaction',
  'with',
  '$with',
  'query',
  'refreshMaterializedView',
]);

/** The root Drizzle handle, refusing use from inside a scoped transaction (when guarded). */
function guardRoot(orm: Database, guard: NestingGuard): Database {
  if (guard === unguarded) return orm;
  return new Proxy(orm, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof prop === 'string' && ROOT_METHODS.has(prop) && typeof value === 'function') {
        return (...args: unknown[]) => {
          guard.assertOutside(`db.orm.${prop}`);
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return value;
    },
  });
}

type AfterCommit = () => Promise<void> | void;

/** Callbacks waiting for the scoped transaction that owns a handle to commit. */
const afterCommitOf = new WeakMap<Database, AfterCommit[]>();

/**
 * Runs `fn` once the db.tenant()/db.system() transaction owning `tx` has committed (never
 * when it rolls back): for what other processes must only hear about once the change is
 * visible, such as cache invalidations sent over the bus. `fn` handles its own failures
 * (the change is committed by then; a throw is dropped, not reported to the caller).
 *
 * @example afterCommit(tx, () => bus.publish('berth.keys', JSON.stringify({ keys })));
 */
export function afterCommit(tx: Database, fn: AfterCommit): void {
  const list = afterCommitOf.get(tx);
  if (!list) throw new Error('afterCommit needs the handle of a db.tenant() or db.system() transaction.');
  list.push(fn);
}

async function runAfterCommit(list: AfterCommit[]) {
  for (const fn of list) {
    try {
      await fn();
    } catch {
      // Committed already: the callback owns its error handling.
    }
  }
}

function withScopes(orm: Database, guard: NestingGuard): Pick<Db, 'tenant' | 'system'> {
  async function scoped<T>(
    kind: 'tenant' | 'system',
    bind: (tx: Database) => Promise<void>,
    fn: (tx: Database) => Promise<T>,
  ) {
    guard.assertOutside(`db.${kind}`);
    const after: AfterCommit[] = [];
    const result = await orm.transaction((tx) =>
      guard.inside(kind, async () => {
        afterCommitOf.set(tx, after);
        await bind(tx);
        return fn(tx);
      }),
    );
    await runAfterCommit(after);
    return result;
  }
  return {
    tenant: (workspaceId, fn) => scoped('tenant', (tx) => bindTenant(tx, workspaceId), fn),
    system: (fn) => scoped('system', bindSystem, fn),
  };
}

export type PgliteDbOptions = {
  dataDir?: string;
  loadDataDir?: Blob | File;
  /** Throw when the root handle is used inside a scoped transaction (tests; see NestingGuard). */
  guardNesting?: boolean;
};

/** Opens embedded Postgres (PGlite, with pgvector). `dataDir` undefined = in memory. */
export async function openPglite(opts: PgliteDbOptions = {}): Promise<Db> {
  const { vector } = await import('@electric-sql/pglite-pgvector');
  const client = await PGlite.create({
    ...(opts.dataDir ? { dataDir: opts.dataDir } : {}),
    ...(opts.loadDataDir ? { loadDataDir: opts.loadDataDir } : {}),
    extensions: { vector },
  });
  const orm = drizzlePglite(client) as unknown as Database;
  const guard = nestingGuard(opts.guardNesting === true);
  return {
    engine: 'pglite',
    orm: guardRoot(orm, guard),
    pglite: client,
    ...withScopes(orm, guard),
    async query(text, params = []) {
      guard.assertOutside('db.query');
      const res = await client.query(text, params);
      return res.rows as never;
    },
    async exec(text) {
      guard.assertOutside('db.exec');
      await client.exec(text);
    },
    async ping() {
      try {
        await client.query('select 1');
        return true;
      } catch {
        return false;
      }
    },
    async close() {
      if (!client.closed) await client.close();
    },
  };
}

export type PostgresDbOptions = {
  url: string;
  max?: number;
  appRole?: string | null;
  applicationName?: string;
  /** Throw when the root handle is used inside a scoped transaction (tests; see NestingGuard). */
  guardNesting?: boolean;
};

/**
 * Opens server Postgres through a node-postgres pool. Every pooled connection switches
 * to the application role (not the table owner, no BYPASSRLS) so row-level security holds.
 */
export async function openPostgres(opts: PostgresDbOptions): Promise<Db> {
  const role = opts.appRole;
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.max ?? 10,
    application_name: opts.applicationName ?? 'berth',
    // The role is part of the connection's start-up packet: a connection that cannot take
    // it fails to open, so the pool never falls back to the (owner) login user.
    ...(role ? { options: `-c role=${role}` } : {}),
  });
  pool.on('error', () => {
    // An idle client died (server restart, network); the pool replaces it on next use.
  });
  if (role) {
    try {
      const { rows } = await pool.query<{ current_user: string; rolsuper: boolean; rolbypassrls: boolean }>(
        'select current_user, r.rolsuper, r.rolbypassrls from pg_roles r where r.rolname = current_user',
      );
      const me = rows[0];
      if (!me || me.current_user !== role || me.rolsuper || me.rolbypassrls) {
        throw new Error(`Requests must run as ${role}, without superuser or BYPASSRLS (row-level security).`);
      }
    } catch (err) {
      await pool.end();
      throw err;
    }
  }
  const orm = drizzlePg(pool) as unknown as Database;
  const guard = nestingGuard(opts.guardNesting === true);
  return {
    engine: 'postgres',
    orm: guardRoot(orm, guard),
    pool,
    ...withScopes(orm, guard),
    async query(text, params = []) {
      guard.assertOutside('db.query');
      const res = await pool.query(text, params);
      return res.rows as never;
    },
    async exec(text) {
      guard.assertOutside('db.exec');
      await pool.query(text);
    },
    async ping() {
      try {
        await pool.query('select 1');
        return true;
      } catch {
        return false;
      }
    },
    async close() {
      await pool.end();
    },
  };
}

/**
 * True when `err` (or what it wraps, as Drizzle does) is a unique-key violation (SQLSTATE
 * 23505): another transaction committed the same key first.
 */
export function isUniqueViolation(err: unknown): boolean {
  let e = err as { code?: string; cause?: unknown } | undefined;
  for (let i = 0; i < 3 && e; i++) {
    if (e.code === '23505') return true;
    e = e.cause as typeof e;
  }
  return false;
}
