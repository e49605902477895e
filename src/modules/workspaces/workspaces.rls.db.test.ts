import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { onServerPostgres } from '../../../test/helpers/db.ts';
import { testEmail, testPassword } from '../../../test/helpers/identity.ts';
import type { Database } from '../../platform/db/db.ts';
import type { Scope } from '../../platform/http/context.ts';

/**
 * Row-level security is the second lock behind every repo's `workspace_id` filter: these
 * tests query without any filter and prove the database itself keeps workspaces apart.
 * The tables come from the catalog, not from a list: every table in schema public with a
 * `workspace_id` column is a tenant table (plus `workspaces`, keyed on its `id`), so a new
 * module's table without `berth_enable_tenant_rls` fails here.
 * The flags and policies are checked on both engines; the behaviour needs server Postgres,
 * because PGlite runs as a superuser, which Postgres exempts from RLS.
 */
async function rows<T>(tx: Database, query: ReturnType<typeof sql>): Promise<T[]> {
  return ((await tx.execute(query)) as unknown as { rows: T[] }).rows;
}

type Policy = { name: string; cmd: string; permissive: boolean; qual: string | null; check: string | null };
type TenantTable = {
  relname: string;
  owner: string;
  relrowsecurity: boolean;
  relforcerowsecurity: boolean;
  policies: Policy[];
};

/** Every tenant table of schema public, from the catalog, with its RLS flags and policies. */
async function tenantTables(app: TestApp): Promise<TenantTable[]> {
  return app.db.query<TenantTable>(
    `select c.relname, pg_get_userbyid(c.relowner) as owner, c.relrowsecurity, c.relforcerowsecurity,
            coalesce((select json_agg(json_build_object(
                        'name', p.polname, 'cmd', p.polcmd::text, 'permissive', p.polpermissive,
                        'qual', pg_get_expr(p.polqual, p.polrelid), 'check', pg_get_expr(p.polwithcheck, p.polrelid))
                        order by p.polname)
                        from pg_policy p where p.polrelid = c.oid), '[]'::json) as policies
       from pg_class c
       join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'public' and c.relkind in ('r', 'p')
        and (c.relname = 'workspaces' or exists (
              select 1 from pg_attribute a
               where a.attrelid = c.oid and a.attname = 'workspace_id' and a.attnum > 0 and not a.attisdropped))
      order by c.relname`,
  );
}

/**
 * What is wrong with a tenant table's row-level security, if anything: it must be enabled and
 * forced; reading must be filtered by the bound workspace (a SELECT or ALL policy on its key
 * and `berth.workspace_id`); and no permissive policy may be unconditional (each depends on a
 * `berth.*` setting), since permissive policies add up.
 */
function rlsProblems(t: TenantTable): string[] {
  const key = t.relname === 'workspaces' ? 'id' : 'workspace_id';
  const problems: string[] = [];
  if (!t.relrowsecurity) problems.push('not enabled');
  if (!t.relforcerowsecurity) problems.push('not forced');
  const isolates = (p: Policy) =>
    (p.cmd === '*' || p.cmd === 'r') &&
    p.qual !== null &&
    p.qual.includes(key) &&
    p.qual.includes("'berth.workspace_id'");
  if (!t.policies.some(isolates)) problems.push('no policy filters reads by berth.workspace_id');
  for (const p of t.policies.filter((x) => x.permissive)) {
    for (const expr of [p.qual, p.check]) {
      if (expr !== null && !expr.includes("'berth."))
        problems.push(`policy ${p.name} does not depend on a berth.* setting`);
    }
  }
  return problems;
}

describe('security', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp();
  });
  afterAll(async () => {
    await app?.close();
  });

  it('every table with a workspace_id column has row-level security enabled, forced, and a tenant policy', async () => {
    const tables = await tenantTables(app);
    expect(tables.map((t) => t.relname)).toEqual(expect.arrayContaining(['invitations', 'memberships', 'workspaces']));
    const wrong = Object.fromEntries(
      tables.flatMap((t) => {
        const problems = rlsProblems(t);
        return problems.length > 0 ? [[t.relname, problems] as const] : [];
      }),
    );
    expect(wrong, "add `select berth_enable_tenant_rls('<table>');` to the table's migration").toEqual({});
  });

  it('the check itself refuses tables without RLS, unforced, unfiltered or with an open policy', () => {
    const good: TenantTable = {
      relname: 'things',
      owner: 'berth',
      relrowsecurity: true,
      relforcerowsecurity: true,
      policies: [
        {
          name: 'tenant_isolation',
          cmd: '*',
          permissive: true,
          qual: "(workspace_id = current_setting('berth.workspace_id'::text, true))",
          check: null,
        },
      ],
    };
    expect(rlsProblems(good)).toEqual([]);
    expect(rlsProblems({ ...good, relrowsecurity: false })).toEqual(['not enabled']);
    expect(rlsProblems({ ...good, relforcerowsecurity: false })).toEqual(['not forced']);
    expect(rlsProblems({ ...good, policies: [] })).toEqual(['no policy filters reads by berth.workspace_id']);
    const open = { name: 'open', cmd: 'r', permissive: true, qual: 'true', check: null };
    expect(rlsProblems({ ...good, policies: [...good.policies, open] })).toEqual([
      'policy open does not depend on a berth.* setting',
    ]);
  });
});

describe.skipIf(!onServerPostgres())(
  'row-level security (server Postgres only; skipped without TEST_DATABASE_URL)',
  () => {
    let app: TestApp;
    let a: string;
    let b: string;
    let ownerA: string;

    async function user() {
      return (await app.modules.identity.service.createUser({ email: testEmail('rls'), password: testPassword() })).id;
    }
    const scope = (workspaceId: string, userId: string): Scope => ({
      workspaceId,
      actor: { type: 'user', userId },
      role: 'owner',
    });
    async function addMember(workspaceId: string, owner: string, role: 'admin' | 'member' | 'viewer') {
      const ws = app.modules.workspaces.service;
      const created = await app.modules.identity.service.createUser({
        email: testEmail('rls'),
        password: testPassword(),
      });
      const { token } = await ws.invite({ scope: scope(workspaceId, owner), email: created.email, role });
      await ws.acceptInvitation({ token, userId: created.id });
      return created.id;
    }

    beforeAll(async () => {
      app = await createTestApp();
      const ws = app.modules.workspaces.service;
      ownerA = await user();
      const ownerB = await user();
      a = (await ws.createWorkspace({ ownerUserId: ownerA, name: 'A' })).id;
      b = (await ws.createWorkspace({ ownerUserId: ownerB, name: 'B' })).id;
      await addMember(a, ownerA, 'member');
      await addMember(b, ownerB, 'admin');
      await addMember(b, ownerB, 'viewer');
      await ws.invite({ scope: scope(a, ownerA), email: testEmail('pending'), role: 'viewer' });
      await ws.invite({ scope: scope(b, ownerB), email: testEmail('pending'), role: 'viewer' });
      await ws.invite({ scope: scope(b, ownerB), email: testEmail('pending'), role: 'member' });
    });
    afterAll(async () => {
      await app?.close();
    });

    describe('security', () => {
      it('inside tenant(A) an unfiltered select sees only A', async () => {
        await app.db.tenant(a, async (tx) => {
          const m = await rows<{ workspace_id: string }>(tx, sql`select * from memberships`);
          const i = await rows<{ workspace_id: string }>(tx, sql`select * from invitations`);
          const w = await rows<{ id: string }>(tx, sql`select * from workspaces`);
          expect(m.map((r) => r.workspace_id)).toEqual([a, a]);
          expect(i.map((r) => r.workspace_id)).toEqual([a, a]);
          expect(w.map((r) => r.id)).toEqual([a]);
        });
        // The rows exist: system work (the RLS bypass) sees both workspaces (A: 2 members, B: 3).
        const all = await app.db.system((tx) =>
          rows<{ n: number }>(tx, sql`select count(*)::int as n from memberships`),
        );
        expect(all[0]?.n).toBe(5);
      });

      it("inside tenant(A) writing B's rows fails or touches nothing", async () => {
        await expect(
          app.db.tenant(a, (tx) =>
            tx.execute(
              sql`insert into memberships (workspace_id, user_id, role, created_at, updated_at)
                values (${b}, ${ownerA}, 'owner', now(), now())`,
            ),
          ),
        ).rejects.toMatchObject({ cause: { code: '42501' } });
        await expect(
          app.db.tenant(a, (tx) =>
            tx.execute(
              sql`insert into invitations (id, workspace_id, email, role, token_hash, expires_at, created_at)
                values ('inv_x', ${b}, 'x@example.test', 'admin', 'h', now(), now())`,
            ),
          ),
        ).rejects.toMatchObject({ cause: { code: '42501' } });
        const changed = await app.db.tenant(a, async (tx) => {
          const u = await rows<{ workspace_id: string }>(
            tx,
            sql`update memberships set role = 'owner' where workspace_id = ${b} returning workspace_id`,
          );
          const d = await rows<{ id: string }>(tx, sql`delete from invitations where workspace_id = ${b} returning id`);
          const w = await rows<{ id: string }>(tx, sql`update workspaces set name = 'pwned' returning id`);
          return { u: u.length, d: d.length, w: w.map((r) => r.id) };
        });
        expect(changed).toEqual({ u: 0, d: 0, w: [a] });
        const bName = await app.db.tenant(b, (tx) => rows<{ name: string }>(tx, sql`select name from workspaces`));
        expect(bName).toEqual([{ name: 'B' }]);
      });

      it('outside any tenant transaction the app pool sees no tenant rows at all', async () => {
        const tables = await tenantTables(app);
        for (const { relname } of tables) {
          const [r] = await app.db.query<{ n: number }>(`select count(*)::int as n from "${relname}"`);
          expect(r?.n, relname).toBe(0);
        }
        // The fixture rows exist: system work sees them.
        const seen = await app.db.system((tx) =>
          rows<{ n: number }>(tx, sql`select count(*)::int as n from invitations`),
        );
        expect(seen[0]?.n).toBeGreaterThan(0);
      });

      it('inside tenant(A) an unfiltered select of any tenant table sees only A', async () => {
        const tables = (await tenantTables(app)).filter((t) => t.relname !== 'workspaces');
        await app.db.tenant(a, async (tx) => {
          for (const { relname } of tables) {
            const ids = await rows<{ workspace_id: string }>(
              tx,
              sql.raw(`select distinct workspace_id from "${relname}"`),
            );
            expect(
              ids.every((r) => r.workspace_id === a),
              relname,
            ).toBe(true);
          }
        });
      });

      it('the app role owns no tenant table, is no superuser, has no BYPASSRLS; RLS is enabled and forced', async () => {
        const [me] = await app.db.query<{ current_user: string; rolsuper: boolean; rolbypassrls: boolean }>(
          'select current_user, r.rolsuper, r.rolbypassrls from pg_roles r where r.rolname = current_user',
        );
        expect(me).toEqual({ current_user: 'berth_app', rolsuper: false, rolbypassrls: false });
        const tables = await tenantTables(app);
        expect(tables.length).toBeGreaterThanOrEqual(3);
        for (const t of tables) {
          expect(t.owner, t.relname).not.toBe('berth_app');
          expect(t.relrowsecurity && t.relforcerowsecurity, t.relname).toBe(true);
        }
      });
    });

    describe('errors', () => {
      it('two owners demoting each other at once leave exactly one owner (workspace row lock)', async () => {
        const ws = app.modules.workspaces.service;
        for (let round = 0; round < 5; round++) {
          const first = await user();
          const id = (await ws.createWorkspace({ ownerUserId: first, name: `Race ${round}` })).id;
          const second = await addMember(id, first, 'admin');
          await ws.changeRole({ scope: scope(id, first), userId: second, role: 'owner' });
          const results = await Promise.allSettled([
            ws.changeRole({ scope: scope(id, first), userId: second, role: 'admin' }),
            ws.changeRole({ scope: scope(id, second), userId: first, role: 'admin' }),
          ]);
          expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
          const rejected = results.find((r) => r.status === 'rejected');
          expect((rejected as PromiseRejectedResult).reason).toMatchObject({ status: 403 });
          const owners = await app.db.tenant(id, (tx) =>
            rows<{ user_id: string }>(tx, sql`select user_id from memberships where role = 'owner'`),
          );
          expect(owners).toHaveLength(1);
        }
      });
    });
  },
);
