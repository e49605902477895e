import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDb, serverUrl, type TestDb } from '../../../test/helpers/db.ts';
import { openPglite } from './db.ts';
import { loadMigrations, migratePglite, migratePostgres } from './migrate.ts';

describe('happy', () => {
  let t: TestDb;
  beforeAll(async () => {
    t = await createTestDb();
  });
  afterAll(async () => {
    await t.drop();
  });

  it('the template database has every committed migration applied, in order', async () => {
    const applied = await t.db.query<{ version: number }>('select version from berth_migrations order by version');
    expect(applied.map((r) => Number(r.version))).toEqual(loadMigrations().map((m) => m.version));
  });

  it('a second run applies nothing', async () => {
    const fresh = await openPglite();
    if (!fresh.pglite) throw new Error('pglite');
    const first = await migratePglite(fresh.pglite);
    expect(first.applied.length).toBe(loadMigrations().length);
    const second = await migratePglite(fresh.pglite);
    expect(second.applied).toEqual([]);
    await fresh.close();
  });
});

describe('errors', () => {
  it('refuses a migration whose file changed after it was applied', async () => {
    const fresh = await openPglite();
    if (!fresh.pglite) throw new Error('pglite');
    const migrations = loadMigrations();
    await migratePglite(fresh.pglite, migrations);
    const changed = migrations.map((m, i) => (i === 0 ? { ...m, checksum: 'different' } : m));
    await expect(migratePglite(fresh.pglite, changed)).rejects.toThrow(/changed after it was applied/);
    await fresh.close();
  });
});

const server = serverUrl();
describe.skipIf(!server)('concurrency (server Postgres; skipped without TEST_DATABASE_URL)', () => {
  it('two processes migrating one empty database at once apply each migration exactly once', async () => {
    const base = server as string;
    const name = `berth_mig_${randomBytes(5).toString('hex')}`;
    const admin = new pg.Client({ connectionString: base });
    await admin.connect();
    await admin.query(`create database ${name}`);
    const u = new URL(base);
    u.pathname = `/${name}`;
    try {
      const results = await Promise.all([
        migratePostgres(u.toString(), { appRole: 'berth_app' }),
        migratePostgres(u.toString(), { appRole: 'berth_app' }),
      ]);
      const total = results.reduce((n, r) => n + r.applied.length, 0);
      expect(total).toBe(loadMigrations().length);
      const c = new pg.Client({ connectionString: u.toString() });
      await c.connect();
      const { rows } = await c.query('select count(*)::int as n from berth_migrations');
      await c.end();
      expect(rows[0].n).toBe(loadMigrations().length);
    } finally {
      await admin.query(`drop database if exists ${name} with (force)`);
      await admin.end();
    }
  });
});
