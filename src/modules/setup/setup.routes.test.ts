import { sql } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { logIn } from '../../../test/helpers/identity.ts';
import { SCOPES } from '../keys/index.ts';

let app: TestApp;
beforeEach(async () => {
  app = await createTestApp();
});
afterEach(async () => {
  await app.close();
});

/** Row counts of everything first-run setup writes, read across workspaces. */
async function counts() {
  return app.db.system(async (tx) => {
    const res = (await tx.execute(sql`select
      (select count(*) from users)::int as users,
      (select count(*) from security_events)::int as security_events,
      (select count(*) from workspaces)::int as workspaces,
      (select count(*) from memberships)::int as memberships,
      (select count(*) from audit_events)::int as audit_events,
      (select count(*) from api_keys)::int as api_keys,
      (select count(*) from api_key_secrets)::int as api_key_secrets`)) as unknown as {
      rows: Array<Record<string, number>>;
    };
    return res.rows[0];
  });
}

const body = (token: string, email = 'first@example.com') => ({
  token,
  email,
  password: 'a long enough passphrase',
  workspaceName: 'First team',
});

describe('happy', () => {
  it('the setup token printed at start creates the first operator and workspace, once', async () => {
    const hint = await app.modules.setup.service.setupHint('http://berth.test');
    expect(hint?.text).toContain('/api/setup');
    const anon = new TestClient(app);
    const res = await anon.post<{ userId: string; workspaceId: string; apiKey: string }>(
      '/api/setup',
      body(hint?.token ?? ''),
    );
    expect(res.status).toBe(201);
    expect(res.body.userId).toMatch(/^usr_/);
    expect(res.body.workspaceId).toMatch(/^ws_/);

    // A one-time API key with every scope for the new workspace, shown once and usable at once.
    expect(res.body.apiKey).toMatch(/^brt_live_/);
    const keyed = new TestClient(app, { origin: null });
    keyed.headers = { authorization: `Bearer ${res.body.apiKey}` };
    const self = await keyed.get<{ workspaceId: string; scopes: string[] }>('/api/keys/self');
    expect(self.body.workspaceId).toBe(res.body.workspaceId);
    expect(self.body.scopes).toEqual([...SCOPES]);
    expect((await keyed.get(`/api/workspaces/${res.body.workspaceId}/members`)).status).toBe(200);

    // The key belongs to the new user; its creation is attributed to the system (setup).
    const keyEvent = await app.db.system(async (tx) => {
      const res = (await tx.execute(sql`select e.actor_type, e.actor_id, k.created_by
        from audit_events e join api_keys k on k.id = e.target_id where e.action = 'key.created'`)) as unknown as {
        rows: Array<Record<string, string>>;
      };
      return res.rows;
    });
    expect(keyEvent).toEqual([{ actor_type: 'system', actor_id: 'setup', created_by: res.body.userId }]);

    const admin = await logIn(app, 'first@example.com', 'a long enough passphrase');
    const me = await admin.get<{ user: { isOperator: boolean; emailVerified: boolean } }>('/api/me');
    expect(me.body.user).toMatchObject({ isOperator: true, emailVerified: true });
    const list = await admin.get<{ data: Array<{ id: string }> }>('/api/workspaces');
    expect(JSON.stringify(list.body)).toContain(res.body.workspaceId);

    // Once an operator exists there is no hint, and the token is spent.
    expect(await app.modules.setup.service.setupHint('http://berth.test')).toBeNull();
    const again = await anon.post('/api/setup', body(hint?.token ?? '', 'second@example.com'));
    expect(again.status).toBe(400);
    expect(again.body.code).toBe('invalid_token');
  });
});

describe('errors', () => {
  it('refuses a wrong token, and any token before one was issued', async () => {
    const anon = new TestClient(app);
    const early = await anon.post('/api/setup', body('made-up'));
    expect(early.status).toBe(400);
    expect(early.body.code).toBe('invalid_token');
    await app.modules.setup.service.setupHint('http://berth.test');
    const wrong = await anon.post('/api/setup', body('made-up'));
    expect(wrong.body.code).toBe('invalid_token');
  });

  it('validates the body and leaves the token usable after a refused attempt', async () => {
    const hint = await app.modules.setup.service.setupHint('http://berth.test');
    const anon = new TestClient(app);
    const weak = await anon.post('/api/setup', { ...body(hint?.token ?? ''), password: 'short' });
    expect(weak.status).toBe(400);
    expect(weak.body.code).toBe('weak_password');
    const extra = await anon.post('/api/setup', { ...body(hint?.token ?? ''), admin: true });
    expect(extra.body.code).toBe('validation_failed');
    const ok = await anon.post('/api/setup', body(hint?.token ?? ''));
    expect(ok.status).toBe(201);
  });

  it('is all or nothing: when the key cannot be created, nothing remains and the token still works', async () => {
    const hint = await app.modules.setup.service.setupHint('http://berth.test');
    const before = await counts();
    const keys = app.modules.keys.service;
    const createKey = keys.createKey.bind(keys);
    // The key's rows and event are written, then the step fails: everything must roll back.
    const spy = vi.spyOn(keys, 'createKey').mockImplementationOnce(async (args) => {
      await createKey(args);
      throw new Error('key store unavailable');
    });
    const anon = new TestClient(app);
    const failed = await anon.post('/api/setup', body(hint?.token ?? ''));
    expect(failed.status).toBe(500);
    expect(spy).toHaveBeenCalledTimes(1);
    expect(await counts()).toEqual(before);
    expect(await app.modules.identity.service.findUserByEmail('first@example.com')).toBeNull();
    expect(await app.modules.identity.service.countOperators()).toBe(0);

    const ok = await anon.post<{ userId: string }>('/api/setup', body(hint?.token ?? ''));
    expect(ok.status).toBe(201);
    expect(ok.body.userId).toMatch(/^usr_/);
  });
});
