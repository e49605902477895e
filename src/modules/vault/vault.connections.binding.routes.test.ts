import { type SQL, sql } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOAuthServer, startFakeOAuthServer } from '../../../test/fakes/oauth-server.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import {
  rowCount as countRows,
  addMember as joinWorkspace,
  userinfo as providerUserinfo,
} from '../../../test/helpers/connections.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { DAY, MINUTE } from '../../platform/clock.ts';
import { DELETION_GRACE_DAYS } from '../privacy/privacy.erasure.service.ts';
import type { ConnectionView } from './vault.connections.schemas.ts';

/**
 * OAuth connections, who may finish a flow and how long a connection outlives its owner's
 * place: the callback is bound to the browser (cookie) and user that started the flow;
 * connections have names agent definitions use; a removed member's, a deleted workspace's
 * and an erased user's connections are revoked at the provider and deleted. Against a real
 * authorization server (oidc-provider).
 */

const REDIRECT = 'http://berth.test/api/oauth/callback';

let app: TestApp;
let oauth: FakeOAuthServer;
let owner: SignedInClient;
let member: SignedInClient;
let wsId: string;
let startedAt: Date;

const base = (ws = wsId) => `/api/workspaces/${ws}`;
const svc = () => app.modules.connections.service;

const rowCount = (table: string, where?: SQL) => countRows(app, table, where);

const addMember = (ws: string, by: SignedInClient, client: SignedInClient, role: 'admin' | 'member') =>
  joinWorkspace(app, ws, by.userId, client, role);

async function addProvider(ws: string, by: SignedInClient): Promise<void> {
  const res = await by.post(`${base(ws)}/oauth-providers`, {
    name: 'acme',
    authorizationUrl: oauth.authorizationUrl,
    tokenUrl: oauth.tokenUrl,
    revocationUrl: oauth.revocationUrl,
    clientId: oauth.clientId,
    clientSecret: oauth.clientSecret,
    scopes: ['openid', 'offline_access', 'email'],
  });
  expect(res.status, res.text).toBe(201);
}

/** Starts a flow as `client` and consents at the provider: the callback URL, not yet opened. */
async function begin(client: TestClient, body: Record<string, unknown> = {}, ws = wsId) {
  const start = await client.post<{ authorizationUrl: string; boundTo: string; name: string }>(
    `${base(ws)}/connections/acme/authorize`,
    body,
  );
  expect(start.status, start.text).toBe(200);
  const callback = await oauth.authorize(start.body.authorizationUrl);
  return { start, path: `${callback.pathname}${callback.search}`, state: callback.searchParams.get('state') ?? '' };
}

async function connect(client: SignedInClient, name: string, ws = wsId): Promise<ConnectionView> {
  const { path } = await begin(client, { name }, ws);
  const res = await client.get<ConnectionView>(path);
  expect(res.status, res.text).toBe(200);
  return res.body;
}

const userinfo = (accessToken: string) => providerUserinfo(oauth, accessToken);

beforeAll(async () => {
  oauth = await startFakeOAuthServer({ redirectUri: REDIRECT });
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1' } });
  startedAt = app.clock.now();
  owner = await signUp(app);
  member = await signUp(app);
  const ws = await owner.post<{ id: string }>('/api/workspaces', { name: 'Binding' });
  wsId = ws.body.id;
  await addMember(wsId, owner, member, 'member');
  await addProvider(wsId, owner);
});

afterEach(() => {
  app.clock.set(startedAt);
});

afterAll(async () => {
  await app?.close();
  await oauth?.close();
});

describe('security', () => {
  it('refuses a callback from another browser (no cookie, a wrong one) or another user, storing nothing', async () => {
    const { start, path, state } = await begin(member, { name: 'bound' });
    expect(start.body.boundTo).toBe('browser');
    const cookieName = svc().flowCookieFor(state);
    const setCookie = String(start.headers['set-cookie']);
    expect(setCookie).toContain(`${cookieName}=`);
    expect(setCookie).toMatch(/HttpOnly/i);
    expect(setCookie).toMatch(/SameSite=Lax/i);
    expect(setCookie).toContain('Path=/api/oauth/callback');
    // Only the nonce's hash is kept.
    const nonce = member.cookies.get(cookieName) ?? '';
    expect(nonce).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(await rowCount('oauth_authorizations', sql`browser_nonce_hash = ${nonce}`)).toBe(0);

    const before = await rowCount('oauth_connections');
    const exchanges = oauth.counts.codeExchanges;
    // A colleague's browser (signed in, no cookie): the link an attacker sent them.
    const colleague = await owner.get(path);
    expect(colleague.status).toBe(403);
    expect(colleague.body).toMatchObject({ code: 'oauth_browser_mismatch' });
    // A browser nobody is signed in to, without the cookie or with a forged one.
    const stranger = new TestClient(app);
    expect((await stranger.get(path)).body).toMatchObject({ code: 'oauth_browser_mismatch' });
    stranger.cookies.set(cookieName, 'A'.repeat(43));
    expect((await stranger.get(path)).body).toMatchObject({ code: 'oauth_browser_mismatch' });
    // The right cookie, but signed in as someone else.
    const other = await signUp(app);
    other.cookies.set(cookieName, nonce);
    const wrongUser = await other.get(path);
    expect(wrongUser.status).toBe(403);
    expect(wrongUser.body).toMatchObject({ code: 'oauth_user_mismatch' });
    expect(await rowCount('oauth_connections')).toBe(before);
    expect(oauth.counts.codeExchanges).toBe(exchanges);

    // The starter's browser still finishes the flow, and the cookie is cleared.
    const done = await member.get<ConnectionView>(path);
    expect(done.status, done.text).toBe(200);
    expect(done.body).toMatchObject({ userId: member.userId, name: 'bound' });
    expect(member.cookies.has(cookieName)).toBe(false);
  });

  it('a flow started with an API key is finished only by its starter, signed in', async () => {
    const key = await member.post<{ secret: string }>(`${base()}/keys`, { name: 'agent', scopes: ['agents:run'] });
    expect(key.status, key.text).toBe(201);
    const api = new TestClient(app, { origin: null });
    api.headers.authorization = `Bearer ${key.body.secret}`;
    const { start, path } = await begin(api, { name: 'by-key' });
    expect(start.body.boundTo).toBe('user');
    expect(start.headers['set-cookie']).toBeUndefined();
    const before = await rowCount('oauth_connections');
    expect((await new TestClient(app).get(path)).body).toMatchObject({ code: 'oauth_browser_mismatch' });
    expect((await owner.get(path)).body).toMatchObject({ code: 'oauth_user_mismatch' });
    expect(await rowCount('oauth_connections')).toBe(before);
    const done = await member.get<ConnectionView>(path);
    expect(done.status, done.text).toBe(200);
    expect(done.body.userId).toBe(member.userId);
  });

  it("revokes and deletes a removed member's connections, shared ones too, and their flows in progress", async () => {
    const admin = await signUp(app);
    await addMember(wsId, owner, admin, 'admin');
    const own = await connect(admin, 'leaver-own');
    const shared = await connect(admin, 'leaver-shared');
    expect((await admin.patch(`${base()}/connections/${shared.id}`, { shared: true })).status).toBe(200);
    const token = await svc().accessToken(shared.id, { workspaceId: wsId, userId: member.userId });
    const pending = await begin(admin, { name: 'leaver-later' });
    const revocations = oauth.counts.revocations;

    await app.modules.workspaces.service.removeMember({
      scope: { workspaceId: wsId, actor: { type: 'user', userId: owner.userId }, role: 'owner' },
      userId: admin.userId,
    });
    expect(oauth.counts.revocations).toBe(revocations + 2);
    expect(await rowCount('oauth_connections', sql`user_id = ${admin.userId}`)).toBe(0);
    expect(await rowCount('oauth_connection_tokens', sql`user_id = ${admin.userId}`)).toBe(0);
    expect(await userinfo(token.accessToken)).toBe(401);
    for (const id of [own.id, shared.id]) {
      await expect(svc().accessToken(id, { workspaceId: wsId, userId: member.userId })).rejects.toMatchObject({
        code: 'not_found',
      });
      expect(await rowCount('audit_events', sql`action = 'connection.deleted' and target_id = ${id}`)).toBe(1);
    }
    // A flow started before the removal cannot be finished after it.
    const late = await admin.get(pending.path);
    expect(late.body).toMatchObject({ code: 'oauth_state_invalid' });
    expect(await rowCount('oauth_connections', sql`user_id = ${admin.userId}`)).toBe(0);
  });

  it('revokes a deleted workspace’s connections at the provider before its tokens go', async () => {
    const ws = await owner.post<{ id: string; name: string }>('/api/workspaces', { name: 'Doomed' });
    await addProvider(ws.body.id, owner);
    const c = await connect(owner, 'doomed', ws.body.id);
    const token = await svc().accessToken(c.id, { workspaceId: ws.body.id, userId: owner.userId });
    const revocations = oauth.counts.revocations;
    await app.modules.workspaces.service.deleteWorkspace({
      scope: { workspaceId: ws.body.id, actor: { type: 'user', userId: owner.userId }, role: 'owner' },
      confirmName: 'Doomed',
    });
    expect(oauth.counts.revocations).toBe(revocations + 1);
    expect(await userinfo(token.accessToken)).toBe(401);
    expect(await rowCount('oauth_connection_tokens', sql`connection_id = ${c.id}`)).toBe(0);
  });

  it('revokes an erased user’s connections at the provider before erasure deletes them', async () => {
    const leaving = await signUp(app);
    await addMember(wsId, owner, leaving, 'member');
    const c = await connect(leaving, 'erased');
    const token = await svc().accessToken(c.id, { workspaceId: wsId, userId: leaving.userId });
    const asked = await leaving.post('/api/me/deletion', { password: leaving.password });
    expect(asked.status, asked.text).toBe(202);
    const revocations = oauth.counts.revocations;
    app.clock.advance(DELETION_GRACE_DAYS * DAY + MINUTE);
    await app.modules.privacy.service.erasure.runDue();
    expect(oauth.counts.revocations).toBe(revocations + 1);
    expect(await userinfo(token.accessToken)).toBe(401);
    expect(await rowCount('oauth_connections', sql`id = ${c.id}`)).toBe(0);
  });
});

describe('happy', () => {
  it('names connections: one name per member, the own connection before the shared one', async () => {
    const admin = await signUp(app);
    await addMember(wsId, owner, admin, 'admin');
    const adminMail = await connect(admin, 'mail');
    expect((await admin.patch(`${base()}/connections/${adminMail.id}`, { shared: true })).status).toBe(200);
    // The member has no "mail" of their own: the shared one.
    expect(await svc().connectionFor(wsId, member.userId, 'mail')).toMatchObject({
      connectionId: adminMail.id,
      ownerId: admin.userId,
      shared: true,
    });
    const mine = await connect(member, 'mail');
    expect((await svc().connectionFor(wsId, member.userId, 'mail'))?.connectionId).toBe(mine.id);
    expect(await svc().connectionFor(wsId, member.userId, 'nothing-here')).toBeNull();
    // Taken names are refused before the provider is involved.
    const again = await member.post(`${base()}/connections/acme/authorize`, { name: 'mail' });
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({ code: 'conflict' });
    // Two shared connections with one name could not be told apart.
    const ownerMail = await connect(owner, 'mail');
    const clash = await owner.patch(`${base()}/connections/${ownerMail.id}`, { shared: true });
    expect(clash.status).toBe(409);
    const listed = await member.get<{ data: ConnectionView[] }>(`${base()}/connections`);
    expect(listed.body.data.find((c) => c.id === mine.id)?.name).toBe('mail');
    // Unnamed, a connection takes the provider's name, else the next free numbered one.
    const names: string[] = [];
    for (let i = 0; i < 2; i++) {
      const { start, path } = await begin(owner);
      const done = await owner.get<ConnectionView>(path);
      expect(done.status, done.text).toBe(200);
      expect(done.body.name).toBe(start.body.name);
      names.push(done.body.name);
    }
    expect(names).toEqual(['acme', 'acme-2']);
  });
});
