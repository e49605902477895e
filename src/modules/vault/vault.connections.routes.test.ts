import { type SQL, sql } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOAuthServer, startFakeOAuthServer } from '../../../test/fakes/oauth-server.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import {
  rowCount as countRows,
  addMember as joinWorkspace,
  userinfo as providerUserinfo,
} from '../../../test/helpers/connections.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import type { ConnectionView, OAuthProviderView } from './vault.connections.schemas.ts';

/**
 * OAuth connections against a real authorization server (oidc-provider, started here): the
 * authorization code flow with PKCE, refresh, revocation on disconnect, and every way the
 * callback can fail, storing nothing.
 */

const REDIRECT = 'http://berth.test/api/oauth/callback';

let app: TestApp;
let oauth: FakeOAuthServer;
let owner: SignedInClient;
let member: SignedInClient;
let wsId: string;
let provider: OAuthProviderView;
/** Tests that move the clock put it back afterwards (sessions would expire). */
let startedAt: Date;

const base = () => `/api/workspaces/${wsId}`;

const rowCount = (table: string, where?: SQL) => countRows(app, table, where);

const addMember = (client: SignedInClient, role: 'admin' | 'member' | 'viewer') =>
  joinWorkspace(app, wsId, owner.userId, client, role);

/** A fresh connection name: each test's connections are told apart by name (unique per member). */
let seq = 0;
const nextName = () => `acme-${++seq}`;

/** Runs the whole flow for `client`: authorize, consent at the provider, callback. */
async function connect(
  client: SignedInClient,
  opts: { redirectTo?: string; deny?: boolean; name?: string } = {},
): Promise<{ callback: URL; res: Awaited<ReturnType<SignedInClient['get']>> }> {
  const start = await client.post<{ authorizationUrl: string }>(`${base()}/connections/${provider.name}/authorize`, {
    name: opts.name ?? nextName(),
    ...(opts.redirectTo ? { redirectTo: opts.redirectTo } : {}),
  });
  expect(start.status, start.text).toBe(200);
  const callback = await oauth.authorize(start.body.authorizationUrl, { deny: opts.deny ?? false });
  const res = await client.get(`${callback.pathname}${callback.search}`);
  return { callback, res };
}

const userinfo = (accessToken: string) => providerUserinfo(oauth, accessToken);

beforeAll(async () => {
  oauth = await startFakeOAuthServer({ redirectUri: REDIRECT });
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1' } });
  startedAt = app.clock.now();
  owner = await signUp(app);
  member = await signUp(app);
  const ws = await owner.post<{ id: string }>('/api/workspaces', { name: 'Connections' });
  wsId = ws.body.id;
  await addMember(member, 'member');
  const res = await owner.post<OAuthProviderView>(`${base()}/oauth-providers`, {
    name: 'acme',
    authorizationUrl: oauth.authorizationUrl,
    tokenUrl: oauth.tokenUrl,
    revocationUrl: oauth.revocationUrl,
    clientId: oauth.clientId,
    clientSecret: oauth.clientSecret,
    scopes: ['openid', 'offline_access', 'email'],
    authorizeParams: { prompt: 'consent' },
  });
  expect(res.status, res.text).toBe(201);
  provider = res.body;
});

afterEach(() => {
  app.clock.set(startedAt);
});

afterAll(async () => {
  await app?.close();
  await oauth?.close();
});

describe('happy', () => {
  it('configures a provider without ever returning or storing its client secret in clear', async () => {
    expect(provider).toMatchObject({ name: 'acme', hasClientSecret: true, tokenAuthMethod: 'client_secret_basic' });
    expect(JSON.stringify(provider)).not.toContain(oauth.clientSecret);
    const list = await member.get<{ data: OAuthProviderView[] }>(`${base()}/oauth-providers`);
    expect(list.body.data.map((p) => p.name)).toEqual(['acme']);
    expect(list.text).not.toContain(oauth.clientSecret);
    const hits = await rowCount(
      'oauth_providers',
      sql`position(convert_to(${oauth.clientSecret}, 'UTF8') in client_secret_ciphertext) > 0`,
    );
    expect(hits).toBe(0);
  });

  it('connects with state and PKCE, stores the tokens encrypted, and hands runs a working access token', async () => {
    const start = await member.post<{ authorizationUrl: string; name: string; boundTo: string }>(
      `${base()}/connections/acme/authorize`,
      {},
    );
    // Named after the provider by default; bound to this browser (a session started it).
    expect(start.body).toMatchObject({ name: 'acme', boundTo: 'browser' });
    const url = new URL(start.body.authorizationUrl);
    expect(url.searchParams.get('code_challenge_method')).toBe('S256');
    expect(url.searchParams.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(url.searchParams.get('state')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(url.searchParams.get('redirect_uri')).toBe(REDIRECT);
    expect(url.searchParams.get('prompt')).toBe('consent');
    // The state is kept only as its hash.
    const state = url.searchParams.get('state') ?? '';
    expect(await rowCount('oauth_authorizations', sql`state_hash = ${state}`)).toBe(0);

    const exchanges = oauth.counts.codeExchanges;
    const callback = await oauth.authorize(start.body.authorizationUrl);
    expect(callback.searchParams.get('code')).toBeTruthy();
    const res = await member.get<ConnectionView>(`${callback.pathname}${callback.search}`);
    expect(res.status, res.text).toBe(200);
    expect(oauth.counts.codeExchanges).toBe(exchanges + 1);
    expect(res.body).toMatchObject({
      provider: 'acme',
      name: 'acme',
      userId: member.userId,
      mine: true,
      shared: false,
      status: 'active',
    });
    expect(res.body.scopes).toEqual(expect.arrayContaining(['openid', 'offline_access']));

    const token = await app.modules.connections.service.accessToken(res.body.id, {
      workspaceId: wsId,
      userId: member.userId,
    });
    expect(await userinfo(token.accessToken)).toBe(200);
    // At rest: ciphertext only.
    expect(await rowCount('oauth_connection_tokens', sql`connection_id = ${res.body.id}`)).toBe(1);
    expect(
      await rowCount(
        'oauth_connection_tokens',
        sql`position(convert_to(${token.accessToken}, 'UTF8') in access_token_ciphertext) > 0`,
      ),
    ).toBe(0);
    const logs = app.logs.join('\n');
    expect(logs).not.toContain(token.accessToken);
    expect(logs).not.toContain(oauth.clientSecret);
    expect(logs).not.toContain(callback.searchParams.get('code') ?? 'x');

    const mine = await member.get<{ data: ConnectionView[] }>(`${base()}/connections`);
    expect(mine.body.data.map((c) => c.id)).toContain(res.body.id);
    expect(mine.text).not.toContain(token.accessToken);
    // Another member does not see a personal connection, nor may use it.
    const others = await owner.get<{ data: ConnectionView[] }>(`${base()}/connections`);
    expect(others.body.data.map((c) => c.id)).not.toContain(res.body.id);
    await expect(
      app.modules.connections.service.accessToken(res.body.id, { workspaceId: wsId, userId: owner.userId }),
    ).rejects.toMatchObject({ code: 'not_found' });
  });

  it('redirects to the page the flow named, with the connection id', async () => {
    const { res } = await connect(member, { redirectTo: '/settings/connections' });
    expect(res.status).toBe(303);
    const location = new URL(String(res.headers.location));
    expect(`${location.origin}${location.pathname}`).toBe('http://berth.test/settings/connections');
    expect(location.searchParams.get('connection')).toMatch(/^con_/);
  });

  it('refreshes a token near its expiry once, and keeps serving it until then', async () => {
    const { res } = await connect(member);
    const id = (res.body as ConnectionView).id;
    const who = { workspaceId: wsId, userId: member.userId };
    const first = await app.modules.connections.service.accessToken(id, who);
    const refreshes = oauth.counts.refreshes;
    app.clock.advance(30 * 60_000);
    expect((await app.modules.connections.service.accessToken(id, who)).accessToken).toBe(first.accessToken);
    expect(oauth.counts.refreshes).toBe(refreshes);
    // Within a minute of the hour the token lives: renewed.
    app.clock.advance(29 * 60_000 + 30_000);
    const second = await app.modules.connections.service.accessToken(id, who);
    expect(oauth.counts.refreshes).toBe(refreshes + 1);
    expect(second.accessToken).not.toBe(first.accessToken);
    expect(await userinfo(second.accessToken)).toBe(200);
    expect(second.expiresAt?.getTime()).toBe(app.clock.now().getTime() + 3600_000);
    // The rotated refresh token was stored: a later refresh works too.
    app.clock.advance(3600_000);
    const third = await app.modules.connections.service.accessToken(id, who);
    expect(third.accessToken).not.toBe(second.accessToken);
    expect(oauth.counts.refreshes).toBe(refreshes + 2);
  });

  it('lets an admin share their own connection with the workspace, and stop sharing it', async () => {
    const { res } = await connect(owner);
    const id = (res.body as ConnectionView).id;
    const shared = await owner.patch<ConnectionView>(`${base()}/connections/${id}`, { shared: true });
    expect(shared.status, shared.text).toBe(200);
    expect(shared.body.shared).toBe(true);
    const seen = await member.get<{ data: ConnectionView[] }>(`${base()}/connections`);
    expect(seen.body.data.find((c) => c.id === id)).toMatchObject({ shared: true, mine: false });
    const token = await app.modules.connections.service.accessToken(id, { workspaceId: wsId, userId: member.userId });
    expect(await userinfo(token.accessToken)).toBe(200);
    const unshared = await owner.patch<ConnectionView>(`${base()}/connections/${id}`, { shared: false });
    expect(unshared.body.shared).toBe(false);
    await expect(
      app.modules.connections.service.accessToken(id, { workspaceId: wsId, userId: member.userId }),
    ).rejects.toMatchObject({ code: 'not_found' });
    expect(await rowCount('audit_events', sql`action = 'connection.shared' and target_id = ${id}`)).toBe(1);
    expect(await rowCount('audit_events', sql`action = 'connection.unshared' and target_id = ${id}`)).toBe(1);
  });

  it('disconnects: revokes the refresh token at the provider and deletes the ciphertext in the same change', async () => {
    const { res } = await connect(member);
    const id = (res.body as ConnectionView).id;
    const token = await app.modules.connections.service.accessToken(id, { workspaceId: wsId, userId: member.userId });
    const revocations = oauth.counts.revocations;
    const del = await member.delete<{ revoked: boolean }>(`${base()}/connections/${id}`);
    expect(del.status, del.text).toBe(200);
    expect(del.body.revoked).toBe(true);
    expect(oauth.counts.revocations).toBe(revocations + 1);
    expect(oauth.revokedHints.at(-1)).toBe('refresh_token');
    expect(await rowCount('oauth_connection_tokens', sql`connection_id = ${id}`)).toBe(0);
    expect(await rowCount('oauth_connections', sql`id = ${id}`)).toBe(0);
    expect(await rowCount('audit_events', sql`action = 'connection.deleted' and target_id = ${id}`)).toBe(1);
    // Revoking the refresh token ended the grant: the access token no longer works either.
    expect(await userinfo(token.accessToken)).toBe(401);
    await expect(
      app.modules.connections.service.accessToken(id, { workspaceId: wsId, userId: member.userId }),
    ).rejects.toMatchObject({ code: 'not_found' });
  });

  it('still disconnects when the revocation endpoint fails, logging no secret', async () => {
    const { res } = await connect(member);
    const id = (res.body as ConnectionView).id;
    const token = await app.modules.connections.service.accessToken(id, { workspaceId: wsId, userId: member.userId });
    oauth.failRevocation = true;
    try {
      const del = await member.delete<{ revoked: boolean }>(`${base()}/connections/${id}`);
      expect(del.status).toBe(200);
      expect(del.body.revoked).toBe(false);
    } finally {
      oauth.failRevocation = false;
    }
    expect(await rowCount('oauth_connection_tokens', sql`connection_id = ${id}`)).toBe(0);
    const logs = app.logs.join('\n');
    expect(logs).toContain('revocation at the provider failed');
    expect(logs).not.toContain(token.accessToken);
  });
});

describe('errors', () => {
  it('refuses a replayed callback and stores nothing', async () => {
    const { callback, res } = await connect(member);
    expect(res.status).toBe(200);
    const before = await rowCount('oauth_connections');
    const again = await member.get(`${callback.pathname}${callback.search}`);
    expect(again.status).toBe(400);
    expect(again.body).toMatchObject({ code: 'oauth_state_used' });
    expect(await rowCount('oauth_connections')).toBe(before);
  });

  it('refuses an unknown or missing state', async () => {
    const unknown = await member.get('/api/oauth/callback?code=abc&state=not-a-state-berth-issued');
    expect(unknown.status).toBe(400);
    expect(unknown.body).toMatchObject({ code: 'oauth_state_invalid' });
    const missing = await member.get('/api/oauth/callback?code=abc');
    expect(missing.body).toMatchObject({ code: 'oauth_state_invalid' });
  });

  it('refuses an expired state without asking the provider', async () => {
    const start = await member.post<{ authorizationUrl: string }>(`${base()}/connections/acme/authorize`, {
      name: nextName(),
    });
    const callback = await oauth.authorize(start.body.authorizationUrl);
    app.clock.advance(11 * 60_000);
    const exchanges = oauth.counts.codeExchanges;
    const before = await rowCount('oauth_connections');
    const res = await member.get(`${callback.pathname}${callback.search}`);
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ code: 'oauth_state_expired' });
    expect(oauth.counts.codeExchanges).toBe(exchanges);
    expect(await rowCount('oauth_connections')).toBe(before);
  });

  it('reports declined consent, as JSON or on the page the flow named', async () => {
    const before = await rowCount('oauth_connections');
    const { callback, res } = await connect(member, { deny: true });
    expect(callback.searchParams.get('error')).toBe('access_denied');
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ code: 'oauth_denied' });
    const page = await connect(member, { deny: true, redirectTo: '/settings/connections' });
    expect(page.res.status).toBe(303);
    expect(new URL(String(page.res.headers.location)).searchParams.get('error')).toBe('oauth_denied');
    expect(await rowCount('oauth_connections')).toBe(before);
  });

  it('answers oauth_provider_error when the token endpoint fails, storing nothing', async () => {
    const before = await rowCount('oauth_connections');
    const start = await member.post<{ authorizationUrl: string }>(`${base()}/connections/acme/authorize`, {
      name: nextName(),
    });
    const callback = await oauth.authorize(start.body.authorizationUrl);
    oauth.failTokenEndpoint = 'server_error';
    try {
      const res = await member.get(`${callback.pathname}${callback.search}`);
      expect(res.status).toBe(502);
      expect(res.body).toMatchObject({ code: 'oauth_provider_error' });
    } finally {
      oauth.failTokenEndpoint = null;
    }
    expect(await rowCount('oauth_connections')).toBe(before);
  });

  it('marks a connection broken when its refresh is refused, emails its owner, and answers connection_broken', async () => {
    const { res } = await connect(member);
    const id = (res.body as ConnectionView).id;
    const who = { workspaceId: wsId, userId: member.userId };
    app.clock.advance(2 * 3600_000);
    oauth.failTokenEndpoint = 'invalid_grant';
    try {
      await expect(app.modules.connections.service.accessToken(id, who)).rejects.toMatchObject({
        code: 'connection_broken',
      });
      const attempts = oauth.counts.refreshes;
      await expect(app.modules.connections.service.accessToken(id, who)).rejects.toMatchObject({
        code: 'connection_broken',
      });
      expect(oauth.counts.refreshes).toBe(attempts);
    } finally {
      oauth.failTokenEndpoint = null;
    }
    app.clock.set(startedAt);
    const list = await member.get<{ data: ConnectionView[] }>(`${base()}/connections`);
    expect(list.body.data.find((c) => c.id === id)).toMatchObject({ status: 'broken' });
    const mail = (await app.modules.notifications.service.listOutbox({ limit: 50 })).filter(
      (m) => m.tag === 'connections.broken' && m.to === member.email,
    );
    expect(mail.length).toBe(1);
    expect(mail[0]?.text).toContain(id);
  });

  it('checks provider input: reserved parameters, secrets, private addresses, names', async () => {
    const body = {
      name: 'other',
      authorizationUrl: oauth.authorizationUrl,
      tokenUrl: oauth.tokenUrl,
      clientId: 'x',
      clientSecret: 'y',
    };
    const reserved = await owner.post(`${base()}/oauth-providers`, { ...body, authorizeParams: { state: 'x' } });
    expect(reserved.status).toBe(400);
    expect(reserved.body).toMatchObject({ code: 'validation_failed' });
    const noSecret = await owner.post(`${base()}/oauth-providers`, {
      ...body,
      clientSecret: undefined,
      tokenAuthMethod: 'client_secret_post',
    });
    expect(noSecret.body).toMatchObject({ code: 'validation_failed' });
    const privateUrl = await owner.post(`${base()}/oauth-providers`, { ...body, tokenUrl: 'http://10.1.2.3/token' });
    expect(privateUrl.status).toBe(400);
    expect(privateUrl.body).toMatchObject({ code: 'egress_denied' });
    const taken = await owner.post(`${base()}/oauth-providers`, { ...body, name: 'acme' });
    expect(taken.status).toBe(409);
    const unknown = await member.post(`${base()}/connections/nope/authorize`, {});
    expect(unknown.status).toBe(404);
    const badRedirect = await member.post(`${base()}/connections/acme/authorize`, { redirectTo: '//evil.example' });
    expect(badRedirect.status).toBe(400);
  });
});

describe('security', () => {
  it("keeps members off each other's personal connections; admins may disconnect any", async () => {
    const { res } = await connect(member);
    const id = (res.body as ConnectionView).id;
    const viewer = await signUp(app);
    await addMember(viewer, 'viewer');
    const peek = await viewer.delete(`${base()}/connections/${id}`);
    expect(peek.status).toBe(404);
    const share = await owner.patch(`${base()}/connections/${id}`, { shared: true });
    expect(share.status).toBe(403);
    const outsider = await signUp(app);
    const elsewhere = await outsider.post<{ id: string }>('/api/workspaces', { name: 'Elsewhere' });
    await expect(
      app.modules.connections.service.accessToken(id, { workspaceId: elsewhere.body.id, userId: outsider.userId }),
    ).rejects.toMatchObject({ code: 'not_found' });
    const byAdmin = await owner.delete(`${base()}/connections/${id}`);
    expect(byAdmin.status).toBe(200);
  });

  it('deleting a provider revokes and deletes every connection to it', async () => {
    await connect(member);
    const before = await rowCount('oauth_connection_tokens');
    expect(before).toBeGreaterThan(0);
    const revocations = oauth.counts.revocations;
    const del = await owner.delete(`${base()}/oauth-providers/${provider.id}`);
    expect(del.status, del.text).toBe(204);
    expect(oauth.counts.revocations).toBe(revocations + before);
    expect(await rowCount('oauth_connection_tokens')).toBe(0);
    expect(await rowCount('oauth_connections')).toBe(0);
    expect(await rowCount('oauth_providers')).toBe(0);
  });
});
