import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type FakeOAuthServer, startFakeOAuthServer } from '../../../test/fakes/oauth-server.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { onServerPostgres } from '../../../test/helpers/db.ts';
import { signUp } from '../../../test/helpers/identity.ts';
import { dataMap } from '../../app.ts';
import { exportRuleOf, tableExported } from '../../platform/db/datamap.ts';
import { erasePlan } from '../privacy/privacy.erasure.plan.ts';
import type { ConnectionView } from './vault.connections.schemas.ts';

/**
 * The refresh lock across workers: two replicas of one installation (own services, own
 * database connections) ask for the same expired connection's token at once. The token
 * endpoint must see exactly one refresh. The provider rotates refresh tokens and refuses a
 * used one, so a second refresh would also break the connection. On server Postgres the
 * callers really run in parallel; on PGlite (one connection) they are serialised.
 */

const REDIRECT = 'http://berth.test/api/oauth/callback';
let a: TestApp;
let b: TestApp;
let oauth: FakeOAuthServer;

beforeAll(async () => {
  oauth = await startFakeOAuthServer({ redirectUri: REDIRECT });
  a = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1' } });
  b = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1' }, testDb: a.testDb, clock: a.clock });
});

afterAll(async () => {
  await b?.close();
  await a?.close();
  await oauth?.close();
});

describe('security', () => {
  it(`refreshes once for many parallel callers on two replicas (${onServerPostgres() ? 'server Postgres' : 'PGlite'})`, async () => {
    const user = await signUp(a);
    const ws = await user.post<{ id: string }>('/api/workspaces', { name: 'Locks' });
    const base = `/api/workspaces/${ws.body.id}`;
    const created = await user.post(`${base}/oauth-providers`, {
      name: 'acme',
      authorizationUrl: oauth.authorizationUrl,
      tokenUrl: oauth.tokenUrl,
      revocationUrl: oauth.revocationUrl,
      clientId: oauth.clientId,
      clientSecret: oauth.clientSecret,
      scopes: ['openid', 'offline_access'],
    });
    expect(created.status, created.text).toBe(201);
    const start = await user.post<{ authorizationUrl: string }>(`${base}/connections/acme/authorize`, {});
    const callback = await oauth.authorize(start.body.authorizationUrl);
    const connected = await user.get<ConnectionView>(`${callback.pathname}${callback.search}`);
    expect(connected.status, connected.text).toBe(200);
    const id = connected.body.id;
    const who = { workspaceId: ws.body.id, userId: user.userId };
    const before = await a.modules.connections.service.accessToken(id, who);

    a.clock.advance(2 * 3600_000);
    oauth.refreshDelayMs = 300;
    const refreshes = oauth.counts.refreshes;
    try {
      const tokens = await Promise.all(
        Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? a : b).modules.connections.service.accessToken(id, who)),
      );
      expect(oauth.counts.refreshes - refreshes).toBe(1);
      const distinct = new Set(tokens.map((t) => t.accessToken));
      expect(distinct.size).toBe(1);
      expect([...distinct][0]).not.toBe(before.accessToken);
    } finally {
      oauth.refreshDelayMs = 0;
    }
    const list = await a.modules.connections.service.listConnections({
      scope: { workspaceId: ws.body.id, actor: { type: 'user', userId: user.userId }, role: 'owner' },
    });
    expect(list.find((c) => c.id === id)?.status).toBe('active');
  });

  it('holds no transaction while the token endpoint answers: the database stays free for everyone else', async () => {
    const user = await signUp(a);
    const ws = await user.post<{ id: string }>('/api/workspaces', { name: 'Slow provider' });
    const base = `/api/workspaces/${ws.body.id}`;
    await user.post(`${base}/oauth-providers`, {
      name: 'acme',
      authorizationUrl: oauth.authorizationUrl,
      tokenUrl: oauth.tokenUrl,
      clientId: oauth.clientId,
      clientSecret: oauth.clientSecret,
      scopes: ['openid', 'offline_access'],
    });
    const start = await user.post<{ authorizationUrl: string }>(`${base}/connections/acme/authorize`, {});
    const callback = await oauth.authorize(start.body.authorizationUrl);
    const connected = await user.get<ConnectionView>(`${callback.pathname}${callback.search}`);
    expect(connected.status, connected.text).toBe(200);
    const id = connected.body.id;
    const who = { workspaceId: ws.body.id, userId: user.userId };
    const startedAt = a.clock.now();
    a.clock.advance(2 * 3600_000);
    oauth.refreshDelayMs = 2500;
    try {
      const refreshing = a.modules.connections.service.accessToken(id, who);
      await vi.waitFor(() => expect(oauth.tokenRequestsWaiting).toBe(1), { timeout: 2000, interval: 10 });
      // The provider is still thinking: the connection's row is not locked (NOWAIT would fail
      // on server Postgres) and the one PGlite connection is not held (this would wait).
      const t0 = performance.now();
      await a.db.tenant(ws.body.id, (tx) =>
        tx.execute(sql`select id from oauth_connections where id = ${id} for update nowait`),
      );
      expect(performance.now() - t0).toBeLessThan(1000);
      expect(oauth.tokenRequestsWaiting).toBe(1);
      const token = await refreshing;
      expect(await b.modules.connections.service.accessToken(id, who)).toMatchObject({
        accessToken: token.accessToken,
      });
    } finally {
      oauth.refreshDelayMs = 0;
      a.clock.set(startedAt);
    }
  });

  it('erases connections and tokens with their user or workspace, and never exports a token, verifier or state', () => {
    const map = dataMap(a.modules);
    const plan = erasePlan(map);
    for (const table of ['oauth_connections', 'oauth_connection_tokens', 'oauth_authorizations']) {
      expect(plan.user.find((t) => t.table === table)?.refs, table).toEqual([
        { column: 'user_id', kind: 'user', rule: 'delete' },
      ]);
    }
    for (const table of ['oauth_providers', 'oauth_connections', 'oauth_connection_tokens', 'oauth_authorizations']) {
      expect(plan.workspace, table).toContainEqual({ table, column: 'workspace_id' });
    }
    const entry = (table: string) => {
      const e = map.find((t) => t.table === table);
      if (!e) throw new Error(`${table} is not in the data map`);
      return e;
    };
    // A user's export shows that their connections exist, never a token, verifier or state.
    expect(tableExported(entry('oauth_connections'))).toBe(true);
    const secrets = [
      ['oauth_connection_tokens', 'access_token_ciphertext'],
      ['oauth_connection_tokens', 'refresh_token_ciphertext'],
      ['oauth_authorizations', 'code_verifier_ciphertext'],
      ['oauth_authorizations', 'state_hash'],
      ['oauth_providers', 'client_secret_ciphertext'],
    ] as const;
    for (const [table, column] of secrets) expect(exportRuleOf(entry(table), column), column).toBe('never');
  });
});
