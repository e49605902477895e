import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { inject } from 'vitest';
import { type Db, openPglite, openPostgres } from '../../src/platform/db/db.ts';
import { TEST_APP_ROLE } from './global-setup.ts';

export type TestDb = {
  db: Db;
  engine: Db['engine'] /** Owner connection URL (server Postgres only). */;
  url: string | null;
  drop(): Promise<void>;
};

function withDatabase(url: string, database: string) {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** True when this test project runs against server Postgres. */
export function onServerPostgres(): boolean {
  return inject('engine') === 'postgres';
}

/** The server Postgres URL when one is configured for this run (in any project). */
export function serverUrl(): string | null {
  return inject('serverUrl');
}

/** Creates a fresh database copied from the run's migrated template and opens it. */
export async function createTestDb(opts: { engine?: Db['engine'] } = {}): Promise<TestDb> {
  const engine = opts.engine ?? inject('engine');
  if (engine === 'pglite') {
    const blob = new Blob([readFileSync(inject('pgliteTemplate'))]);
    const db = await openPglite({ loadDataDir: blob, guardNesting: true });
    return { db, engine, url: null, drop: () => db.close() };
  }
  const base = inject('serverUrl');
  const template = inject('pgTemplate');
  if (!base || !template) throw new Error('server Postgres is not configured for this run (TEST_DATABASE_URL)');
  const name = `berth_t_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await admin.query(`create database ${name} template ${template}`);
        break;
      } catch (err) {
        // Two copies of one template at the same instant can collide; retry briefly.
        if (attempt >= 10 || (err as { code?: string }).code !== '55006') throw err;
        await new Promise((r) => setTimeout(r, 50 + attempt * 50));
      }
    }
  } finally {
    await admin.end();
  }
  const url = withDatabase(base, name);
  const db = await openPostgres({ url, appRole: TEST_APP_ROLE, max: 8, guardNesting: true });
  return {
    db,
    engine,
    url,
    async drop() {
      await db.close();
      const c = new pg.Client({ connectionString: base });
      await c.connect();
      await c.query(`drop database if exists ${name} with (force)`);
      await c.end();
    },
  };
}
