import { eq, sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import { useTestApp } from '../../../test/helpers/app.ts';
import { TestClient, type TestResponse } from '../../../test/helpers/client.ts';
import { logIn, type SignedInClient, signUp, testEmail } from '../../../test/helpers/identity.ts';
import { dataMap } from '../../app.ts';
import { DAY, MINUTE } from '../../platform/clock.ts';
import { exportRuleOf } from '../../platform/db/datamap.ts';
import { totpCodeAt } from '../identity/index.ts';
import { planExport, WITHHELD } from './privacy.export.archive.ts';
import { ARCHIVE_FORMAT, EXPORT_BUILD_JOB, EXPORT_EXPIRY_JOB, type ExportView } from './privacy.export.service.ts';
import { privacyExports } from './privacy.export.tables.ts';

const app = useTestApp();

type Archive = {
  format: string;
  manifest: {
    export: { id: string; kind: string; subject: { userId: string; email: string }; workspaceId?: string };
    rowCount: number;
    tables: Array<{
      table: string;
      purpose: string;
      lawfulBasis: string;
      retention: string;
      recipients: string[];
      rows: number;
      columns: Array<{ name: string }>;
      notExported: Array<{ column: string; reason?: string }>;
    }>;
    searchedTables: string[];
  };
  data: Record<string, Array<Record<string, unknown>>>;
};

function expectProblem(res: TestResponse, status: number, code: string) {
  expect(res.status, res.text).toBe(status);
  expect(res.body.code).toBe(code);
}

/** The download link of the newest export-ready mail to `email` (from the outbox: no SMTP in tests). */
async function linkFor(email: string, exportId: string): Promise<string> {
  const mails = await app().modules.notifications.service.listOutbox({ limit: 200 });
  const mail = mails.find((m) => m.to === email && m.tag === 'privacy.export_ready' && m.text.includes(exportId));
  if (!mail) throw new Error(`no export mail to ${email}`);
  const m = /http:\/\/berth\.test(\/api\/privacy\/exports\/\S+)/.exec(mail.text);
  if (!m?.[1]) throw new Error('no link in the export mail');
  return m[1];
}

async function requestAndBuild(c: SignedInClient, path = '/api/me/privacy/exports'): Promise<ExportView> {
  const res = await c.post<ExportView>(path);
  expect(res.status, res.text).toBe(202);
  expect(res.body.status).toBe('pending');
  await app().jobs.drain(EXPORT_BUILD_JOB);
  const view = await c.get<ExportView>(`/api/me/privacy/exports/${res.body.id}`);
  expect(view.body.status, view.text).toBe('ready');
  return view.body;
}

async function download(path: string) {
  return new TestClient(app()).get(path);
}

/** An export's row, read as system work (the table is behind row-level security). */
async function exportRow(id: string) {
  const [row] = await app().db.system((tx) => tx.select().from(privacyExports).where(eq(privacyExports.id, id)));
  return row;
}

/** Rows of `table` where any of `columns` equals `value`, counted with plain SQL. */
async function countRows(table: string, match: Array<{ column: string; value: string }>): Promise<number> {
  if (match.length === 0) return 0;
  const where = sql.join(
    match.map((m) => sql`${sql.identifier(m.column)} = ${m.value}`),
    sql` or `,
  );
  return app().db.system(async (tx) => {
    const res = (await tx.execute(
      sql`select count(*)::int as n from ${sql.identifier(table)} where ${where}`,
    )) as unknown as {
      rows: Array<{ n: number }>;
    };
    return Number(res.rows[0]?.n ?? 0);
  });
}

/** Alice: 2FA on, an API key, a workspace shared with Bob (who acts in it too). */
let alice: SignedInClient & { totpSecret: string; recoveryCodes: string[]; apiKey: string };
let bob: SignedInClient;
let workspaceId: string;

beforeAll(async () => {
  const a = await signUp(app(), { email: testEmail('alice'), displayName: 'Alice Export' });
  // A verified address: rows naming it by address (held mail, invitations) are hers too.
  const verifyMail = (await app().modules.notifications.service.listOutbox({ limit: 1000 })).find(
    (m) => m.to === a.email && m.tag === 'verify_email',
  );
  const verifyToken = /token=([A-Za-z0-9_-]{43})/.exec(verifyMail?.text ?? '')?.[1];
  const verified = await new TestClient(app()).post('/api/auth/verify-email', { token: verifyToken });
  expect(verified.status, verified.text).toBe(200);
  const start = await a.post<{ secret: string }>('/api/me/mfa/totp');
  const confirm = await a.post<{ recoveryCodes: string[] }>('/api/me/mfa/totp/confirm', {
    code: totpCodeAt(start.body.secret, app().clock.now()),
  });
  expect(confirm.status, confirm.text).toBe(200);
  app().clock.advance(30_000);
  // A second sign-in through the 2FA step: a login challenge and a second session.
  const second = new TestClient(app());
  const first = await second.post<{ challengeToken: string }>('/api/auth/login', {
    email: a.email,
    password: a.password,
  });
  expect(first.status).toBe(401);
  const done = await second.post('/api/auth/login/mfa', {
    challengeToken: first.body.challengeToken,
    code: totpCodeAt(start.body.secret, app().clock.now()),
  });
  expect(done.status, done.text).toBe(200);

  const ws = await a.post<{ id: string }>('/api/workspaces', { name: 'Acme' });
  workspaceId = ws.body.id;
  const key = await a.post<{ secret: string }>(`/api/workspaces/${workspaceId}/keys`, {
    name: 'ci',
    scopes: ['models:read'],
  });
  expect(key.status, key.text).toBe(201);
  alice = Object.assign(a, {
    totpSecret: start.body.secret,
    recoveryCodes: confirm.body.recoveryCodes,
    apiKey: key.body.secret,
  });

  bob = await signUp(app(), { email: testEmail('bob'), displayName: 'Bob Other' });
  const scope = { workspaceId, actor: { type: 'user' as const, userId: alice.userId }, role: 'owner' as const };
  const { token } = await app().modules.workspaces.service.invite({ scope, email: bob.email, role: 'admin' });
  await app().modules.workspaces.service.acceptInvitation({ token, userId: bob.userId });
  // Bob acts in the shared workspace: his key and an invitation he sends are in its audit log.
  expect((await bob.post(`/api/workspaces/${workspaceId}/keys`, { name: 'bob', scopes: ['models:read'] })).status).toBe(
    201,
  );
  const invited = await bob.post(`/api/workspaces/${workspaceId}/invitations`, {
    email: testEmail('carol'),
    role: 'viewer',
  });
  expect(invited.status, invited.text).toBe(201);
  // Alice acts on Bob: her audit event names him (as a pseudonym in her export).
  const demoted = await alice.patch(`/api/workspaces/${workspaceId}/members/${bob.userId}`, { role: 'member' });
  expect(demoted.status, demoted.text).toBe(200);
});

describe('data map', () => {
  it('says whose data every personal column an export may show is, and how every user table is found', () => {
    const plans = planExport(dataMap(app().modules));
    const unowned = plans.flatMap((p) =>
      p.columns
        .filter((c) => c.rule === 'include' && c.personal && !c.ownerColumn)
        .map((c) => `${p.entry.table}.${c.name}`),
    );
    expect(unowned, 'personal columns without `exportOf` in a table naming several people').toEqual([]);
    for (const p of plans) {
      for (const c of p.columns.filter((x) => x.ownerColumn)) {
        expect([...p.userColumns, ...p.emailColumns], `${p.entry.table}.${c.name} exportOf`).toContain(c.ownerColumn);
      }
      if (p.entry.subject === 'user') {
        expect(p.userColumns.length + p.emailColumns.length, `${p.entry.table} names no user`).toBeGreaterThan(0);
      }
      if (p.entry.subject === 'workspace') {
        expect(p.workspaceColumns.length, `${p.entry.table} names no workspace`).toBeGreaterThan(0);
      }
    }
    // Credentials never leave: every secret column is `never`.
    for (const t of dataMap(app().modules)) {
      for (const [name, c] of Object.entries(t.columns)) {
        if (c.secret) expect(exportRuleOf(t, name), `${t.table}.${name}`).toBe('never');
      }
    }
  });
});

describe('happy', () => {
  it("exports every row the data map ties to the user, with the map's manifest, and nothing secret or of others", async () => {
    const view = await requestAndBuild(alice);
    const plans = planExport(dataMap(app().modules));
    const requester = { userId: alice.userId, email: alice.email };
    // Her other identifiers (the pseudonym audit events name her by), from the map's alias columns.
    const ids = [alice.userId];
    for (const p of plans.filter((x) => x.aliasColumns.length > 0)) {
      for (const column of p.aliasColumns) {
        const rows = await app().db.system(async (tx) => {
          const where = sql.join(
            p.userColumns.map((c) => sql`${sql.identifier(c)} = ${alice.userId}`),
            sql` or `,
          );
          const res = (await tx.execute(
            sql`select ${sql.identifier(column)} as v from ${sql.identifier(p.entry.table)} where ${where}`,
          )) as unknown as { rows: Array<{ v: string }> };
          return res.rows;
        });
        ids.push(...rows.map((r) => r.v));
      }
    }
    // What the database holds about Alice now, table by table, from the map's subject columns.
    const expected = new Map<string, number>();
    for (const p of plans) {
      const match = [
        ...[...p.userColumns, ...p.aliasColumns].flatMap((column) => ids.map((value) => ({ column, value }))),
        ...p.emailColumns.map((column) => ({ column, value: requester.email })),
      ];
      expected.set(p.entry.table, await countRows(p.entry.table, match));
    }
    // The one row written after the archive was built: the mail with its link.
    const outbox = expected.get('email_outbox') ?? 0;
    expected.set('email_outbox', outbox - (await countRows('email_outbox', [{ column: 'ref', value: view.id }])));
    const password = await app().db.query<{ password_hash: string }>('select password_hash from users where id = $1', [
      alice.userId,
    ]);

    const res = await download(await linkFor(alice.email, view.id));
    expect(res.status, res.text).toBe(200);
    expect(String(res.headers['content-type'])).toMatch(/^application\/json/);
    expect(String(res.headers['content-disposition'])).toContain(`berth-export-${view.id}.json`);
    const archive = JSON.parse(res.text) as Archive;
    expect(archive.format).toBe(ARCHIVE_FORMAT);
    expect(archive.manifest.export.subject).toEqual(requester);

    // Every table whose subject is the user, and every other table naming her, row for row.
    const userTables = dataMap(app().modules).filter((t) => t.subject === 'user');
    expect(userTables.length).toBeGreaterThan(8);
    for (const t of userTables) {
      expect(archive.manifest.searchedTables, `${t.table} is a user table`).toContain(t.table);
    }
    for (const [table, n] of expected) {
      expect(archive.data[table]?.length ?? 0, table).toBe(n);
    }
    // The set-up gave her rows in these (a floor, so a broken match cannot pass with zeros).
    for (const table of [
      'users',
      'sessions',
      'mfa_totp',
      'mfa_recovery_codes',
      'login_challenges',
      'security_events',
    ]) {
      expect(expected.get(table), table).toBeGreaterThan(0);
    }
    for (const table of ['memberships', 'workspaces', 'api_keys', 'audit_events', 'privacy_exports']) {
      expect(expected.get(table), table).toBeGreaterThan(0);
    }
    expect(archive.manifest.rowCount).toBe([...expected.values()].reduce((a, b) => a + b, 0));
    expect(archive.data.users?.[0]).toMatchObject({
      id: alice.userId,
      email: alice.email,
      display_name: 'Alice Export',
    });

    // The manifest says, per table, what the map says.
    const entries = new Map(dataMap(app().modules).map((t) => [t.table, t]));
    for (const m of archive.manifest.tables) {
      const e = entries.get(m.table);
      expect(e, m.table).toBeDefined();
      expect(m.purpose).toBe(e?.purpose);
      expect(m.lawfulBasis).toBe(e?.basis);
      expect(m.retention).toBe(e?.retention);
      expect(m.recipients).toEqual([...(e?.recipients ?? [])]);
      expect(m.rows).toBe(archive.data[m.table]?.length);
      for (const c of m.notExported) {
        // Secrets, or (with the reason) what only a workspace's export shows.
        if (c.reason) expect(e?.columns[c.column]?.workspaceExportOnly, c.column).toBe(true);
        else expect(exportRuleOf(e ?? { columns: {} }, c.column)).toBe('never');
      }
    }
    expect(archive.manifest.tables.find((t) => t.table === 'users')?.notExported.map((c) => c.column)).toContain(
      'password_hash',
    );

    // No secret, in any form the test knows, and nothing of Bob.
    const text = res.text;
    const secrets = {
      password: alice.password,
      passwordHash: password[0]?.password_hash ?? 'missing',
      totpSecret: alice.totpSecret,
      apiKey: alice.apiKey,
      ...Object.fromEntries(alice.recoveryCodes.map((c, i) => [`recovery${i}`, c])),
      ...Object.fromEntries([...alice.cookies.values()].map((v, i) => [`cookie${i}`, decodeURIComponent(v)])),
    };
    for (const [what, secret] of Object.entries(secrets)) {
      expect(secret.length, what).toBeGreaterThan(5);
      expect(text.includes(secret), `${what} in the export`).toBe(false);
    }
    for (const [what, other] of Object.entries({ email: bob.email, id: bob.userId, name: 'Bob Other' })) {
      expect(text.includes(other), `Bob's ${what} in Alice's export`).toBe(false);
    }
    // Bob is in her workspace's audit events she took part in only as a pseudonym.
    expect(text).toMatch(/person_[0-9a-f]{16}/);
    expect(text).not.toMatch(/carol-[0-9a-f]+@example\.test/);

    // Tracked as a portability request, completed when the archive was ready.
    const requests = await alice.get<{ data: Array<{ id: string; type: string; status: string }> }>(
      '/api/me/privacy/requests',
    );
    expect(requests.body.data.find((r) => r.id === view.requestId)).toMatchObject({
      type: 'portability',
      status: 'completed',
    });
  });

  it("exports a workspace's data to its owner, other members pseudonymised", async () => {
    const view = await requestAndBuild(alice, `/api/workspaces/${workspaceId}/privacy/exports`);
    expect(view.kind).toBe('workspace');
    const res = await download(await linkFor(alice.email, view.id));
    expect(res.status, res.text).toBe(200);
    const archive = JSON.parse(res.text) as Archive;
    expect(archive.manifest.export).toMatchObject({ kind: 'workspace', workspaceId });
    const members = archive.data.memberships ?? [];
    expect(members).toHaveLength(2);
    const mine = members.find((m) => m.user_id === alice.userId);
    expect(mine?.role).toBe('owner');
    const other = members.find((m) => m.user_id !== alice.userId);
    expect(String(other?.user_id)).toMatch(/^person_[0-9a-f]{16}$/);
    expect(other?.role).toBe(WITHHELD);
    expect(archive.data.workspaces?.[0]).toMatchObject({ id: workspaceId, name: 'Acme' });
    expect((archive.data.audit_events ?? []).length).toBeGreaterThan(3);
    expect((archive.data.api_keys ?? []).length).toBe(2);
    expect(archive.data.invitations?.[0]?.email).toBe(WITHHELD);
    for (const other of [bob.email, bob.userId, 'Bob Other', alice.apiKey])
      expect(res.text.includes(other)).toBe(false);
    expect(res.text).not.toMatch(/carol-[0-9a-f]+@example\.test/);
  });
});

describe('errors', () => {
  it('refuses a second export while one is being prepared (409 export_pending), then allows one', async () => {
    const c = await signUp(app());
    const first = await c.post<ExportView>('/api/me/privacy/exports');
    expect(first.status).toBe(202);
    expectProblem(await c.post('/api/me/privacy/exports'), 409, 'export_pending');
    const list = await c.get<{ data: ExportView[] }>('/api/me/privacy/exports');
    expect(list.body.data.map((e) => e.id)).toEqual([first.body.id]);
    await app().jobs.drain(EXPORT_BUILD_JOB);
    expect((await c.post('/api/me/privacy/exports')).status).toBe(202);
    await app().jobs.drain(EXPORT_BUILD_JOB);
  });

  it('hands an archive over once: a second download answers 410 export_link_used', async () => {
    const c = await signUp(app());
    const view = await requestAndBuild(c);
    const link = await linkFor(c.email, view.id);
    expect((await download(link)).status).toBe(200);
    expectProblem(await download(link), 410, 'export_link_used');
    // The token travels in the link only: never in a log line.
    const token = /token=([^&]+)/.exec(link)?.[1] ?? '';
    expect(token.length).toBeGreaterThan(30);
    expect(app().logs.some((line) => line.includes(token))).toBe(false);
    const after = await c.get<ExportView>(`/api/me/privacy/exports/${view.id}`);
    expect(after.body.status).toBe('downloaded');
    const stored = await exportRow(view.id);
    expect(stored?.archiveCiphertext).toBeNull();
  });
});

describe('security', () => {
  it("answers 404 for someone else's export and for a link with the wrong token", async () => {
    const view = await requestAndBuild(bob);
    expectProblem(await alice.get(`/api/me/privacy/exports/${view.id}`), 404, 'not_found');
    expect(
      (await alice.get<{ data: ExportView[] }>('/api/me/privacy/exports')).body.data.map((e) => e.id),
    ).not.toContain(view.id);
    const link = await linkFor(bob.email, view.id);
    const wrong = link.replace(/token=[^&]+/, 'token=not-the-token');
    expectProblem(await download(wrong), 404, 'export_link_invalid');
    // Alice's own token does not open Bob's export.
    const mine = await requestAndBuild(alice);
    const aliceToken = /token=([^&]+)/.exec(await linkFor(alice.email, mine.id))?.[1] ?? '';
    expectProblem(
      await download(`/api/privacy/exports/${view.id}/download?token=${aliceToken}`),
      404,
      'export_link_invalid',
    );
    // The refused attempts used nothing up.
    expect((await download(link)).status).toBe(200);
  });

  it('workspace exports are for owners only; anonymous callers get 401', async () => {
    expectProblem(await bob.post(`/api/workspaces/${workspaceId}/privacy/exports`), 403, 'forbidden');
    // Not with an API key, even the owner's with the widest scope: privacy rights are exercised signed in.
    const key = await alice.post<{ secret: string }>(`/api/workspaces/${workspaceId}/keys`, {
      name: 'admin',
      scopes: ['workspace:admin'],
    });
    expect(key.status, key.text).toBe(201);
    const byKey = await new TestClient(app()).post(`/api/workspaces/${workspaceId}/privacy/exports`, undefined, {
      authorization: `Bearer ${key.body.secret}`,
    });
    expect(byKey.status, byKey.text).toBe(403);
    const outsider = await signUp(app());
    expect((await outsider.post(`/api/workspaces/${workspaceId}/privacy/exports`)).status).toBe(404);
    expectProblem(await new TestClient(app()).post('/api/me/privacy/exports'), 401, 'unauthenticated');
    expectProblem(await new TestClient(app()).get('/api/me/privacy/exports'), 401, 'unauthenticated');
  });

  it('keeps the archive encrypted at rest, bound to its export', async () => {
    const c = await signUp(app(), { displayName: 'Plaintext Probe' });
    const first = await requestAndBuild(c);
    const stored = Buffer.from((await exportRow(first.id))?.archiveCiphertext ?? new Uint8Array());
    expect(stored.length).toBeGreaterThan(32);
    expect(stored.includes(Buffer.from(c.email))).toBe(false);
    // Moved onto another export of the same user, the ciphertext does not open (the AAD names the export),
    // and the refused download leaves that export as it was.
    const second = await requestAndBuild(c);
    await app().db.system((tx) =>
      tx.update(privacyExports).set({ archiveCiphertext: stored }).where(eq(privacyExports.id, second.id)),
    );
    const res = await download(await linkFor(c.email, second.id));
    expect(res.status).toBe(410);
    expect(res.body).toMatchObject({ code: 'export_unavailable' });
    expect(res.text.includes(c.email)).toBe(false);
    expect((await c.get<ExportView>(`/api/me/privacy/exports/${second.id}`)).body.status).toBe('ready');
  });
});

// Last: it moves the clock a week on (every earlier session expires).
describe('expiry', () => {
  it('deletes an export, archive and all, once its 7 days are over', async () => {
    const c = await signUp(app());
    const view = await requestAndBuild(c);
    const link = await linkFor(c.email, view.id);
    const exists = async () => (await countRows('privacy_exports', [{ column: 'id', value: view.id }])) === 1;

    app().clock.advance(7 * DAY - MINUTE);
    await app().jobs.send(EXPORT_EXPIRY_JOB, {});
    await app().jobs.drain(EXPORT_EXPIRY_JOB);
    expect(await exists()).toBe(true);

    app().clock.advance(2 * MINUTE);
    expectProblem(await download(link), 410, 'export_link_expired');
    await app().jobs.send(EXPORT_EXPIRY_JOB, {});
    await app().jobs.drain(EXPORT_EXPIRY_JOB);
    expect(await exists()).toBe(false);
    expectProblem(await download(link), 404, 'export_link_invalid');
    const again = await logIn(app(), c.email, c.password);
    expectProblem(await again.get(`/api/me/privacy/exports/${view.id}`), 404, 'not_found');
  });
});
