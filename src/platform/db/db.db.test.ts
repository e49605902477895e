import { sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { createTestDb, serverUrl } from '../../../test/helpers/db.ts';
import { openPostgres } from './db.ts';

const server = serverUrl();

describe('errors', () => {
  it('using the root handle inside a scoped transaction fails at once instead of escaping it (or hanging on PGlite)', async () => {
    const t = await createTestDb();
    try {
      await expect(t.db.system(async () => t.db.query('select 1'))).rejects.toThrow(
        /inside a db.system\(\) transaction/,
      );
      await expect(t.db.tenant('ws_x', async () => t.db.orm.execute(sql`select 1`))).rejects.toThrow(
        /db.orm.execute was called inside a db.tenant\(\) transaction/,
      );
      await expect(t.db.system(async () => t.db.tenant('ws_x', async () => 1))).rejects.toThrow(/db.tenant/);
      // The transaction handle itself works, and the database is usable afterwards.
      expect(await t.db.system(async (tx) => (await tx.execute(sql`select 1 as one`)) !== null)).toBe(true);
      expect(await t.db.query<{ one: number }>('select 1 as one')).toEqual([{ one: 1 }]);
    } finally {
      await t.drop();
    }
  });
});

describe.skipIf(!server)('security (server Postgres; skipped without TEST_DATABASE_URL)', () => {
  it('requests run as the application role, which owns no table and cannot bypass row-level security', async () => {
    const t = await createTestDb({ engine: 'postgres' });
    try {
      const [me] = await t.db.query<{ current_user: string; session_user: string }>(
        'select current_user, session_user',
      );
      expect(me?.current_user).toBe('berth_app');
      const owned = await t.db.query<{ n: number }>(
        `select count(*)::int as n from pg_tables where schemaname = 'public' and tableowner = current_user`,
      );
      expect(owned[0]?.n).toBe(0);
    } finally {
      await t.drop();
    }
  });

  it('refuses to open when the role cannot be taken, instead of falling back to the login user', async () => {
    await expect(openPostgres({ url: server as string, appRole: 'berth_no_such_role' })).rejects.toThrow(
      /berth_no_such_role/,
    );
  });

  it('refuses a role that is a superuser', async () => {
    await expect(openPostgres({ url: server as string, appRole: 'postgres' })).rejects.toThrow(/BYPASSRLS/);
  });
});
