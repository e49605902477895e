import { randomBytes } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { fullDatabaseText } from '../../../test/helpers/dump.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { HOUR, MINUTE } from '../../platform/clock.ts';
import type { Role } from '../../platform/http/context.ts';
import { generateKey } from './keys.format.ts';
import type { KeyView, KeyWithSecret } from './keys.schemas.ts';

let app: TestApp;
let owner: SignedInClient;
let admin: SignedInClient;
let member: SignedInClient;
let outsider: SignedInClient;
let wsA: string;
let wsB: string;
/** Every plaintext key this file saw: none may be found in the database or the logs. */
const secrets: string[] = [];

const keysUrl = (ws = wsA) => `/api/workspaces/${ws}/keys`;

async function user(label: string): Promise<SignedInClient> {
  return signUp(app, {
    email: `${label}-${randomBytes(4).toString('hex')}@keys.test`,
    ip: `10.9.${[...randomBytes(2)].join('.')}`,
  });
}

async function join(ws: string, client: SignedInClient, role: Exclude<Role, 'owner'>) {
  const workspaces = app.modules.workspaces.service;
  const scope = { workspaceId: ws, actor: { type: 'user' as const, userId: owner.userId }, role: 'owner' as const };
  const { token } = await workspaces.invite({ scope, email: client.email, role });
  await workspaces.acceptInvitation({ token, userId: client.userId });
}

async function createKey(client: TestClient, body: Record<string, unknown>, ws = wsA): Promise<KeyWithSecret> {
  const res = await client.post<KeyWithSecret>(keysUrl(ws), { name: 'Test key', ...body });
  if (res.status !== 201) throw new Error(`create key: ${res.status} ${res.text}`);
  secrets.push(res.body.secret);
  return res.body;
}

/** A client that authenticates with a key only (no cookie, no browser headers). */
function keyClient(secret: string, opts: { ip?: string; header?: 'authorization' | 'x-api-key' } = {}) {
  const c = new TestClient(app, { origin: null, ...(opts.ip ? { ip: opts.ip } : {}) });
  c.headers = opts.header === 'x-api-key' ? { 'x-api-key': secret } : { authorization: `Bearer ${secret}` };
  return c;
}

async function auditActions(targetId: string): Promise<string[]> {
  const res = await app.db.system((tx) =>
    tx.execute(sql`select action from audit_events where target_id = ${targetId} order by occurred_at, seq`),
  );
  return (res as unknown as { rows: Array<{ action: string }> }).rows.map((r) => r.action);
}

async function keyCount(ws = wsA): Promise<number> {
  const res = await app.db.system((tx) =>
    tx.execute(sql`select count(*)::int as n from api_keys where workspace_id = ${ws}`),
  );
  return Number((res as unknown as { rows: Array<{ n: number }> }).rows[0]?.n ?? 0);
}

const fullDump = () => fullDatabaseText(app);

beforeAll(async () => {
  // Tests move the clock by hours: keep the sessions alive through it.
  app = await createTestApp({
    config: { BERTH_SESSION_IDLE_MINUTES: 60 * 24 * 30, BERTH_SESSION_ABSOLUTE_HOURS: 24 * 365 },
  });
  owner = await user('owner');
  admin = await user('admin');
  member = await user('member');
  outsider = await user('outsider');
  wsA = (await owner.post<{ id: string }>('/api/workspaces', { name: 'Keys A' })).body.id;
  wsB = (await outsider.post<{ id: string }>('/api/workspaces', { name: 'Keys B' })).body.id;
  await join(wsA, admin, 'admin');
  await join(wsA, member, 'member');
});

afterAll(async () => {
  await app?.close();
});

describe('happy', () => {
  it('creates a key, shows the secret once, and lists it without the secret or its hash', async () => {
    const created = await createKey(owner, {
      name: 'CI deploys',
      scopes: ['gateway:invoke', 'models:read'],
      allowedModels: ['gpt-4o-mini'],
      rateLimitRpm: 60,
      rateLimitTpm: 100_000,
      spendLimitMicros: 5_000_000,
      spendLimitPeriod: 'month',
      ipAllowlist: ['10.0.0.0/8', '2001:DB8::/32'],
    });
    expect(created.secret).toMatch(/^brt_live_[0-9A-Za-z]{32}_[0-9A-Za-z]{6}$/);
    expect(created.key).toMatchObject({
      name: 'CI deploys',
      status: 'active',
      prefix: created.secret.slice(0, 13),
      last4: created.secret.slice(-4),
      scopes: ['gateway:invoke', 'models:read'],
      allowedModels: ['gpt-4o-mini'],
      rateLimitRpm: 60,
      rateLimitTpm: 100_000,
      spendLimitMicros: 5_000_000,
      spendLimitPeriod: 'month',
      ipAllowlist: ['10.0.0.0/8', '2001:db8::/32'],
      createdBy: owner.userId,
      lastUsedAt: null,
      revokedAt: null,
      expiresAt: null,
    });
    expect(created.key.id).toMatch(/^key_/);

    const list = await owner.get<{ data: KeyView[] }>(keysUrl());
    expect(list.status).toBe(200);
    const listed = list.body.data.find((k) => k.id === created.key.id);
    expect(listed).toEqual(created.key);
    const got = await owner.get<KeyView>(`${keysUrl()}/${created.key.id}`);
    expect(got.body).toEqual(created.key);
    for (const text of [list.text, got.text]) {
      expect(text).not.toContain(created.secret);
      expect(text).not.toContain(created.secret.slice(13, 41));
      expect(text).not.toMatch(/[0-9a-f]{64}/);
    }
    expect(await auditActions(created.key.id)).toEqual(['key.created']);
  });

  it('authenticates /api workspace routes with a key (Bearer or x-api-key), without cookies or CSRF', async () => {
    const { secret, key } = await createKey(owner, { scopes: ['workspace:admin'] });
    const bearer = await keyClient(secret).get<{ data: unknown[] }>(`/api/workspaces/${wsA}/members`);
    expect(bearer.status).toBe(200);
    expect(bearer.body.data.length).toBe(3);
    const header = await keyClient(secret, { header: 'x-api-key' }).get(`/api/workspaces/${wsA}`);
    expect(header.status).toBe(200);
    // A state change with no CSRF token and no browser headers: keys are not cookies.
    const made = await keyClient(secret).post<KeyWithSecret>(keysUrl(), {
      name: 'Made by a key',
      scopes: ['models:read'],
    });
    expect(made.status).toBe(201);
    secrets.push(made.body.secret);
    expect(made.body.key.createdBy).toBe(owner.userId);
    const self = await keyClient(secret).get('/api/keys/self');
    expect(self.body).toEqual({
      id: key.id,
      name: 'Test key',
      workspaceId: wsA,
      scopes: ['workspace:admin'],
      createdBy: owner.userId,
      expiresAt: null,
    });
  });

  it('gives /v1 to keys with gateway:invoke only, in OpenAI error shape', async () => {
    const { secret } = await createKey(owner, { scopes: ['gateway:invoke'] });
    // Authentication passes: the workspace has no provider yet, so the list is empty.
    const ok = await keyClient(secret).get('/v1/models');
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ object: 'list', data: [] });
    const unknown = await keyClient(secret).get('/v1/nothing-here');
    expect(unknown.status).toBe(404);
    expect(unknown.body).toEqual({
      error: { message: 'No such route.', type: 'invalid_request_error', param: null, code: 'route_not_found' },
    });

    const none = await new TestClient(app).get('/v1/models');
    expect(none.status).toBe(401);
    expect(none.body).toMatchObject({ error: { type: 'invalid_request_error', code: 'invalid_api_key' } });
    expect(none.headers['www-authenticate']).toBe('Bearer realm="berth"');
    // A signed-in browser is still no key.
    const cookieOnly = await owner.get('/v1/models');
    expect(cookieOnly.status).toBe(401);
    expect(cookieOnly.body).toMatchObject({ error: { code: 'invalid_api_key' } });
    const cookiePost = await owner.post('/v1/chat/completions', { model: 'x', messages: [] });
    expect(cookiePost.status).toBe(401);

    const { secret: noGateway } = await createKey(owner, { scopes: ['models:read'] });
    const refused = await keyClient(noGateway).get('/v1/models');
    expect(refused.status).toBe(403);
    expect(refused.body).toMatchObject({ error: { type: 'invalid_request_error', code: 'insufficient_scope' } });
  });

  it('updates name, scopes and limits, effective on the next request', async () => {
    const { secret, key } = await createKey(owner, { scopes: ['models:read'] });
    const client = keyClient(secret);
    expect((await client.get(`/api/workspaces/${wsA}/members`)).status).toBe(403);
    const updated = await owner.patch<KeyView>(`${keysUrl()}/${key.id}`, {
      name: 'Renamed',
      scopes: ['workspace:admin'],
      rateLimitRpm: null,
      expiresAt: new Date(app.clock.now().getTime() + 24 * HOUR).toISOString(),
      ipAllowlist: ['127.0.0.1'],
    });
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ name: 'Renamed', scopes: ['workspace:admin'], ipAllowlist: ['127.0.0.1/32'] });
    expect(updated.body.prefix).toBe(key.prefix);
    expect((await client.get(`/api/workspaces/${wsA}/members`)).status).toBe(200);
    const cleared = await owner.patch<KeyView>(`${keysUrl()}/${key.id}`, { ipAllowlist: null, expiresAt: null });
    expect(cleared.body).toMatchObject({ ipAllowlist: null, expiresAt: null });
    expect(await auditActions(key.id)).toEqual(['key.created', 'key.updated', 'key.updated']);
  });

  it('revokes a key: refused from the very next request, still listed as revoked', async () => {
    const { secret, key } = await createKey(owner, { scopes: ['workspace:admin'] });
    const client = keyClient(secret);
    expect((await client.get(`/api/workspaces/${wsA}`)).status).toBe(200);
    const revoked = await owner.post<KeyView>(`${keysUrl()}/${key.id}/revoke`);
    expect(revoked.status).toBe(200);
    expect(revoked.body).toMatchObject({ status: 'revoked', revokedBy: owner.userId, secrets: [] });
    const next = await client.get(`/api/workspaces/${wsA}`);
    expect(next.status).toBe(401);
    expect(next.body.code).toBe('api_key_revoked');
    const v1 = await keyClient(secret).get('/v1/models');
    expect(v1.body).toMatchObject({ error: { code: 'api_key_revoked' } });
    expect(await auditActions(key.id)).toEqual(['key.created', 'key.revoked']);
  });

  it('rolls a key: the old secret works through the grace period, the new one at once', async () => {
    const { secret: old, key } = await createKey(owner, { scopes: ['workspace:admin'] });
    const rolled = await owner.post<KeyWithSecret>(`${keysUrl()}/${key.id}/roll`, { gracePeriodSeconds: 3600 });
    expect(rolled.status).toBe(200);
    secrets.push(rolled.body.secret);
    expect(rolled.body.secret).not.toBe(old);
    expect(rolled.body.key.id).toBe(key.id);
    expect(rolled.body.key.prefix).toBe(rolled.body.secret.slice(0, 13));
    expect(rolled.body.key.secrets).toHaveLength(2);
    expect(rolled.body.key.secrets[1]?.expiresAt).toBe(new Date(app.clock.now().getTime() + HOUR).toISOString());
    expect((await keyClient(old).get(`/api/workspaces/${wsA}`)).status).toBe(200);
    expect((await keyClient(rolled.body.secret).get(`/api/workspaces/${wsA}`)).status).toBe(200);

    app.clock.advance(HOUR + 1000);
    const late = await keyClient(old).get(`/api/workspaces/${wsA}`);
    expect(late.status).toBe(401);
    expect(late.body.code).toBe('api_key_expired');
    expect((await keyClient(rolled.body.secret).get(`/api/workspaces/${wsA}`)).status).toBe(200);
    expect((await owner.get<KeyView>(`${keysUrl()}/${key.id}`)).body.secrets).toHaveLength(1);

    // Grace 0: the previous secret stops at once; the default grace is 24 hours.
    const now = await owner.post<KeyWithSecret>(`${keysUrl()}/${key.id}/roll`, { gracePeriodSeconds: 0 });
    secrets.push(now.body.secret);
    expect((await keyClient(rolled.body.secret).get(`/api/workspaces/${wsA}`)).body.code).toBe('api_key_expired');
    const byDefault = await owner.post<KeyWithSecret>(`${keysUrl()}/${key.id}/roll`);
    secrets.push(byDefault.body.secret);
    expect(byDefault.body.key.secrets[1]?.expiresAt).toBe(
      new Date(app.clock.now().getTime() + 24 * HOUR).toISOString(),
    );
    expect(await auditActions(key.id)).toEqual(['key.created', 'key.rolled', 'key.rolled', 'key.rolled']);
  });

  it('stops a key at its expiry', async () => {
    const expiresAt = new Date(app.clock.now().getTime() + HOUR).toISOString();
    const { secret, key } = await createKey(owner, { scopes: ['workspace:admin'], expiresAt });
    expect(key.expiresAt).toBe(expiresAt);
    expect((await keyClient(secret).get(`/api/workspaces/${wsA}`)).status).toBe(200);
    app.clock.advance(HOUR);
    const res = await keyClient(secret).get(`/api/workspaces/${wsA}`);
    expect(res.status).toBe(401);
    expect(res.body.code).toBe('api_key_expired');
    expect((await owner.get<KeyView>(`${keysUrl()}/${key.id}`)).body.status).toBe('expired');
  });

  it('records when a key was last used, at most once a minute, off the request path', async () => {
    const { secret, key } = await createKey(owner, { scopes: ['workspace:admin'] });
    const first = app.clock.now().toISOString();
    await keyClient(secret).get(`/api/workspaces/${wsA}`);
    // Nothing is written by the request itself.
    expect((await owner.get<KeyView>(`${keysUrl()}/${key.id}`)).body.lastUsedAt).toBeNull();
    await app.modules.keys.service.flushUsage();
    expect((await owner.get<KeyView>(`${keysUrl()}/${key.id}`)).body.lastUsedAt).toBe(first);
    app.clock.advance(30_000);
    await keyClient(secret).get(`/api/workspaces/${wsA}`);
    await app.modules.keys.service.flushUsage();
    expect((await owner.get<KeyView>(`${keysUrl()}/${key.id}`)).body.lastUsedAt).toBe(first);
    app.clock.advance(MINUTE);
    const later = app.clock.now().toISOString();
    await keyClient(secret).get(`/api/workspaces/${wsA}`);
    await app.modules.keys.service.flushUsage();
    expect((await owner.get<KeyView>(`${keysUrl()}/${key.id}`)).body.lastUsedAt).toBe(later);
  });

  it('lets members create, see and revoke their own keys only, with scopes their role allows', async () => {
    const own = await createKey(member, { scopes: ['gateway:invoke', 'agents:run'] });
    const owners = await createKey(owner, { scopes: ['models:read'] });
    const list = await member.get<{ data: KeyView[] }>(keysUrl());
    expect(list.body.data.map((k) => k.id)).toEqual([own.key.id]);
    expect((await member.get(`${keysUrl()}/${owners.key.id}`)).status).toBe(404);
    expect((await member.post(`${keysUrl()}/${owners.key.id}/revoke`)).status).toBe(404);
    const billing = await member.post(keysUrl(), { name: 'x', scopes: ['billing:read'] });
    expect(billing.status).toBe(403);
    expect(billing.body.code).toBe('forbidden');
    // Managers see every key.
    const all = await admin.get<{ data: KeyView[] }>(keysUrl());
    expect(all.body.data.map((k) => k.id)).toEqual(expect.arrayContaining([own.key.id, owners.key.id]));
    expect((await member.post(`${keysUrl()}/${own.key.id}/revoke`)).status).toBe(200);
  });

  it("revokes a member's keys when they are removed from the workspace", async () => {
    const leaver = await user('leaver');
    await join(wsA, leaver, 'member');
    const { secret, key } = await createKey(leaver, { scopes: ['gateway:invoke'] });
    expect((await keyClient(secret).get('/v1/models')).status).toBe(200);
    const removed = await owner.delete(`/api/workspaces/${wsA}/members/${leaver.userId}`);
    expect(removed.status).toBe(204);
    const after = await keyClient(secret).get('/v1/models');
    expect(after.status).toBe(401);
    expect(after.body).toMatchObject({ error: { code: 'api_key_revoked' } });
    const view = await owner.get<KeyView>(`${keysUrl()}/${key.id}`);
    expect(view.body).toMatchObject({ status: 'revoked', revokedBy: owner.userId });
  });

  it('forgets the keys of a deleted workspace at once', async () => {
    const ws = (await owner.post<{ id: string }>('/api/workspaces', { name: 'Short-lived' })).body.id;
    const { secret } = await createKey(owner, { scopes: ['workspace:admin', 'gateway:invoke'] }, ws);
    expect((await keyClient(secret).get('/v1/models')).status).toBe(200);
    const deleted = await owner.delete(`/api/workspaces/${ws}`, { confirmName: 'Short-lived' });
    expect(deleted.status).toBe(204);
    const after = await keyClient(secret).get('/v1/models');
    expect(after.status).toBe(401);
    expect(after.body).toMatchObject({ error: { code: 'invalid_api_key' } });
  });

  it('issues brt_test_ keys when BERTH_KEY_ENVIRONMENT is test', async () => {
    const testEnv = await createTestApp({ config: { BERTH_KEY_ENVIRONMENT: 'test' } });
    try {
      const u = await testEnv.modules.identity.service.createUser({
        email: 'env@keys.test',
        password: 'a long enough passphrase',
        isOperator: false,
        emailVerified: true,
      });
      const w = await testEnv.modules.workspaces.service.createWorkspace({ ownerUserId: u.id, name: 'Env' });
      const { secret, key } = await testEnv.modules.keys.service.createKey({
        scope: { workspaceId: w.id, actor: { type: 'user', userId: u.id }, role: 'owner' },
        input: { name: 'Test env', scopes: ['gateway:invoke'] },
      });
      expect(secret).toMatch(/^brt_test_/);
      expect(key.prefix).toMatch(/^brt_test_/);
      const c = new TestClient(testEnv, { origin: null });
      c.headers = { authorization: `Bearer ${secret}` };
      expect((await c.get('/v1/models')).status).toBe(200);
    } finally {
      await testEnv.close();
    }
  });

  it("limits a key to its creator's current role", async () => {
    const demoted = await user('demoted');
    await join(wsA, demoted, 'admin');
    const { secret } = await createKey(demoted, { scopes: ['workspace:admin'] });
    const invite = () =>
      keyClient(secret).post(`/api/workspaces/${wsA}/invitations`, {
        email: `x-${randomBytes(3).toString('hex')}@keys.test`,
        role: 'viewer',
      });
    expect((await invite()).status).toBe(201);
    const changed = await owner.patch(`/api/workspaces/${wsA}/members/${demoted.userId}`, { role: 'viewer' });
    expect(changed.status).toBe(200);
    const refused = await invite();
    expect(refused.status).toBe(403);
    expect(refused.body.code).toBe('forbidden');
    // What a viewer may do, the key still may.
    expect((await keyClient(secret).get(`/api/workspaces/${wsA}/members`)).status).toBe(200);
  });
});

describe('errors', () => {
  it('refuses bad input with a clear 400 and changes nothing', async () => {
    const before = await keyCount();
    const past = new Date(app.clock.now().getTime() - 1000).toISOString();
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ name: 'x', scopes: ['gateway:invoke', 'root:all'] }, '/scopes'],
      [{ name: 'x', scopes: [] }, '/scopes'],
      [{ name: 'x', scopes: ['models:read', 'models:read'] }, '/scopes'],
      [{ name: '', scopes: ['models:read'] }, '/name'],
      [{ name: 'x', scopes: ['models:read'], expiresAt: past }, '/expiresAt'],
      [{ name: 'x', scopes: ['models:read'], expiresAt: 'tomorrow' }, '/expiresAt'],
      [{ name: 'x', scopes: ['models:read'], ipAllowlist: ['10.0.0.1/8'] }, '/ipAllowlist'],
      [{ name: 'x', scopes: ['models:read'], ipAllowlist: ['10.0.0.0/40'] }, '/ipAllowlist'],
      [{ name: 'x', scopes: ['models:read'], ipAllowlist: ['example.com'] }, '/ipAllowlist'],
      [{ name: 'x', scopes: ['models:read'], spendLimitMicros: 100 }, '/spendLimitPeriod'],
      [{ name: 'x', scopes: ['models:read'], rateLimitRpm: 0 }, '/rateLimitRpm'],
      [{ name: 'x', scopes: ['models:read'], secret: 'brt_live_mine' }, '/'],
    ];
    for (const [body, path] of cases) {
      const res = await owner.post<{ code: string; errors?: Array<{ path: string; message: string }> }>(
        keysUrl(),
        body,
      );
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.code).toBe('validation_failed');
      expect(res.body.errors?.map((e) => e.path).join(' '), JSON.stringify(body)).toContain(path);
    }
    const cidr = await owner.post<{ detail: string }>(keysUrl(), {
      name: 'x',
      scopes: ['models:read'],
      ipAllowlist: ['10.0.0.1/8'],
    });
    expect(cidr.body.detail).toContain('host bits set: use 10.0.0.0/8');
    expect(await keyCount()).toBe(before);
  });

  it('refuses bad updates, rolls and revokes with stable codes', async () => {
    const { key } = await createKey(owner, { scopes: ['models:read'] });
    const url = `${keysUrl()}/${key.id}`;
    expect((await owner.patch(url, {})).body.code).toBe('validation_failed');
    expect((await owner.patch(url, { scopes: ['nope'] })).body.code).toBe('validation_failed');
    expect((await owner.patch(url, { spendLimitMicros: 10 })).body.code).toBe('validation_failed');
    const grace = await owner.post(`${url}/roll`, { gracePeriodSeconds: 31 * 24 * 3600 });
    expect(grace.status).toBe(400);
    expect((await owner.get(`${keysUrl()}/key_01JD6F3Q4N8ZK5R2W7XH9YB0C1`)).status).toBe(404);
    expect((await owner.get(`${keysUrl()}/not-an-id`)).status).toBe(404);
    expect((await owner.post(`${url}/revoke`)).status).toBe(200);
    for (const res of [
      await owner.post(`${url}/revoke`),
      await owner.post(`${url}/roll`),
      await owner.patch(url, { name: 'again' }),
    ]) {
      expect(res.status).toBe(409);
      expect(res.body.code).toBe('conflict');
    }
    expect(await auditActions(key.id)).toEqual(['key.created', 'key.revoked']);
  });

  it('refuses a malformed key (wrong checksum) with 401 before any database lookup', async () => {
    const { secret } = await createKey(owner, { scopes: ['workspace:admin'] });
    const last = secret.at(-1) === 'a' ? 'b' : 'a';
    const typo = `${secret.slice(0, -1)}${last}`;
    const lookups = vi.spyOn(app.db, 'system');
    try {
      for (const bad of [typo, 'brt_live_short', 'sk-not-berth', secret.replace('brt_live_', 'brt_test_')]) {
        const res = await keyClient(bad).get(`/api/workspaces/${wsA}`);
        expect(res.status, bad).toBe(401);
        expect(res.body.code).toBe('invalid_api_key');
      }
      expect(lookups).not.toHaveBeenCalled();
    } finally {
      lookups.mockRestore();
    }
    // A well-formed key that does not exist is looked up once, then remembered briefly.
    const unknown = generateKey();
    const res = await keyClient(unknown).get(`/api/workspaces/${wsA}`);
    expect(res.status).toBe(401);
    expect(res.body.code).toBe('invalid_api_key');
    const again = vi.spyOn(app.db, 'system');
    try {
      expect((await keyClient(unknown).get(`/api/workspaces/${wsA}`)).status).toBe(401);
      expect(again).not.toHaveBeenCalled();
    } finally {
      again.mockRestore();
    }
  });

  it('refuses confusing credentials: two different keys, empty Bearer', async () => {
    const { secret } = await createKey(owner, { scopes: ['workspace:admin'] });
    const both = await new TestClient(app).get(`/api/workspaces/${wsA}`, {
      authorization: `Bearer ${secret}`,
      'x-api-key': generateKey(),
    });
    expect(both.status).toBe(400);
    const empty = await new TestClient(app).get(`/api/workspaces/${wsA}`, { authorization: 'Bearer ' });
    expect(empty.status).toBe(401);
    expect(empty.body.code).toBe('invalid_api_key');
    const same = await new TestClient(app).get(`/api/workspaces/${wsA}`, {
      authorization: `Bearer ${secret}`,
      'x-api-key': secret,
    });
    expect(same.status).toBe(200);
  });

  it('refuses keys on account, sign-in and operator routes', async () => {
    const { secret } = await createKey(owner, { scopes: ['workspace:admin'] });
    for (const [method, url] of [
      ['GET', '/api/me'],
      ['GET', '/api/workspaces'],
      ['POST', '/api/workspaces'],
      ['POST', '/api/auth/logout'],
      ['GET', '/api/operator/users'],
    ] as const) {
      const res = await keyClient(secret).request(method, url, method === 'POST' ? { name: 'x' } : undefined);
      expect(res.status, url).toBe(403);
      expect(res.body.code).toBe('forbidden');
    }
    // /api/keys/self answers keys only.
    const self = await owner.get('/api/keys/self');
    expect(self.status).toBe(401);
  });
});

describe('security', () => {
  it('answers 404 to a key of another workspace, like for any non-member', async () => {
    const { secret } = await createKey(outsider, { scopes: ['workspace:admin'] }, wsB);
    for (const url of [`/api/workspaces/${wsA}`, `/api/workspaces/${wsA}/members`, keysUrl()]) {
      const res = await keyClient(secret).get(url);
      expect(res.status, url).toBe(404);
      expect(res.body.code).toBe('not_found');
    }
    expect((await keyClient(secret).get(`/api/workspaces/${wsB}`)).status).toBe(200);
  });

  it('enforces scopes on /api routes (403 insufficient_scope)', async () => {
    const { secret } = await createKey(owner, { scopes: ['models:read', 'gateway:invoke'] });
    for (const url of [`/api/workspaces/${wsA}/members`, `/api/workspaces/${wsA}`, keysUrl()]) {
      const res = await keyClient(secret).get(url);
      expect(res.status, url).toBe(403);
      expect(res.body.code).toBe('insufficient_scope');
    }
    const created = await keyClient(secret).post(keysUrl(), { name: 'escalate', scopes: ['workspace:admin'] });
    expect(created.status).toBe(403);
    // Even workspace:admin stops at owner-only actions and at scopes it does not hold.
    const { secret: adminKey } = await createKey(owner, { scopes: ['workspace:admin'] });
    const grant = await keyClient(adminKey).post(keysUrl(), { name: 'escalate', scopes: ['gateway:invoke'] });
    expect(grant.status).toBe(403);
    expect(grant.body.code).toBe('insufficient_scope');
    const del = await keyClient(adminKey).delete(`/api/workspaces/${wsA}`, { confirmName: 'Keys A' });
    expect(del.status).toBe(403);
    expect((await owner.get(`/api/workspaces/${wsA}`)).status).toBe(200);
  });

  it('enforces the IP allow-list (IPv4 and IPv6)', async () => {
    const { secret } = await createKey(owner, {
      scopes: ['workspace:admin'],
      ipAllowlist: ['203.0.113.0/24', '2001:db8::/32'],
    });
    expect((await keyClient(secret, { ip: '203.0.113.9' }).get(`/api/workspaces/${wsA}`)).status).toBe(200);
    expect((await keyClient(secret, { ip: '2001:db8::7' }).get(`/api/workspaces/${wsA}`)).status).toBe(200);
    for (const ip of ['198.51.100.1', '2001:db9::1', '127.0.0.1']) {
      const res = await keyClient(secret, { ip }).get(`/api/workspaces/${wsA}`);
      expect(res.status, ip).toBe(403);
      expect(res.body.code).toBe('ip_not_allowed');
    }
  });

  it('refuses keys in the query string and never logs them', async () => {
    const { secret } = await createKey(owner, { scopes: ['workspace:admin', 'gateway:invoke'] });
    for (const url of [
      `/api/workspaces/${wsA}?api_key=${secret}`,
      `/api/workspaces/${wsA}?key=${secret}`,
      `/api/workspaces/${wsA}?apikey=whatever`,
      `/api/workspaces/${wsA}?access_token=${secret}`,
      `/v1/models?api_key=${secret}`,
      `/healthz?anything=${secret}`,
    ]) {
      const res = await new TestClient(app).get(url);
      expect(res.status, url).toBe(400);
      const code =
        (res.body as { code?: string; error?: { code?: string } }).code ??
        (res.body as { error?: { code?: string } }).error?.code;
      expect(code).toBe('api_key_in_query');
      expect(res.text).not.toContain(secret);
    }
    expect(app.logs.join('\n')).not.toContain(secret.slice(13, 41));
  });

  it('never downgrades a bad key to the cookie, and lets a good key win over a cookie', async () => {
    const bad = await owner.get(`/api/workspaces/${wsA}`, { authorization: `Bearer ${generateKey()}` });
    expect(bad.status).toBe(401);
    expect(bad.body.code).toBe('invalid_api_key');
    const me = await owner.get('/api/me', { authorization: 'Bearer brt_live_garbage' });
    expect(me.status).toBe(401);
    // The outsider's cookie plus a key of A: the key decides (and the request needs no CSRF token).
    const { secret } = await createKey(owner, { scopes: ['workspace:admin'] });
    const both = await outsider.get(`/api/workspaces/${wsA}`, { authorization: `Bearer ${secret}` });
    expect(both.status).toBe(200);
    const post = await outsider.post(
      `/api/workspaces/${wsB}/invitations`,
      { email: 'y@keys.test', role: 'viewer' },
      { authorization: `Bearer ${secret}`, 'x-csrf-token': '' },
    );
    expect(post.status).toBe(404);
  });

  it('leaves no plaintext key in the database or the logs', async () => {
    // Use some keys so every path that touches them has run, then flush last-used times.
    for (const s of secrets.slice(0, 5)) await keyClient(s).get(`/api/workspaces/${wsA}`);
    await app.modules.keys.service.flushUsage();
    expect(secrets.length).toBeGreaterThan(10);
    const dump = await fullDump();
    expect(dump).toContain('key_');
    expect(dump).toContain('brt_live_');
    const logs = app.logs.join('\n');
    expect(logs.length).toBeGreaterThan(1000);
    for (const s of secrets) {
      const random = s.slice(13, 41);
      expect(dump.includes(random), 'a key is stored in clear').toBe(false);
      expect(logs.includes(random), 'a key is in the logs').toBe(false);
    }
  });
});
