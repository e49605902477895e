import { describe, expect, it } from 'vitest';
import { createTestDb, serverUrl } from '../../../test/helpers/db.ts';
import { openPostgres } from './db.ts';

const server = serverUrl();

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
