import { randomBytes } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { onServerPostgres } from '../../../test/helpers/db.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { type Bus, memoryBus } from '../../platform/bus/index.ts';

const SECOND = 1000;

import type { Role, Scope, SessionAuth } from '../../platform/http/context.ts';
import { totpCodeAt } from '../identity/index.ts';
import type { KeyView, KeyWithSecret } from './keys.schemas.ts';

/**
 * What a key may do to members and to other keys, and what its creator's account and 2FA
 * state mean for it: owner actions stay with owners' sessions, only a key's creator rolls
 * it, an edit never leaves a key with more than the editor holds, a disabled creator's keys
 * stop, and the workspace 2FA rule applies to keys through their creator.
 */

let app: TestApp;
const bus: Bus = memoryBus();

const keysUrl = (ws: string) => `/api/workspaces/${ws}/keys`;

async function user(label: string): Promise<SignedInClient> {
  return signUp(app, {
    email: `${label}-${randomBytes(4).toString('hex')}@rights.test`,
    ip: `10.8.${[...randomBytes(2)].join('.')}`,
  });
}

function ownerScope(ws: string, owner: SignedInClient): Scope {
  return { workspaceId: ws, actor: { type: 'user', userId: owner.userId }, role: 'owner' };
}

/** A fresh workspace with its owner and one member per role given (joined by invitation). */
async function workspace(roles: Array<Exclude<Role, 'owner'>> = []) {
  const owner = await user('owner');
  const ws = (await owner.post<{ id: string }>('/api/workspaces', { name: 'Rights' })).body.id;
  const service = app.modules.workspaces.service;
  const others: SignedInClient[] = [];
  for (const role of roles) {
    const c = await user(role);
    const { token } = await service.invite({ scope: ownerScope(ws, owner), email: c.email, role });
    await service.acceptInvitation({ token, userId: c.userId });
    others.push(c);
  }
  return { owner, ws, others };
}

async function createKey(client: TestClient, ws: string, body: Record<string, unknown>): Promise<KeyWithSecret> {
  const res = await client.post<KeyWithSecret>(keysUrl(ws), { name: 'Rights key', ...body });
  if (res.status !== 201) throw new Error(`create key: ${res.status} ${res.text}`);
  return res.body;
}

function keyClient(secret: string) {
  const c = new TestClient(app, { origin: null });
  c.headers = { authorization: `Bearer ${secret}` };
  return c;
}

async function auditActions(targetId: string): Promise<string[]> {
  const res = await app.db.system((tx) =>
    tx.execute(sql`select action from audit_events where target_id = ${targetId} order by occurred_at, seq`),
  );
  return (res as unknown as { rows: Array<{ action: string }> }).rows.map((r) => r.action);
}

async function roleOf(ws: string, userId: string): Promise<Role | null> {
  return (await app.modules.workspaces.service.resolveMembership(ws, userId))?.role ?? null;
}

async function enableMfa(client: TestClient) {
  const start = await client.post<{ secret: string }>('/api/me/mfa/totp');
  expect(start.status).toBe(200);
  const confirm = await client.post('/api/me/mfa/totp/confirm', {
    code: totpCodeAt(start.body.secret, app.clock.now()),
  });
  expect(confirm.status).toBe(200);
}

function operator(userId: string): SessionAuth {
  return { kind: 'session', userId, sessionId: 'ses_test', mfaEnabled: true, isOperator: true };
}
const meta = { ip: '10.8.0.1', userAgent: null, requestId: 'req-rights' };

beforeAll(async () => {
  // Tests move the clock past the key cache's TTL: keep the sessions alive through it.
  app = await createTestApp({ bus, config: { BERTH_SESSION_IDLE_MINUTES: 60 * 24 } });
});

afterAll(async () => {
  await app?.close();
  await bus.close();
});

describe('happy', () => {
  it("an owner's workspace:admin key still does admin-level member changes", async () => {
    const { owner, ws, others } = await workspace(['member']);
    const [m] = others;
    if (!m) throw new Error('fixture');
    const { secret } = await createKey(owner, ws, { scopes: ['workspace:admin'] });
    const res = await keyClient(secret).patch(`/api/workspaces/${ws}/members/${m.userId}`, { role: 'admin' });
    expect(res.status).toBe(200);
    expect(await roleOf(ws, m.userId)).toBe('admin');
  });

  it("a key's creator rolls it, also through one of their keys that holds its scopes", async () => {
    const { owner, ws } = await workspace();
    const { key } = await createKey(owner, ws, { scopes: ['models:read'] });
    const { secret: adminKey } = await createKey(owner, ws, { scopes: ['workspace:admin'] });
    const rolled = await keyClient(adminKey).post<KeyWithSecret>(`${keysUrl(ws)}/${key.id}/roll`, {
      gracePeriodSeconds: 0,
    });
    expect(rolled.status).toBe(200);
    expect((await keyClient(rolled.body.secret).get('/api/keys/self')).body).toMatchObject({ id: key.id });
    expect(await auditActions(key.id)).toEqual(['key.created', 'key.rolled']);
  });
});

describe('errors', () => {
  it('refuses to roll a revoked key even for its creator, and says why', async () => {
    const { owner, ws } = await workspace();
    const { key } = await createKey(owner, ws, { scopes: ['models:read'] });
    await owner.post(`${keysUrl(ws)}/${key.id}/revoke`);
    const res = await owner.post(`${keysUrl(ws)}/${key.id}/roll`);
    expect(res.status).toBe(409);
    expect(res.body.code).toBe('conflict');
  });
});

describe('security', () => {
  it("an owner's workspace:admin key cannot make owners, nor demote or remove an owner (S2)", async () => {
    const { owner, ws, others } = await workspace(['admin', 'member']);
    const [second, m] = others;
    if (!second || !m) throw new Error('fixture');
    await app.modules.workspaces.service.changeRole({
      scope: ownerScope(ws, owner),
      userId: second.userId,
      role: 'owner',
    });
    const { secret } = await createKey(owner, ws, { scopes: ['workspace:admin'] });
    const key = keyClient(secret);
    const members = `/api/workspaces/${ws}/members`;

    const promote = await key.patch(`${members}/${m.userId}`, { role: 'owner' });
    expect(promote.status).toBe(403);
    expect(promote.body.code).toBe('forbidden');
    const demote = await key.patch(`${members}/${second.userId}`, { role: 'member' });
    expect(demote.status).toBe(403);
    const remove = await key.delete(`${members}/${second.userId}`);
    expect(remove.status).toBe(403);

    expect(await roleOf(ws, m.userId)).toBe('member');
    expect(await roleOf(ws, second.userId)).toBe('owner');
    // The owner's session does the same thing: the refusal is about the key, not the person.
    expect((await owner.patch(`${members}/${second.userId}`, { role: 'admin' })).status).toBe(200);
  });

  it("only a key's creator rolls it: an admin gets 403 and no secret for the owner's key (S3)", async () => {
    const { owner, ws, others } = await workspace(['admin']);
    const [admin] = others;
    if (!admin) throw new Error('fixture');
    const { key } = await createKey(owner, ws, { scopes: ['gateway:invoke'] });
    const res = await admin.post(`${keysUrl(ws)}/${key.id}/roll`, { gracePeriodSeconds: 0 });
    expect(res.status).toBe(403);
    expect(res.body.code).toBe('forbidden');
    expect(res.text).not.toMatch(/brt_/);
    // Managers still revoke.
    expect((await admin.post(`${keysUrl(ws)}/${key.id}/revoke`)).status).toBe(200);
    expect(await auditActions(key.id)).toEqual(['key.created', 'key.revoked']);
  });

  it("a workspace:admin key cannot roll or loosen its creator's gateway key (S3)", async () => {
    const { owner, ws } = await workspace();
    const { key } = await createKey(owner, ws, {
      scopes: ['gateway:invoke'],
      ipAllowlist: ['203.0.113.0/24'],
      allowedModels: ['small'],
    });
    const { secret } = await createKey(owner, ws, { scopes: ['workspace:admin'] });
    const adminKey = keyClient(secret);
    const roll = await adminKey.post(`${keysUrl(ws)}/${key.id}/roll`, { gracePeriodSeconds: 0 });
    expect(roll.status).toBe(403);
    expect(roll.body.code).toBe('insufficient_scope');
    expect(roll.text).not.toMatch(/brt_/);
    for (const patch of [{ ipAllowlist: null }, { allowedModels: null }, { name: 'harmless?' }]) {
      const res = await adminKey.patch(`${keysUrl(ws)}/${key.id}`, patch);
      expect(res.status, JSON.stringify(patch)).toBe(403);
      expect(res.body.code).toBe('insufficient_scope');
    }
    const after = await owner.get<KeyView>(`${keysUrl(ws)}/${key.id}`);
    expect(after.body).toMatchObject({ ipAllowlist: ['203.0.113.0/24'], allowedModels: ['small'], name: 'Rights key' });
    expect(await auditActions(key.id)).toEqual(['key.created']);
  });

  it("a disabled creator's keys stop on the next request, and work again once enabled (S4)", async () => {
    const { owner, ws, others } = await workspace(['admin']);
    const [admin] = others;
    if (!admin) throw new Error('fixture');
    const { secret } = await createKey(admin, ws, { scopes: ['workspace:admin'] });
    const url = `/api/workspaces/${ws}`;
    expect((await keyClient(secret).get(url)).status).toBe(200);

    await app.modules.identity.service.disableUser(operator(owner.userId), admin.userId, meta);
    // The disable drops the cached key on every replica: refused at once, not after the TTL.
    const next = await keyClient(secret).get(url);
    expect(next.status).toBe(401);
    expect(next.body.code).toBe('api_key_revoked');
    // And a fresh lookup reads the account's status.
    app.modules.keys.service.clearCache();
    expect((await keyClient(secret).get(url)).body.code).toBe('api_key_revoked');
    expect((await keyClient(secret).get('/v1/models')).status).toBe(401);

    await app.modules.identity.service.enableUser(operator(owner.userId), admin.userId, meta);
    app.clock.advance(11 * SECOND);
    expect((await keyClient(secret).get(url)).status).toBe(200);
  });

  it("keys follow the workspace 2FA rule through their creator's current 2FA state (S5)", async () => {
    const { owner, ws, others } = await workspace(['admin']);
    const [admin] = others;
    if (!admin) throw new Error('fixture');
    const { secret } = await createKey(admin, ws, { scopes: ['workspace:admin'] });
    const key = keyClient(secret);
    const url = `/api/workspaces/${ws}`;
    expect((await key.patch(url, { name: 'Before the rule' })).status).toBe(200);

    await enableMfa(owner);
    await app.modules.workspaces.service.setRequireMfa({ scope: ownerScope(ws, owner), requireMfa: true });
    // The creator has no second factor: the key gets what they would get without one.
    const refused = await key.patch(url, { name: 'Under the rule' });
    expect(refused.status).toBe(403);
    expect(refused.body.code).toBe('mfa_required');
    expect((await key.get(url)).status).toBe(200);

    await enableMfa(admin);
    app.clock.advance(11 * SECOND); // the cached 2FA state lives at most the cache TTL
    expect((await key.patch(url, { name: 'Creator has 2FA' })).status).toBe(200);
  });

  it('invalidations of a membership change are sent after the commit, never for a rolled-back change (C1)', async () => {
    const { owner, ws, others } = await workspace(['member']);
    const [m] = others;
    if (!m) throw new Error('fixture');
    const { key } = await createKey(m, ws, { scopes: ['agents:read'] });
    const heard: Array<Promise<unknown>> = [];
    const stop = await bus.subscribe('berth.keys', (message) => {
      if (!message.includes(key.id)) return;
      // What another replica reads when the message reaches it.
      try {
        heard.push(app.db.system((tx) => tx.execute(sql`select revoked_at from api_keys where id = ${key.id}`)));
      } catch (err) {
        heard.push(Promise.reject(err));
      }
    });
    let failAfter = true;
    app.modules.workspaces.service.onEvent(async (e) => {
      if (failAfter && e.type === 'member.removed' && e.workspaceId === ws) throw new Error('later step failed');
    });
    try {
      const failed = await owner.delete(`/api/workspaces/${ws}/members/${m.userId}`);
      expect(failed.status).toBe(500);
      expect(heard).toHaveLength(0);
      expect(await roleOf(ws, m.userId)).toBe('member');

      failAfter = false;
      expect((await owner.delete(`/api/workspaces/${ws}/members/${m.userId}`)).status).toBe(204);
      expect(heard).toHaveLength(1);
      const [seen] = await Promise.all(heard);
      const rows = (seen as { rows: Array<{ revoked_at: unknown }> }).rows;
      expect(rows[0]?.revoked_at).not.toBeNull();
    } finally {
      failAfter = false;
      await stop();
    }
  });

  it.skipIf(!onServerPostgres())(
    "a key's scopes are checked against its creator's role in the same transaction as the update (C5)",
    async () => {
      const { owner, ws, others } = await workspace(['admin']);
      const [admin] = others;
      if (!admin) throw new Error('fixture');
      const { key } = await createKey(admin, ws, { scopes: ['models:read'] });
      // A demotion of the creator, written but not committed yet.
      let release: () => void = () => undefined;
      const gate = new Promise<void>((r) => {
        release = r;
      });
      let written: () => void = () => undefined;
      const demoting = new Promise<void>((r) => {
        written = r;
      });
      const demotion = app.db.tenant(ws, async (tx) => {
        await tx.execute(
          sql`update memberships set role = 'viewer' where workspace_id = ${ws} and user_id = ${admin.userId}`,
        );
        written();
        await gate;
      });
      await demoting;
      let settled = false;
      const update = app.modules.keys.service
        .updateKey({ scope: ownerScope(ws, owner), keyId: key.id, input: { scopes: ['billing:read'] } })
        .finally(() => {
          settled = true;
        });
      update.catch(() => undefined);
      // Wait until the update either finished or waits on the demotion's row lock.
      for (;;) {
        if (settled) break;
        const waiting = await app.db.query<{ n: number }>(
          // pg_locks and the pids of pg_stat_activity are visible to the app role (wait events are not).
          'select count(*)::int as n from pg_locks where not granted and pid in (select pid from pg_stat_activity where datname = current_database())',
        );
        if ((waiting[0]?.n ?? 0) > 0) break;
        await new Promise((r) => setImmediate(r));
      }
      release();
      await demotion;
      await expect(update).rejects.toMatchObject({ code: 'forbidden' });
      expect((await owner.get<KeyView>(`${keysUrl(ws)}/${key.id}`)).body.scopes).toEqual(['models:read']);
    },
  );
});
