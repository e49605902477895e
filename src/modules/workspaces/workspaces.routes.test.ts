import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { type SignedInClient, signUp, testEmail } from '../../../test/helpers/identity.ts';
import { DAY } from '../../platform/clock.ts';
import { sha256Hex } from '../../platform/crypto.ts';
import { newId } from '../../platform/ids.ts';
import { totpCodeAt } from '../identity/index.ts';
import { SEND_INVITATION_JOB } from './index.ts';

let app: TestApp;
beforeAll(async () => {
  // Many sign-ups from one test address: lift the per-IP sign-up limit (tested by identity).
  app = await createTestApp({ config: { BERTH_SIGNUP_IP_MAX: 100_000 } });
});
afterAll(async () => {
  await app.close();
});

type Ws = { id: string; name: string; requireMfa: boolean; role?: string };
type Inv = { id: string; email: string; role: string; status: string };
type Members = { data: Array<{ userId: string; email: string | null; role: string }> };

async function createWorkspace(name = 'Acme') {
  const owner = await signUp(app);
  const res = await owner.post<Ws>('/api/workspaces', { name });
  expect(res.status).toBe(201);
  return { owner, ws: res.body.id, url: `/api/workspaces/${res.body.id}` };
}

async function rowsOf<T>(result: Promise<unknown>): Promise<T[]> {
  return ((await result) as { rows: T[] }).rows;
}

/**
 * The token of invitation `invitationId`, read from the email (the only place it exists in
 * clear) once the queued email job ran.
 */
async function invitationToken(email: string, invitationId: string): Promise<string> {
  await app.jobs.drain(SEND_INVITATION_JOB);
  const [row] = await app.db.system((tx) =>
    rowsOf<{ token_hash: string }>(tx.execute(sql`select token_hash from invitations where id = ${invitationId}`)),
  );
  const messages = await app.modules.notifications.service.listOutbox({ limit: 500 });
  const tokens = messages
    .filter((m) => m.to === email.toLowerCase() && m.tag === 'invitation')
    .map((m) => m.text.match(/invitations\/accept\?token=([A-Za-z0-9_-]+)/)?.[1] ?? '');
  const token = tokens.find((t) => sha256Hex(t) === row?.token_hash);
  if (!token) throw new Error(`no invitation email for ${email}`);
  return token;
}

async function invite(by: TestClient, url: string, role = 'member', email = testEmail('invitee')) {
  const res = await by.post<Inv>(`${url}/invitations`, { email, role });
  expect(res.status).toBe(201);
  return { invitation: res.body, email, token: await invitationToken(email, res.body.id) };
}

/** Invites a new user, who signs up with the invited email and accepts. */
async function join(by: TestClient, url: string, role = 'member'): Promise<SignedInClient> {
  const { email, token } = await invite(by, url, role);
  const user = await signUp(app, { email });
  const res = await user.post('/api/invitations/accept', { token });
  expect(res.status).toBe(200);
  return user;
}

async function enableMfa(client: TestClient) {
  const start = await client.post<{ secret: string }>('/api/me/mfa/totp');
  expect(start.status).toBe(200);
  const confirm = await client.post('/api/me/mfa/totp/confirm', {
    code: totpCodeAt(start.body.secret, app.clock.now()),
  });
  expect(confirm.status).toBe(200);
}

async function roleOf(url: string, by: TestClient, userId: string) {
  const res = await by.get<Members>(`${url}/members`);
  return res.body.data.find((m) => m.userId === userId)?.role ?? null;
}

describe('happy', () => {
  it('creates a workspace whose creator is its owner, and lists it', async () => {
    const { owner, ws, url } = await createWorkspace('  Acme Labs  ');
    const got = await owner.get<Ws>(url);
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({ id: ws, name: 'Acme Labs', requireMfa: false, role: 'owner' });
    const list = await owner.get<{ data: Ws[] }>('/api/workspaces');
    expect(list.body.data.map((w) => [w.id, w.role])).toEqual([[ws, 'owner']]);
    expect(await roleOf(url, owner, owner.userId)).toBe('owner');
  });

  it('renames a workspace', async () => {
    const { owner, url } = await createWorkspace();
    const res = await owner.patch<Ws>(url, { name: 'New name' });
    expect(res.status).toBe(200);
    expect(res.body.name).toBe('New name');
    expect((await owner.get<Ws>(url)).body.name).toBe('New name');
  });

  it('invites by email; the invitee signs up with that address and accepts', async () => {
    const { owner, ws, url } = await createWorkspace('Invites');
    const { invitation, email, token } = await invite(owner, url, 'admin');
    expect(invitation).toMatchObject({ email, role: 'admin', status: 'pending' });
    expect(JSON.stringify(invitation)).not.toContain(token);
    const invitee = await signUp(app, { email });
    const accepted = await invitee.post<{ workspace: Ws; role: string }>('/api/invitations/accept', { token });
    expect(accepted.status).toBe(200);
    expect(accepted.body).toMatchObject({ workspace: { id: ws, name: 'Invites' }, role: 'admin' });
    const members = await invitee.get<Members>(`${url}/members`);
    expect(members.body.data.map((m) => [m.email, m.role])).toEqual([
      [owner.email, 'owner'],
      [email, 'admin'],
    ]);
    const list = await owner.get<{ data: Inv[] }>(`${url}/invitations`);
    expect(list.body.data.map((i) => i.status)).toEqual(['accepted']);
  });

  it('matches the invited address case-insensitively', async () => {
    const { owner, url } = await createWorkspace();
    const email = testEmail('MixedCase').replace('mixedcase', 'MiXeDcAsE');
    const { token, invitation } = await invite(owner, url, 'viewer', email);
    expect(invitation.email).toBe(email.toLowerCase());
    const invitee = await signUp(app, { email: email.toLowerCase() });
    expect((await invitee.post('/api/invitations/accept', { token })).status).toBe(200);
  });

  it('a new invitation for the same address replaces the open one', async () => {
    const { owner, url } = await createWorkspace();
    const email = testEmail('twice');
    const first = await invite(owner, url, 'member', email);
    const second = await invite(owner, url, 'viewer', email);
    const list = await owner.get<{ data: Inv[] }>(`${url}/invitations`);
    expect(Object.fromEntries(list.body.data.map((i) => [i.id, i.status]))).toEqual({
      [first.invitation.id]: 'revoked',
      [second.invitation.id]: 'pending',
    });
    const user = await signUp(app, { email });
    expect((await user.post('/api/invitations/accept', { token: first.token })).body).toMatchObject({
      code: 'invalid_token',
    });
    expect((await user.post('/api/invitations/accept', { token: second.token })).status).toBe(200);
  });

  it('declines an invitation, signed in or not', async () => {
    const { owner, url } = await createWorkspace();
    const a = await invite(owner, url);
    const b = await invite(owner, url);
    expect((await new TestClient(app).post('/api/invitations/decline', { token: a.token })).status).toBe(204);
    const invitee = await signUp(app, { email: b.email });
    expect((await invitee.post('/api/invitations/decline', { token: b.token })).status).toBe(204);
    const list = await owner.get<{ data: Inv[] }>(`${url}/invitations`);
    expect(list.body.data.map((i) => i.status)).toEqual(['declined', 'declined']);
    expect((await invitee.get(url)).status).toBe(404);
  });

  it('revokes an invitation', async () => {
    const { owner, url } = await createWorkspace();
    const { invitation } = await invite(owner, url);
    expect((await owner.delete(`${url}/invitations/${invitation.id}`)).status).toBe(204);
    expect((await owner.delete(`${url}/invitations/${invitation.id}`)).status).toBe(204);
    const list = await owner.get<{ data: Inv[] }>(`${url}/invitations`);
    expect(list.body.data.map((i) => i.status)).toEqual(['revoked']);
  });

  it('changes roles; removed members lose access at once; members can leave', async () => {
    const { owner, url } = await createWorkspace();
    const a = await join(owner, url, 'member');
    const b = await join(owner, url, 'viewer');
    const changed = await owner.patch<{ role: string }>(`${url}/members/${a.userId}`, { role: 'admin' });
    expect(changed.status).toBe(200);
    expect(changed.body.role).toBe('admin');
    expect(await roleOf(url, owner, a.userId)).toBe('admin');
    expect((await a.delete(`${url}/members/${b.userId}`)).status).toBe(204);
    expect((await b.get(url)).status).toBe(404);
    expect((await a.post(`${url}/leave`)).status).toBe(204);
    expect((await a.get(url)).status).toBe(404);
    expect((await a.get<{ data: Ws[] }>('/api/workspaces')).body.data).toEqual([]);
  });

  it('transfers ownership to a member; the old owner becomes an admin', async () => {
    const { owner, url } = await createWorkspace();
    const next = await join(owner, url, 'member');
    expect((await owner.post(`${url}/transfer-ownership`, { userId: next.userId })).status).toBe(204);
    expect(await roleOf(url, owner, next.userId)).toBe('owner');
    expect(await roleOf(url, owner, owner.userId)).toBe('admin');
    expect((await owner.post(`${url}/transfer-ownership`, { userId: next.userId })).body).toMatchObject({
      code: 'forbidden',
    });
  });

  it('deletes a workspace confirmed by its exact name: rows gone, data key shredded', async () => {
    const { owner, ws, url } = await createWorkspace('Doomed');
    const member = await join(owner, url, 'member');
    await invite(owner, url);
    const vault = app.modules.vault.service;
    const ctx = { owner: { type: 'workspace' as const, id: ws }, record: 'test', field: 'secret' };
    const sealed = await vault.encrypt(ctx, 'workspace secret');
    expect((await owner.delete(url, { confirmName: 'Doomed' })).status).toBe(204);
    expect((await owner.get(url)).status).toBe(404);
    expect((await member.get(url)).status).toBe(404);
    const left = await app.db.system((tx) =>
      rowsOf<{ n: number }>(
        tx.execute(sql`select (select count(*) from workspaces where id = ${ws})
              + (select count(*) from memberships where workspace_id = ${ws})
              + (select count(*) from invitations where workspace_id = ${ws}) as n`),
      ),
    );
    expect(Number(left[0]?.n)).toBe(0);
    await expect(vault.decrypt(ctx, sealed)).rejects.toMatchObject({ code: 'not_found' });
  });

  it('runs event handlers inside the changing transaction (a failing handler undoes the change)', async () => {
    const { owner, url } = await createWorkspace();
    const member = await join(owner, url, 'member');
    const seen: string[] = [];
    let fail = true;
    app.modules.workspaces.service.onEvent(async (event) => {
      if (event.type !== 'member.removed' || event.userId !== member.userId) return;
      seen.push(`${event.type}:${event.reason}`);
      if (fail) throw new Error('downstream failed');
    });
    expect((await owner.delete(`${url}/members/${member.userId}`)).status).toBe(500);
    expect(await roleOf(url, owner, member.userId)).toBe('member');
    fail = false;
    expect((await owner.delete(`${url}/members/${member.userId}`)).status).toBe(204);
    expect(seen).toEqual(['member.removed:removed', 'member.removed:removed']);
  });

  it('retention: closed invitations (expired, answered, revoked) are purged, open ones stay', async () => {
    const { owner, url } = await createWorkspace();
    await join(owner, url, 'member');
    const revoked = await invite(owner, url);
    await owner.delete(`${url}/invitations/${revoked.invitation.id}`);
    const open = await invite(owner, url);
    const service = app.modules.workspaces.service;
    expect(await service.purgeClosedInvitations()).toBeGreaterThanOrEqual(2);
    const list = await owner.get<{ data: Inv[] }>(`${url}/invitations`);
    expect(list.body.data.map((i) => i.id)).toEqual([open.invitation.id]);
    app.clock.advance(8 * DAY);
    expect(await service.purgeClosedInvitations()).toBeGreaterThanOrEqual(1);
    const after = await app.db.system((tx) =>
      rowsOf<{ id: string }>(tx.execute(sql`select id from invitations where id = ${open.invitation.id}`)),
    );
    expect(after).toEqual([]);
  });

  it('publishes the routes in the OpenAPI document', async () => {
    const doc = (await new TestClient(app).get<{ paths: Record<string, unknown> }>('/openapi.json')).body;
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        '/api/workspaces',
        '/api/workspaces/{workspaceId}',
        '/api/workspaces/{workspaceId}/members/{userId}',
        '/api/workspaces/{workspaceId}/invitations/{invitationId}',
        '/api/invitations/accept',
      ]),
    );
  });
});

describe('errors', () => {
  it('refuses unknown fields, over-long names and wrong types, changing nothing', async () => {
    const { owner, url } = await createWorkspace('Stable');
    for (const body of [{ name: 'x', extra: true }, { name: 'x'.repeat(101) }, { name: '   ' }, { name: 42 }, {}]) {
      const res = await owner.patch(url, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body).toMatchObject({ code: 'validation_failed' });
    }
    expect((await owner.get<Ws>(url)).body.name).toBe('Stable');
    expect((await owner.post('/api/workspaces', { name: 'y'.repeat(101) })).status).toBe(400);
    expect((await owner.post(`${url}/invitations`, { email: 'not-an-email', role: 'member' })).status).toBe(400);
    expect((await owner.post(`${url}/invitations`, { email: testEmail(), role: 'owner' })).status).toBe(400);
    expect((await owner.patch(`${url}/members/${owner.userId}`, { role: 'king' })).status).toBe(400);
    expect((await owner.put(`${url}/security`, { requireMfa: 'yes' })).status).toBe(400);
    expect((await owner.get<{ data: Ws[] }>('/api/workspaces')).body.data).toHaveLength(1);
    expect((await owner.get<{ data: Inv[] }>(`${url}/invitations`)).body.data).toEqual([]);
  });

  it('deletes only with the exact name', async () => {
    const { owner, url } = await createWorkspace('Exact Name');
    for (const confirmName of ['exact name', 'Exact Name ', 'Exact']) {
      const res = await owner.delete(url, { confirmName });
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({ code: 'confirmation_mismatch' });
    }
    expect((await owner.delete(url, {})).body).toMatchObject({ code: 'validation_failed' });
    expect((await owner.get(url)).status).toBe(200);
  });

  it('always keeps one owner: the last owner cannot leave, be removed or be demoted', async () => {
    const { owner, url } = await createWorkspace();
    const admin = await join(owner, url, 'admin');
    for (const res of [
      await owner.post(`${url}/leave`),
      await owner.delete(`${url}/members/${owner.userId}`),
      await owner.patch(`${url}/members/${owner.userId}`, { role: 'admin' }),
    ]) {
      expect(res.status).toBe(403);
      expect(res.body).toMatchObject({ code: 'last_owner' });
    }
    expect(await roleOf(url, owner, owner.userId)).toBe('owner');
    // With a second owner, the first may step down.
    expect((await owner.patch(`${url}/members/${admin.userId}`, { role: 'owner' })).status).toBe(200);
    expect((await owner.patch(`${url}/members/${owner.userId}`, { role: 'member' })).status).toBe(200);
    expect(await roleOf(url, admin, owner.userId)).toBe('member');
  });

  it('two owners demoting each other at once leave exactly one owner', async () => {
    const { owner, url } = await createWorkspace();
    const second = await join(owner, url, 'admin');
    expect((await owner.patch(`${url}/members/${second.userId}`, { role: 'owner' })).status).toBe(200);
    const [a, b] = await Promise.all([
      owner.patch(`${url}/members/${second.userId}`, { role: 'admin' }),
      second.patch(`${url}/members/${owner.userId}`, { role: 'admin' }),
    ]);
    expect([a?.status, b?.status].sort()).toEqual([200, 403]);
    const members = await owner.get<Members>(`${url}/members`);
    expect(members.body.data.filter((m) => m.role === 'owner')).toHaveLength(1);
  });

  it('admins cannot touch owners or make owners', async () => {
    const { owner, url } = await createWorkspace();
    const admin = await join(owner, url, 'admin');
    const member = await join(owner, url, 'member');
    for (const res of [
      await admin.patch(`${url}/members/${owner.userId}`, { role: 'member' }),
      await admin.delete(`${url}/members/${owner.userId}`),
      await admin.patch(`${url}/members/${member.userId}`, { role: 'owner' }),
      await admin.patch(`${url}/members/${admin.userId}`, { role: 'owner' }),
      await admin.post(`${url}/transfer-ownership`, { userId: member.userId }),
    ]) {
      expect(res.status).toBe(403);
      expect(res.body).toMatchObject({ code: 'forbidden' });
    }
    expect(await roleOf(url, owner, owner.userId)).toBe('owner');
    expect(await roleOf(url, owner, member.userId)).toBe('member');
  });

  it('answers 404 for members and invitations that do not exist, and 400 for self-transfer', async () => {
    const { owner, url } = await createWorkspace();
    const stranger = await signUp(app);
    expect((await owner.patch(`${url}/members/${stranger.userId}`, { role: 'viewer' })).status).toBe(404);
    expect((await owner.delete(`${url}/members/${stranger.userId}`)).status).toBe(404);
    expect((await owner.post(`${url}/transfer-ownership`, { userId: stranger.userId })).status).toBe(404);
    expect((await owner.delete(`${url}/invitations/${newId('inv')}`)).status).toBe(404);
    expect((await owner.post(`${url}/transfer-ownership`, { userId: owner.userId })).body).toMatchObject({
      code: 'bad_request',
    });
  });

  it('refuses expired, reused, revoked, unknown and wrongly addressed invitations', async () => {
    const { owner, url } = await createWorkspace();
    const unknown = await signUp(app);
    expect((await unknown.post('/api/invitations/accept', { token: 'x'.repeat(43) })).body).toMatchObject({
      code: 'invalid_token',
    });

    // Wrong email: refused, and the invitation stays usable by the right person.
    const wrong = await invite(owner, url);
    const res = await unknown.post('/api/invitations/accept', { token: wrong.token });
    expect(res.status).toBe(403);
    expect(res.body).toMatchObject({ code: 'forbidden' });
    expect(res.text).not.toContain(wrong.email);
    const right = await signUp(app, { email: wrong.email });
    expect((await right.post('/api/invitations/accept', { token: wrong.token })).status).toBe(200);

    // Single use.
    const reused = await right.post('/api/invitations/accept', { token: wrong.token });
    expect(reused.status).toBe(400);
    expect(reused.body).toMatchObject({ code: 'token_used' });
    expect((await right.post('/api/invitations/decline', { token: wrong.token })).body).toMatchObject({
      code: 'token_used',
    });

    // Revoked.
    const revoked = await invite(owner, url);
    expect((await owner.delete(`${url}/invitations/${revoked.invitation.id}`)).status).toBe(204);
    const rUser = await signUp(app, { email: revoked.email });
    expect((await rUser.post('/api/invitations/accept', { token: revoked.token })).body).toMatchObject({
      code: 'invalid_token',
    });
    // An answered invitation cannot be revoked.
    expect((await owner.delete(`${url}/invitations/${wrong.invitation.id}`)).body).toMatchObject({ code: 'conflict' });

    // Expired (BERTH_INVITATION_TTL_DAYS = 7 by default).
    const late = await invite(owner, url);
    app.clock.advance(7 * DAY + 1);
    const lUser = await signUp(app, { email: late.email });
    const expired = await lUser.post('/api/invitations/accept', { token: late.token });
    expect(expired.status).toBe(400);
    expect(expired.body).toMatchObject({ code: 'token_expired' });
    expect((await lUser.get(url)).status).toBe(404);
  });

  it('refuses to invite someone who is already a member', async () => {
    const { owner, url } = await createWorkspace();
    const member = await join(owner, url, 'member');
    const res = await owner.post(`${url}/invitations`, { email: member.email.toUpperCase(), role: 'viewer' });
    expect(res.status).toBe(409);
    expect(res.body).toMatchObject({ code: 'already_member' });
  });

  it('accepting while already a member answers already_member and leaves the invitation open', async () => {
    const { owner, ws, url } = await createWorkspace();
    const { email, token, invitation } = await invite(owner, url, 'viewer');
    const user = await signUp(app, { email });
    // The user became a member another way meanwhile (here: directly, as a concurrent accept would).
    await app.db.tenant(ws, (tx) =>
      tx.execute(sql`insert into memberships (workspace_id, user_id, role, created_at, updated_at)
                     values (${ws}, ${user.userId}, 'member', now(), now())`),
    );
    const res = await user.post('/api/invitations/accept', { token });
    expect(res.status).toBe(409);
    expect(res.body).toMatchObject({ code: 'already_member' });
    const list = await owner.get<{ data: Inv[] }>(`${url}/invitations`);
    expect(list.body.data.find((i) => i.id === invitation.id)?.status).toBe('pending');
    expect(await roleOf(url, owner, user.userId)).toBe('member');
  });

  it('odd input answers 4xx with a stable code, never a database error', async () => {
    const { owner, url } = await createWorkspace('Odd');
    const answers = [
      await owner.patch(url, { name: 'bad\u0000name' }),
      await owner.post('/api/workspaces', { name: 'tab\tname' }),
      await owner.patch(`${url}/members/usr_%00`, { role: 'viewer' }),
      await owner.delete(`${url}/members/%00`),
      await owner.delete(`${url}/invitations/inv_%00`),
      await owner.post(`${url}/transfer-ownership`, { userId: 'usr_\u0000' }),
      await owner.get(`/api/workspaces/ws_%00`),
      await owner.post('/api/invitations/accept', { token: '\u0000' }),
      await new TestClient(app).post('/api/invitations/decline', { token: '\u0000'.repeat(10) }),
    ];
    for (const res of answers) {
      expect(res.status, res.text).toBeGreaterThanOrEqual(400);
      expect(res.status, res.text).toBeLessThan(500);
      expect(res.body).toMatchObject({ code: expect.any(String) });
    }
    expect((await owner.get<Ws>(url)).body.name).toBe('Odd');
  });

  it('in-process callers get the same stable codes as HTTP callers', async () => {
    const { owner, ws } = await createWorkspace('Service');
    const service = app.modules.workspaces.service;
    const scope = { workspaceId: ws, actor: { type: 'user' as const, userId: owner.userId }, role: 'owner' as const };
    await expect(service.renameWorkspace({ scope, name: ' '.repeat(3) })).rejects.toMatchObject({
      code: 'validation_failed',
    });
    await expect(service.renameWorkspace({ scope, name: 'x'.repeat(101) })).rejects.toMatchObject({
      code: 'validation_failed',
    });
    await expect(service.renameWorkspace({ scope, name: 'nul\u0000' })).rejects.toMatchObject({
      code: 'validation_failed',
    });
    await expect(service.createWorkspace({ ownerUserId: newId('usr'), name: 'Ghost' })).rejects.toMatchObject({
      code: 'not_found',
    });
    await expect(service.invite({ scope, email: 'not an address', role: 'member' })).rejects.toMatchObject({
      code: 'validation_failed',
    });
    const system = { ...scope, actor: { type: 'system' as const, name: 'test' } };
    await expect(service.leave({ scope: system })).rejects.toMatchObject({ code: 'bad_request' });
  });

  it('needs a session to create, list or accept', async () => {
    const anon = new TestClient(app);
    expect((await anon.post('/api/workspaces', { name: 'x' })).body).toMatchObject({ code: 'unauthenticated' });
    expect((await anon.get('/api/workspaces')).body).toMatchObject({ code: 'unauthenticated' });
    expect((await anon.post('/api/invitations/accept', { token: 'abc' })).body).toMatchObject({
      code: 'unauthenticated',
    });
  });
});

describe('security', () => {
  it('ids from another workspace answer 404, exactly like ids that do not exist', async () => {
    const a = await createWorkspace('A');
    const b = await createWorkspace('B');
    const bMember = await join(b.owner, b.url, 'member');
    const bInvite = await invite(b.owner, b.url);
    // A's owner, in A's URL space, naming B's rows.
    expect((await a.owner.patch(`${a.url}/members/${bMember.userId}`, { role: 'viewer' })).status).toBe(404);
    expect((await a.owner.delete(`${a.url}/members/${bMember.userId}`)).status).toBe(404);
    expect((await a.owner.delete(`${a.url}/invitations/${bInvite.invitation.id}`)).status).toBe(404);
    expect((await a.owner.post(`${a.url}/transfer-ownership`, { userId: b.owner.userId })).status).toBe(404);
    // A's owner on B's URLs: same answer as a workspace that does not exist.
    const foreign = await a.owner.get(b.url);
    const missing = await a.owner.get(`/api/workspaces/${newId('ws')}`);
    expect(foreign.status).toBe(404);
    expect(missing.status).toBe(404);
    expect(foreign.body).toMatchObject({ code: 'not_found', detail: (missing.body as { detail: string }).detail });
    expect((await a.owner.delete(b.url, { confirmName: 'B' })).status).toBe(404);
    // Nothing of B changed.
    expect(await roleOf(b.url, b.owner, bMember.userId)).toBe('member');
    const invs = await b.owner.get<{ data: Inv[] }>(`${b.url}/invitations`);
    expect(invs.body.data.map((i) => i.status).sort()).toEqual(['accepted', 'pending']);
  });

  it('stores invitation tokens only as SHA-256 and never logs or returns them', async () => {
    const { owner, ws, url } = await createWorkspace();
    const res = await owner.post<Inv>(`${url}/invitations`, { email: testEmail(), role: 'member' });
    const token = await invitationToken(res.body.email, res.body.id);
    expect(res.text).not.toContain(token);
    expect((await owner.get(`${url}/invitations`)).text).not.toContain(token);
    const rows = await app.db.tenant(ws, (tx) =>
      rowsOf<Record<string, unknown>>(tx.execute(sql`select * from invitations where workspace_id = ${ws}`)),
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]?.token_hash).toBe(sha256Hex(token));
    expect(JSON.stringify(rows)).not.toContain(token);
    expect(app.logs.join('\n')).not.toContain(token);
  });

  it('when a workspace requires 2FA, members without it can read and leave but not act', async () => {
    const { owner, url } = await createWorkspace();
    const admin = await join(owner, url, 'admin');
    const member = await join(owner, url, 'member');

    // Turning it on takes an owner who has 2FA.
    const early = await owner.put(`${url}/security`, { requireMfa: true });
    expect(early.status).toBe(403);
    expect(early.body).toMatchObject({ code: 'mfa_required' });
    await enableMfa(owner);
    const on = await owner.put<Ws>(`${url}/security`, { requireMfa: true });
    expect(on.status).toBe(200);
    expect(on.body.requireMfa).toBe(true);

    // Admin without 2FA: reading works, admin actions are refused with mfa_required.
    expect((await admin.get(url)).status).toBe(200);
    expect((await admin.get(`${url}/members`)).status).toBe(200);
    for (const res of [
      await admin.patch(url, { name: 'Nope' }),
      await admin.post(`${url}/invitations`, { email: testEmail(), role: 'viewer' }),
      await admin.get(`${url}/invitations`),
      await admin.patch(`${url}/members/${member.userId}`, { role: 'viewer' }),
      await admin.delete(`${url}/members/${member.userId}`),
    ]) {
      expect(res.status).toBe(403);
      expect(res.body).toMatchObject({ code: 'mfa_required' });
    }
    // Role checks still come first: a member gets forbidden, not mfa_required.
    expect((await member.patch(url, { name: 'Nope' })).body).toMatchObject({ code: 'forbidden' });
    expect(await roleOf(url, owner, member.userId)).toBe('member');
    expect((await owner.get<Ws>(url)).body.name).toBe('Acme');

    // After turning 2FA on, the admin may act again.
    await enableMfa(admin);
    expect((await admin.patch(url, { name: 'Renamed' })).status).toBe(200);

    // Leaving stays possible without 2FA.
    expect((await member.post(`${url}/leave`)).status).toBe(204);

    // Turning the requirement off is an owner action like any other.
    expect((await owner.put<Ws>(`${url}/security`, { requireMfa: false })).body.requireMfa).toBe(false);
  });

  it("the 2FA rule for requiring 2FA is the service's: no caller can skip it", async () => {
    const { owner, ws } = await createWorkspace();
    const service = app.modules.workspaces.service;
    const asUser = { workspaceId: ws, actor: { type: 'user' as const, userId: owner.userId }, role: 'owner' as const };
    const asKey = { ...asUser, actor: { type: 'api_key' as const, keyId: newId('key'), userId: owner.userId } };
    const asSystem = { ...asUser, actor: { type: 'system' as const, name: 'test' } };
    for (const scope of [asUser, asKey, asSystem]) {
      await expect(service.setRequireMfa({ scope, requireMfa: true })).rejects.toMatchObject({ code: 'mfa_required' });
    }
    // The owner's account turns 2FA on: the owner's session may now require it. Their API key
    // still may not: owner actions stay with owners' sessions (a key acts at most as an admin).
    await enableMfa(owner);
    await expect(service.setRequireMfa({ scope: asKey, requireMfa: true })).rejects.toMatchObject({
      code: 'forbidden',
    });
    expect((await service.setRequireMfa({ scope: asUser, requireMfa: true })).requireMfa).toBe(true);
    expect((await service.setRequireMfa({ scope: asUser, requireMfa: false })).requireMfa).toBe(false);
    await expect(service.setRequireMfa({ scope: asSystem, requireMfa: true })).rejects.toMatchObject({
      code: 'mfa_required',
    });
  });

  it('a removed member cannot reuse their old invitation to come back', async () => {
    const { owner, url } = await createWorkspace();
    const { email, token } = await invite(owner, url);
    const user = await signUp(app, { email });
    expect((await user.post('/api/invitations/accept', { token })).status).toBe(200);
    expect((await owner.delete(`${url}/members/${user.userId}`)).status).toBe(204);
    expect((await user.post('/api/invitations/accept', { token })).body).toMatchObject({ code: 'token_used' });
    expect((await user.get(url)).status).toBe(404);
  });
});
