import { sql } from 'drizzle-orm';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { startFakeOAuthServer } from '../../../test/fakes/oauth-server.ts';
import { useTestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { findEverywhere } from '../../../test/helpers/dump.ts';
import { logIn, makeOperator, type SignedInClient, signUp, testEmail, testIp } from '../../../test/helpers/identity.ts';
import { dataMap } from '../../app.ts';
import { DAY, MINUTE } from '../../platform/clock.ts';
import type { AgentView } from '../agents/index.ts';
import { generateAuditSigningKey } from '../audit/index.ts';
import { totpCodeAt } from '../identity/index.ts';
import { DELETION_GRACE_DAYS, ERASURE_JOB, EXPORT_BUILD_JOB, unruledColumns } from './index.ts';
import { erasePlan, unsafeClears } from './privacy.erasure.plan.ts';
import { erasureRepo } from './privacy.erasure.repo.ts';

const getApp = useTestApp({
  config: {
    BERTH_AUDIT_SIGNING_KEY: generateAuditSigningKey(),
    BERTH_SIGNUP_IP_MAX: 10_000,
    BERTH_EMAIL_IP_MAX: 10_000,
    // The OAuth authorization server the connection test starts listens on loopback.
    BERTH_EGRESS_ALLOW: '127.0.0.1',
  },
});

/** Raw SQL past row-level security (the table owner on server Postgres): what an operator with the database sees. */
async function asOwner<T extends Record<string, unknown>>(text: string, params: unknown[] = []): Promise<T[]> {
  const app = getApp();
  if (!app.testDb.url) return app.db.query<T>(text, params);
  const client = new pg.Client({ connectionString: app.testDb.url });
  await client.connect();
  try {
    return (await client.query(text, params)).rows as T[];
  } finally {
    await client.end();
  }
}

/** The cancel token of the deletion notice mailed to `email` (from the outbox). */
async function cancelToken(email: string): Promise<string> {
  const mails = await getApp().modules.notifications.service.listOutbox({ limit: 1000 });
  const mail = mails.find((m) => m.to === email && m.tag === 'privacy.deletion_scheduled');
  const token = /cancel-deletion\?token=([A-Za-z0-9_-]{43})/.exec(mail?.text ?? '')?.[1];
  if (!token) throw new Error('no deletion notice in the outbox');
  return token;
}

/** Confirms the address with the link mailed at sign-up: rows naming it by address are then the user's. */
async function verifyEmail(c: SignedInClient): Promise<void> {
  const mails = await getApp().modules.notifications.service.listOutbox({ limit: 1000 });
  const mail = mails.find((m) => m.to === c.email && m.tag === 'verify_email');
  const token = /token=([A-Za-z0-9_-]{43})/.exec(mail?.text ?? '')?.[1];
  if (!token) throw new Error('no verification mail in the outbox');
  const res = await new TestClient(getApp()).post('/api/auth/verify-email', { token });
  expect(res.status, res.text).toBe(200);
}

async function runErasure() {
  const app = getApp();
  await app.jobs.send(ERASURE_JOB, {});
  return app.jobs.drain(ERASURE_JOB);
}

async function person(label: string, opts: { ip?: string } = {}): Promise<SignedInClient & { displayName: string }> {
  const displayName = `Erasable ${label} ${testIp().replaceAll('.', '')}`;
  const c = await signUp(getApp(), { email: testEmail(label), displayName, ...opts });
  return Object.assign(c, { displayName });
}

/** A platform operator, signed in (they receive the operators' alerts). */
async function operator(): Promise<SignedInClient> {
  const app = getApp();
  const op = await person('operator');
  await makeOperator(app, op.userId);
  return logIn(app, op.email, op.password);
}

async function operatorMails(tag: string) {
  const mails = await getApp().modules.notifications.service.listOutbox({ limit: 1000 });
  return mails.filter((m) => m.tag === tag);
}

async function userStatus(userId: string): Promise<string | null> {
  const rows = await asOwner<{ status: string }>('select status from users where id = $1', [userId]);
  return rows[0]?.status ?? null;
}

describe('happy', () => {
  it('a deletion closes the account at once; after the grace period nothing of the user is left in any column', async () => {
    const app = getApp();
    const ip = testIp();
    const alice = await person('alice', { ip });
    await verifyEmail(alice);
    const bob = await person('bob');

    // Alice's own workspace with an API key and credits (billing records), and a membership in Bob's.
    const own = await alice.post<{ id: string; name: string }>('/api/workspaces', { name: 'Alice alone' });
    expect(own.status).toBe(201);
    const key = await alice.post<{ secret: string }>(`/api/workspaces/${own.body.id}/keys`, {
      name: 'alice key',
      scopes: ['gateway:invoke'],
    });
    expect(key.status).toBe(201);
    await app.modules.billing.ledger.grant({
      workspaceId: own.body.id,
      amountMicros: 5_000_000,
      idempotencyKey: `erasure-${own.body.id}`,
      actor: { type: 'user', userId: alice.userId },
      memo: 'starter credits',
    });
    const shared = await bob.post<{ id: string }>('/api/workspaces', { name: 'Bob and friends' });
    const bobScope = {
      workspaceId: shared.body.id,
      actor: { type: 'user' as const, userId: bob.userId },
      role: 'owner' as const,
    };
    const { token } = await app.modules.workspaces.service.invite({
      scope: bobScope,
      email: alice.email,
      role: 'admin',
    });
    await app.modules.workspaces.service.acceptInvitation({ token, userId: alice.userId });
    await bob.patch(`/api/workspaces/${shared.body.id}/members/${alice.userId}`, { role: 'member' });
    const aliceKeyInShared = await alice.post<{ secret: string }>(`/api/workspaces/${shared.body.id}/keys`, {
      name: 'alice key in shared',
      scopes: ['gateway:invoke'],
    });
    expect(aliceKeyInShared.status).toBe(201);

    // Queued jobs run (mail, usage), so what they write is scanned too.
    await app.jobs.drain();

    // A secret Berth keeps for Alice, encrypted under her data key.
    const vaultCtx = { owner: { type: 'user' as const, id: alice.userId }, record: 'test:erasure', field: 'secret' };
    const sealed = await app.modules.vault.service.encrypt(vaultCtx, 'alice private token');

    const requested = await alice.post<{ deletion: { status: string; eraseAfter: string; requestId: string } }>(
      '/api/me/deletion',
      { password: alice.password },
    );
    expect(requested.status).toBe(202);
    expect(requested.body.deletion.status).toBe('scheduled');
    expect(new Date(requested.body.deletion.eraseAfter).getTime()).toBe(
      app.clock.now().getTime() + DELETION_GRACE_DAYS * DAY,
    );

    // Closed at once: no session, no sign-in, no API key.
    expect((await alice.get('/api/me')).status).toBe(401);
    const login = await new TestClient(app).post('/api/auth/login', { email: alice.email, password: alice.password });
    expect(login.status).toBe(403);
    expect(login.body).toMatchObject({ code: 'account_disabled' });
    for (const k of [key.body.secret, aliceKeyInShared.body.secret]) {
      const self = await new TestClient(app).get('/api/keys/self', { authorization: `Bearer ${k}` });
      expect(self.status).toBe(401);
    }
    const live = await asOwner<{ n: number }>(
      'select count(*)::int as n from api_keys where created_by = $1 and revoked_at is null',
      [alice.userId],
    );
    expect(live[0]?.n).toBe(0);

    // The scan below finds what is there: before erasure, Alice is in the account and audit tables.
    expect(await findEverywhere(getApp(), [alice.email, ip])).toEqual(
      expect.arrayContaining([`public.users.email: ${alice.email}`, `public.audit_event_context.ip: ${ip}`]),
    );

    // One day before the end of the grace period nothing is erased.
    app.clock.advance(DELETION_GRACE_DAYS * DAY - DAY);
    await runErasure();
    expect(await userStatus(alice.userId)).toBe('closing');

    app.clock.advance(DAY + MINUTE);
    expect(await runErasure()).toMatchObject({ failed: 0 });
    expect(await userStatus(alice.userId)).toBeNull();

    // Nothing of Alice anywhere: not her id, email, name or the address she used.
    expect(await findEverywhere(getApp(), [alice.userId, alice.email, alice.displayName, ip])).toEqual([]);
    // Bob is untouched, and so is his workspace (his session expired meanwhile: he signs in again).
    expect(await userStatus(bob.userId)).toBe('active');
    const bobAgain = await logIn(app, bob.email, bob.password);
    expect((await bobAgain.get(`/api/workspaces/${shared.body.id}`)).status).toBe(200);

    // Crypto-shredding: her secret can no longer be decrypted.
    await expect(app.modules.vault.service.decrypt(vaultCtx, sealed)).rejects.toThrow();

    // Billing records stay (legal hold), naming her only by pseudonym.
    const pseudonym = app.modules.vault.service.pseudonym(alice.userId);
    const ledger = await asOwner<{ actor_id: string; amount_micros: string }>(
      `select actor_id, amount_micros::text from ledger_transactions where workspace_id = $1 and memo = 'starter credits'`,
      [own.body.id],
    );
    expect(ledger).toEqual([{ actor_id: pseudonym, amount_micros: '5000000' }]);

    // Her own workspace went with her; the erasure is in the platform audit chain, by pseudonym.
    expect(await asOwner('select id from workspaces where id = $1', [own.body.id])).toEqual([]);
    const erased = await asOwner<{ target_id: string }>(
      "select target_id from audit_events where chain = 'platform' and action = 'account.erased'",
    );
    expect(erased).toContainEqual({ target_id: pseudonym });
    for (const report of await app.modules.audit.service.verifyAll()) {
      expect(report, report.chain).toMatchObject({ ok: true });
    }

    // The erasure request is recorded as completed, by pseudonym.
    const requests = await asOwner<{ user_id: string; status: string }>(
      'select user_id, status from privacy_requests where id = $1',
      [requested.body.deletion.requestId],
    );
    expect(requests).toEqual([{ user_id: pseudonym, status: 'completed' }]);

    // Running the job again changes nothing.
    expect(await runErasure()).toMatchObject({ failed: 0 });

    // A later event naming her old id (an operator acting on it) does not map her pseudonym back.
    await app.db.system((tx) =>
      app.modules.audit.service.record(tx, {
        workspaceId: null,
        actor: { type: 'system', name: 'test' },
        action: 'user.looked_up',
        target: { type: 'user', id: alice.userId },
      }),
    );
    expect(await asOwner('select user_id from audit_subjects where pseudonym = $1', [pseudonym])).toEqual([]);
    expect(await findEverywhere(getApp(), [alice.userId])).toEqual([]);
  }, 180_000);

  it('erases a user with a history in every privacy record table, keeping the records’ status and dates', async () => {
    const app = getApp();
    const lee = await person('lee');
    let c: SignedInClient = lee;

    // Restricted, lifted, restricted again, lifted: two lifted rows (a null lifted_at would make both "active").
    for (let i = 0; i < 2; i++) {
      expect((await c.post('/api/me/privacy/restriction')).status).toBe(200);
      app.clock.advance(MINUTE);
      expect((await c.delete('/api/me/privacy/restriction')).status).toBe(200);
      app.clock.advance(MINUTE);
    }
    expect((await c.post('/api/me/privacy/consents/marketing_email', { textVersion: '2026-01' })).status).toBeLessThan(
      300,
    );
    expect((await c.delete('/api/me/privacy/consents/marketing_email')).status).toBeLessThan(300);
    expect((await c.put('/api/me/privacy/objections', { objections: { product_analytics: true } })).status).toBe(200);
    const exported = await c.post<{ id: string }>('/api/me/privacy/exports');
    expect(exported.status).toBe(202);
    await app.jobs.drain(EXPORT_BUILD_JOB);
    expect((await c.get<{ status: string }>(`/api/me/privacy/exports/${exported.body.id}`)).body.status).toBe('ready');

    // Deletion asked for, cancelled, asked for again: a cancelled row (cancelled_at required) stays beside it.
    const first = await c.post<{ deletion: { id: string } }>('/api/me/deletion', { password: lee.password });
    expect(first.status).toBe(202);
    const cancelled = await new TestClient(app).post('/api/privacy/deletion/cancel', {
      token: await cancelToken(lee.email),
    });
    expect(cancelled.status).toBe(200);
    c = await logIn(app, lee.email, lee.password);
    app.clock.advance(MINUTE);
    const second = await c.post<{ deletion: { id: string } }>('/api/me/deletion', { password: lee.password });
    expect(second.status).toBe(202);

    const requestsBefore = await asOwner<{ id: string; type: string; status: string; completed_at: Date | null }>(
      'select id, type, status, completed_at from privacy_requests where user_id = $1 order by received_at, id',
      [lee.userId],
    );
    expect(requestsBefore.length).toBeGreaterThanOrEqual(6);

    app.clock.advance(DELETION_GRACE_DAYS * DAY + MINUTE);
    expect(await runErasure()).toMatchObject({ failed: 0 });
    expect(await userStatus(lee.userId)).toBeNull();
    expect(await findEverywhere(getApp(), [lee.userId, lee.email, lee.displayName])).toEqual([]);

    // The records stay under the pseudonym, with their status and dates.
    const pseudonym = app.modules.vault.service.pseudonym(lee.userId);
    const requestsAfter = await asOwner<{ id: string; type: string; status: string; completed_at: Date | null }>(
      'select id, type, status, completed_at from privacy_requests where user_id = $1 order by received_at, id',
      [pseudonym],
    );
    expect(requestsAfter.map((r) => r.id)).toEqual(requestsBefore.map((r) => r.id));
    for (const r of requestsAfter) {
      if (r.status === 'completed' || r.status === 'cancelled' || r.status === 'rejected') {
        expect(r.completed_at, `${r.type} ${r.status}`).not.toBeNull();
      }
    }
    expect(requestsAfter.find((r) => r.type === 'erasure' && r.status === 'completed')).toBeDefined();
    expect(requestsAfter.find((r) => r.type === 'erasure' && r.status === 'cancelled')).toBeDefined();
    const restrictions = await asOwner<{ lifted_at: Date | null }>(
      'select lifted_at from privacy_restrictions where user_id = $1',
      [pseudonym],
    );
    expect(restrictions.length).toBe(2);
    expect(restrictions.every((r) => r.lifted_at !== null)).toBe(true);
    const deletions = await asOwner<{ id: string; status: string; cancelled_at: Date | null; erased_at: Date | null }>(
      'select id, status, cancelled_at, erased_at from account_deletions where user_id = $1 order by requested_at',
      [pseudonym],
    );
    expect(deletions).toMatchObject([
      { id: first.body.deletion.id, status: 'cancelled', cancelled_at: expect.any(Date), erased_at: null },
      { id: second.body.deletion.id, status: 'erased', cancelled_at: null, erased_at: expect.any(Date) },
    ]);
    expect(await asOwner('select id from privacy_exports where id = $1', [exported.body.id])).toEqual([]);
  }, 120_000);

  it('the emailed link cancels the deletion within the grace period and the user signs in again', async () => {
    const app = getApp();
    const carol = await person('carol');
    const res = await carol.post<{ deletion: { requestId: string } }>('/api/me/deletion', { password: carol.password });
    expect(res.status).toBe(202);
    const token = await cancelToken(carol.email);

    app.clock.advance(DELETION_GRACE_DAYS * DAY - MINUTE);
    const cancelled = await new TestClient(app).post<{ deletion: { status: string } }>('/api/privacy/deletion/cancel', {
      token,
    });
    expect(cancelled.status).toBe(200);
    expect(cancelled.body.deletion.status).toBe('cancelled');
    const again = await logIn(app, carol.email, carol.password);
    expect((await again.get<{ user: { id: string } }>('/api/me')).body.user.id).toBe(carol.userId);

    // The link worked once; the erasure job leaves the account alone.
    const reused = await new TestClient(app).post('/api/privacy/deletion/cancel', { token });
    expect(reused.status).toBe(400);
    expect(reused.body).toMatchObject({ code: 'invalid_token' });
    app.clock.advance(2 * DAY);
    await runErasure();
    expect(await userStatus(carol.userId)).toBe('active');
    const request = await asOwner<{ status: string }>('select status from privacy_requests where id = $1', [
      res.body.deletion.requestId,
    ]);
    expect(request).toEqual([{ status: 'cancelled' }]);
  });

  it('deleting a workspace removes the rows of every table the map says name it, keeps its billing records and shreds its key', async () => {
    const app = getApp();
    const dave = await person('dave');
    const ws = await dave.post<{ id: string; name: string }>('/api/workspaces', { name: 'Short lived' });
    const workspaceId = ws.body.id;
    await app.modules.billing.ledger.grant({
      workspaceId,
      amountMicros: 1_000_000,
      idempotencyKey: `ws-erasure-${workspaceId}`,
      actor: { type: 'user', userId: dave.userId },
    });
    // A usage event: its table has no foreign key to workspaces, only the data map links them.
    await app.db.tenant(workspaceId, (tx) =>
      tx.execute(sql`insert into usage_events (id, workspace_id, key_id, user_id, request_id, endpoint, provider, model,
          status, error_code, stream, latency_ms, ttft_ms, input_tokens, output_tokens, cached_tokens, reasoning_tokens,
          estimated, cost_micros, attempts, created_at)
        values (${`use_${workspaceId.slice(3)}`}, ${workspaceId}, null, ${dave.userId}, 'req_erasure', 'chat', null, 'm',
          200, null, false, 5, null, 1, 1, 0, 0, false, 0, 1, ${app.clock.now()})`),
    );
    const ctx = { owner: { type: 'workspace' as const, id: workspaceId }, record: 'test:ws', field: 'secret' };
    const sealed = await app.modules.vault.service.encrypt(ctx, 'workspace secret');
    const before = await asOwner<{ n: number }>(
      'select count(*)::int as n from audit_event_context where workspace_id = $1',
      [workspaceId],
    );
    expect(before[0]?.n).toBeGreaterThan(0);
    const ledgerCount = () =>
      asOwner<{ n: number }>('select count(*)::int as n from ledger_transactions where workspace_id = $1', [
        workspaceId,
      ]);
    const ledgerBefore = (await ledgerCount())[0]?.n ?? 0;
    expect(ledgerBefore).toBeGreaterThan(0);

    const del = await dave.delete(`/api/workspaces/${workspaceId}`, { confirmName: 'Short lived' });
    expect(del.status).toBeLessThan(300);

    const plan = erasePlan(dataMap(app.modules));
    for (const { table, column } of plan.workspace) {
      const left = await asOwner<{ n: number }>(`select count(*)::int as n from "${table}" where "${column}" = $1`, [
        workspaceId,
      ]);
      expect(left[0]?.n, `${table}.${column}`).toBe(0);
    }
    expect(plan.workspace.map((w) => w.table)).toEqual(expect.arrayContaining(['usage_events', 'audit_event_context']));
    expect((await ledgerCount())[0]?.n).toBe(ledgerBefore);
    await expect(app.modules.vault.service.decrypt(ctx, sealed)).rejects.toThrow();
  });
  it('deleting a workspace removes its OAuth providers, connections and tokens, agents, secrets and MCP servers, and shreds their ciphertext', async () => {
    const app = getApp();
    const oauth = await startFakeOAuthServer({ redirectUri: 'http://berth.test/api/oauth/callback' });
    try {
      const owner = await person('oscar');
      const tag = owner.userId.slice(-10).toLowerCase();
      const name = `Tools ${tag}`;
      const ws = await owner.post<{ id: string }>('/api/workspaces', { name });
      expect(ws.status).toBe(201);
      const workspaceId = ws.body.id;
      const base = `/api/workspaces/${workspaceId}`;

      // A provider, the owner's connection made through the real authorization code flow, and
      // an authorization left half-way (its PKCE verifier is ciphertext too).
      const provider = await owner.post<{ id: string }>(`${base}/oauth-providers`, {
        name: `prov-${tag}`,
        authorizationUrl: oauth.authorizationUrl,
        tokenUrl: oauth.tokenUrl,
        revocationUrl: oauth.revocationUrl,
        clientId: oauth.clientId,
        clientSecret: oauth.clientSecret,
        scopes: ['openid', 'offline_access'],
      });
      expect(provider.status, provider.text).toBe(201);
      const start = await owner.post<{ authorizationUrl: string }>(`${base}/connections/prov-${tag}/authorize`, {});
      expect(start.status, start.text).toBe(200);
      const callback = await oauth.authorize(start.body.authorizationUrl);
      const connected = await owner.get<{ id: string }>(`${callback.pathname}${callback.search}`);
      expect(connected.status, connected.text).toBe(200);
      const connectionId = connected.body.id;
      const pending = await owner.post(`${base}/connections/prov-${tag}/authorize`, {});
      expect(pending.status, pending.text).toBe(200);

      // An agent, a secret and an MCP server with a credential header.
      const agent = await owner.post<AgentView>(`${base}/agents`, {
        name: `agent-${tag}`,
        model: 'gpt-4o-mini',
        instructions: `Instructions ${tag}`,
      });
      expect(agent.status, agent.text).toBe(201);
      expect((await owner.post(`${base}/agents/${agent.body.id}/publish`)).status).toBeLessThan(300);
      const secret = await owner.put(`${base}/secrets/SECRET_${tag.toUpperCase()}`, {
        value: `secret value ${tag}`,
        allowedHosts: ['api.example.com'],
      });
      expect(secret.status, secret.text).toBe(200);
      const mcp = await owner.post<{ id: string }>(`${base}/mcp-servers`, {
        name: `mcp-${tag}`,
        url: `https://mcp-${tag}.example.com/mcp`,
        headers: { authorization: `Bearer mcp-${tag}` },
      });
      expect(mcp.status, mcp.text).toBe(201);

      // Every ciphertext, read as stored, and the context it opens under (the workspace's key).
      const wsOwner = { type: 'workspace' as const, id: workspaceId };
      const bytes = (v: unknown) => Buffer.from(v as Uint8Array);
      const sealed: Array<{ what: string; ctx: Parameters<typeof app.modules.vault.service.decrypt>[0]; ct: Buffer }> =
        [];
      const [tokens] = await asOwner<{ access: unknown; refresh: unknown }>(
        `select access_token_ciphertext as access, refresh_token_ciphertext as refresh
           from oauth_connection_tokens where connection_id = $1`,
        [connectionId],
      );
      if (!tokens?.refresh) throw new Error('the connection has no stored refresh token');
      sealed.push(
        {
          what: 'access token',
          ctx: { owner: wsOwner, record: connectionId, field: 'access_token' },
          ct: bytes(tokens.access),
        },
        {
          what: 'refresh token',
          ctx: { owner: wsOwner, record: connectionId, field: 'refresh_token' },
          ct: bytes(tokens.refresh),
        },
      );
      const [client] = await asOwner<{ ct: unknown }>(
        'select client_secret_ciphertext as ct from oauth_providers where id = $1',
        [provider.body.id],
      );
      sealed.push({
        what: 'client secret',
        ctx: { owner: wsOwner, record: provider.body.id, field: 'oauth_client_secret' },
        ct: bytes(client?.ct),
      });
      const authorizations = await asOwner<{ id: string; ct: unknown }>(
        'select id, code_verifier_ciphertext as ct from oauth_authorizations where workspace_id = $1',
        [workspaceId],
      );
      expect(authorizations.length).toBe(2);
      for (const a of authorizations) {
        sealed.push({
          what: `verifier ${a.id}`,
          ctx: { owner: wsOwner, record: a.id, field: 'pkce_verifier' },
          ct: bytes(a.ct),
        });
      }
      const [stored] = await asOwner<{ id: string; ct: unknown }>(
        'select id, value_ciphertext as ct from agent_secrets where workspace_id = $1',
        [workspaceId],
      );
      if (!stored) throw new Error('no secret row');
      sealed.push({
        what: 'secret',
        ctx: { owner: wsOwner, record: stored.id, field: 'agent_secret_value' },
        ct: bytes(stored.ct),
      });
      const [headers] = await asOwner<{ ct: unknown }>(
        'select headers_ciphertext as ct from agent_mcp_servers where id = $1',
        [mcp.body.id],
      );
      sealed.push({
        what: 'mcp headers',
        ctx: { owner: wsOwner, record: mcp.body.id, field: 'mcp_headers' },
        ct: bytes(headers?.ct),
      });

      // Before: the rows are there and every ciphertext opens (so the checks below can fail).
      const { accessToken } = await app.modules.connections.service.accessToken(connectionId, {
        workspaceId,
        userId: owner.userId,
      });
      const plain = new Map<string, string>();
      for (const s of sealed) plain.set(s.what, await app.modules.vault.service.decryptString(s.ctx, s.ct));
      expect(plain.get('access token')).toBe(accessToken);
      expect(plain.get('client secret')).toBe(oauth.clientSecret);
      expect(plain.get('secret')).toBe(`secret value ${tag}`);
      const tables = [
        'oauth_providers',
        'oauth_authorizations',
        'oauth_connections',
        'oauth_connection_tokens',
        'agents',
        'agent_versions',
        'agent_secrets',
        'agent_mcp_servers',
      ];
      const rows = async (table: string) =>
        (
          await asOwner<{ n: number }>(`select count(*)::int as n from "${table}" where workspace_id = $1`, [
            workspaceId,
          ])
        )[0]?.n;
      for (const table of tables) expect(await rows(table), table).toBeGreaterThan(0);
      // (The workspace id itself stays in its billing records, legal hold, and its destroyed key's record.)
      const ids = [provider.body.id, connectionId, agent.body.id, stored.id, mcp.body.id];
      const names = [
        name,
        `prov-${tag}`,
        `agent-${tag}`,
        `Instructions ${tag}`,
        `SECRET_${tag.toUpperCase()}`,
        `mcp-${tag}`,
      ];
      // The scan finds each of them before, so finding none after means they are gone.
      const found = await findEverywhere(getApp(), [...ids, ...names]);
      for (const needle of [...ids, ...names]) {
        expect(
          found.some((hit) => hit.endsWith(`: ${needle}`)),
          needle,
        ).toBe(true);
      }

      const del = await owner.delete(base, { confirmName: name });
      expect(del.status, del.text).toBeLessThan(300);

      for (const table of tables) expect(await rows(table), table).toBe(0);
      // Nothing of these rows anywhere: not an id, not a name the workspace gave them.
      expect(await findEverywhere(getApp(), [...ids, ...names])).toEqual([]);
      // Crypto-shredding: the workspace's data key is gone, so no copy of a ciphertext (a backup) opens.
      for (const s of sealed) {
        await expect(app.modules.vault.service.decrypt(s.ctx, s.ct), s.what).rejects.toThrow();
      }
      // Nor does the gone connection hand out a token.
      await expect(
        app.modules.connections.service.accessToken(connectionId, { workspaceId, userId: owner.userId }),
      ).rejects.toThrow();
    } finally {
      await oauth.close();
    }
  }, 120_000);
});

describe('errors', () => {
  it('refuses without re-authentication and changes nothing', async () => {
    const app = getApp();
    const erin = await person('erin');
    const missing = await erin.post('/api/me/deletion', {});
    expect(missing.status).toBe(401);
    expect(missing.body).toMatchObject({ code: 'reauthentication_required' });
    const wrong = await erin.post('/api/me/deletion', { password: `${erin.password}-wrong` });
    expect(wrong.status).toBe(401);
    expect(wrong.body).toMatchObject({ code: 'invalid_credentials' });
    const anonymous = await new TestClient(app).post('/api/me/deletion', { password: erin.password });
    expect(anonymous.status).toBe(401);

    expect((await erin.get('/api/me')).status).toBe(200);
    expect(await userStatus(erin.userId)).toBe('active');
    expect(await asOwner('select id from account_deletions where user_id = $1', [erin.userId])).toEqual([]);
  });

  it('with two-factor authentication on, asks for a current code too, then removes the factor', async () => {
    const app = getApp();
    const fay = await person('fay');
    const started = await fay.post<{ secret: string }>('/api/me/mfa/totp');
    expect(started.status).toBe(200);
    const confirm = await fay.post('/api/me/mfa/totp/confirm', {
      code: totpCodeAt(started.body.secret, app.clock.now()),
    });
    expect(confirm.status).toBe(200);
    app.clock.advance(MINUTE);

    const noCode = await fay.post('/api/me/deletion', { password: fay.password });
    expect(noCode.status).toBe(401);
    expect(noCode.body).toMatchObject({ code: 'reauthentication_required' });
    const badCode = await fay.post('/api/me/deletion', { password: fay.password, code: '000000' });
    expect(badCode.status).toBe(400);
    expect(badCode.body).toMatchObject({ code: 'invalid_mfa_code' });
    expect(await userStatus(fay.userId)).toBe('active');

    const ok = await fay.post('/api/me/deletion', {
      password: fay.password,
      code: totpCodeAt(started.body.secret, app.clock.now()),
    });
    expect(ok.status).toBe(202);
    expect(await asOwner('select id from mfa_totp where user_id = $1', [fay.userId])).toEqual([]);
    expect(await asOwner('select id from sessions where user_id = $1 and revoked_at is null', [fay.userId])).toEqual(
      [],
    );
  });

  it('a sole owner of a workspace with other members must hand it over first (409 sole_owner)', async () => {
    const app = getApp();
    const gus = await person('gus');
    const hal = await person('hal');
    const ws = await gus.post<{ id: string }>('/api/workspaces', { name: 'Gus and Hal' });
    const scope = {
      workspaceId: ws.body.id,
      actor: { type: 'user' as const, userId: gus.userId },
      role: 'owner' as const,
    };
    const { token } = await app.modules.workspaces.service.invite({ scope, email: hal.email, role: 'member' });
    await app.modules.workspaces.service.acceptInvitation({ token, userId: hal.userId });

    const res = await gus.post('/api/me/deletion', { password: gus.password });
    expect(res.status).toBe(409);
    expect(res.body).toMatchObject({ code: 'sole_owner' });
    expect(JSON.stringify(res.body)).toContain(ws.body.id);
    expect((await gus.get('/api/me')).status).toBe(200);
    expect(await asOwner('select id from account_deletions where user_id = $1', [gus.userId])).toEqual([]);
  });

  it('a second request while a deletion is scheduled is refused (409 deletion_pending)', async () => {
    const app = getApp();
    const ida = await person('ida');
    const auth = {
      kind: 'session' as const,
      userId: ida.userId,
      sessionId: 'ses_x',
      mfaEnabled: false,
      isOperator: false,
    };
    const meta = { ip: '127.0.0.1', userAgent: null, requestId: 'req_test' };
    const erasure = app.modules.privacy.service.erasure;
    await erasure.requestDeletion(auth, { password: ida.password }, meta);
    await expect(erasure.requestDeletion(auth, { password: ida.password }, meta)).rejects.toMatchObject({
      code: 'deletion_pending',
    });
    const rows = await asOwner('select id from account_deletions where user_id = $1', [ida.userId]);
    expect(rows.length).toBe(1);
  });

  it('an erasure that fails is retried with a backoff after the others, and the operators are told once', async () => {
    const app = getApp();
    await operator();
    const stuck = await person('stuck');
    const other = await person('other');
    const stuckDeletion = await stuck.post<{ deletion: { id: string } }>('/api/me/deletion', {
      password: stuck.password,
    });
    app.clock.advance(MINUTE);
    expect((await other.post('/api/me/deletion', { password: other.password })).status).toBe(202);

    // The database refuses to delete the stuck account (as a broken constraint would).
    const fn = `erasure_block_${stuck.userId.slice(-12).toLowerCase()}`;
    await asOwner(`create function ${fn}() returns trigger language plpgsql as $$
      begin if old.id = '${stuck.userId}' then raise exception 'blocked by the test'; end if; return old; end $$`);
    await asOwner(`create trigger ${fn} before delete on users for each row execute function ${fn}()`);
    try {
      app.clock.advance(DELETION_GRACE_DAYS * DAY);
      // The older deletion fails; the run goes on, erases the other and does not fail itself.
      expect(await runErasure()).toMatchObject({ failed: 0 });
      expect(await userStatus(other.userId)).toBeNull();
      expect(await userStatus(stuck.userId)).toBe('closing');
      const row = async () =>
        (
          await asOwner<{ status: string; attempts: number; last_error_at: Date | null }>(
            'select status, attempts, last_error_at from account_deletions where id = $1',
            [stuckDeletion.body.deletion.id],
          )
        )[0];
      expect(await row()).toMatchObject({ status: 'scheduled', attempts: 1, last_error_at: expect.any(Date) });
      const alerts = await operatorMails('privacy.erasure_failed');
      expect(alerts.filter((m) => m.text.includes(stuckDeletion.body.deletion.id)).length).toBeGreaterThan(0);
      const sent = alerts.length;
      for (const text of [...alerts.map((m) => `${m.subject}\n${m.text}`), ...app.logs]) {
        expect(text).not.toContain(stuck.email);
      }
      expect(app.logs.filter((l) => l.includes('erasure failed')).join('\n')).not.toContain(stuck.userId);

      // Within its backoff it is not tried again.
      await runErasure();
      expect((await row())?.attempts).toBe(1);

      // A later deletion, due with it after the backoff, goes first; the failing one is retried, not alerted again.
      const late = await person('late');
      const lateDeletion = await late.post<{ deletion: { id: string } }>('/api/me/deletion', {
        password: late.password,
      });
      app.clock.advance(61 * MINUTE);
      await runErasure();
      expect((await row())?.attempts).toBe(2);
      expect((await operatorMails('privacy.erasure_failed')).length).toBe(sent);
      app.clock.advance(DELETION_GRACE_DAYS * DAY);
      const due = await app.db.system((tx) => erasureRepo.due(tx, app.clock.now(), 100));
      const order = due
        .map((d) => d.id)
        .filter((id) => id === lateDeletion.body.deletion.id || id === stuckDeletion.body.deletion.id);
      expect(order).toEqual([lateDeletion.body.deletion.id, stuckDeletion.body.deletion.id]);
    } finally {
      await asOwner(`drop trigger if exists ${fn} on users`);
      await asOwner(`drop function if exists ${fn}()`);
    }
    // Once the cause is gone, the next run erases it.
    expect(await runErasure()).toMatchObject({ failed: 0 });
    expect(await userStatus(stuck.userId)).toBeNull();
  }, 120_000);

  it('an operator can neither enable nor disable an account closed for deletion; cancelling reopens it', async () => {
    const app = getApp();
    const op = await operator();
    const max = await person('max');
    expect((await max.post('/api/me/deletion', { password: max.password })).status).toBe(202);
    for (const action of ['enable', 'disable']) {
      const res = await op.post(`/api/operator/users/${max.userId}/${action}`);
      expect(res.status, action).toBe(409);
      expect(res.body).toMatchObject({ code: 'deletion_pending' });
    }
    expect(await userStatus(max.userId)).toBe('closing');
    expect(await asOwner('select status from account_deletions where user_id = $1', [max.userId])).toEqual([
      { status: 'scheduled' },
    ]);
    const cancelled = await new TestClient(app).post('/api/privacy/deletion/cancel', {
      token: await cancelToken(max.email),
    });
    expect(cancelled.status).toBe(200);
    expect(await userStatus(max.userId)).toBe('active');
  });

  it("cancelling a deletion never lifts an operator's ban", async () => {
    const app = getApp();
    const op = await operator();
    const ned = await person('ned');
    const auth = {
      kind: 'session' as const,
      userId: ned.userId,
      sessionId: 'ses_x',
      mfaEnabled: false,
      isOperator: false,
    };
    const meta = { ip: '127.0.0.1', userAgent: null, requestId: 'req_test' };
    expect((await op.post(`/api/operator/users/${ned.userId}/disable`)).status).toBe(200);
    // A deletion racing the ban does not close (and so could not later reopen) the banned account.
    await expect(
      app.modules.privacy.service.erasure.requestDeletion(auth, { password: ned.password }, meta),
    ).rejects.toMatchObject({ code: 'account_disabled' });
    expect(await asOwner('select id from account_deletions where user_id = $1', [ned.userId])).toEqual([]);
    // Reopening reopens only an account the deletion closed.
    await app.modules.identity.service.reopenAccount(ned.userId, null, async () => undefined);
    expect(await userStatus(ned.userId)).toBe('disabled');
    expect((await op.post(`/api/operator/users/${ned.userId}/enable`)).status).toBe(200);
    expect(await userStatus(ned.userId)).toBe('active');
  });

  it('the cancel link is refused when unknown or once the grace period is over', async () => {
    const app = getApp();
    const junk = await new TestClient(app).post('/api/privacy/deletion/cancel', { token: 'not-a-token' });
    expect(junk.status).toBe(400);
    expect(junk.body).toMatchObject({ code: 'invalid_token' });
    const jay = await person('jay');
    expect((await jay.post('/api/me/deletion', { password: jay.password })).status).toBe(202);
    const token = await cancelToken(jay.email);
    app.clock.advance(DELETION_GRACE_DAYS * DAY);
    const late = await new TestClient(app).post('/api/privacy/deletion/cancel', { token });
    expect(late.status).toBe(400);
    expect(late.body).toMatchObject({ code: 'token_expired' });
    expect(await userStatus(jay.userId)).toBe('closing');
  });
});

describe('security', () => {
  it('every personal column of the data map has an erase rule, and erasure reaches every table naming a user', () => {
    const map = dataMap(getApp().modules);
    expect(unruledColumns(map)).toEqual([]);
    const plan = erasePlan(map);
    const tables = plan.user.map((t) => t.table);
    expect(tables.at(-1)).toBe('users');
    expect(tables).toEqual(expect.arrayContaining(['sessions', 'security_events', 'memberships', 'audit_subjects']));
    // The audit log itself is never changed by erasure (append-only, hash-chained).
    expect(tables).not.toContain('audit_events');
  });

  it('erasure sets no column to null that is NOT NULL or that a CHECK constraint or partial index reads', async () => {
    const app = getApp();
    const facts = await app.db.system((tx) => erasureRepo.columnFacts(tx));
    // The live schema is read: the record tables' constrained columns are seen as such.
    expect(facts.get('privacy_requests.completed_at')).toMatchObject({ nullable: true, constrained: true });
    expect(facts.get('privacy_restrictions.lifted_at')).toMatchObject({ nullable: true, constrained: true });
    expect(facts.get('account_deletions.cancelled_at')).toMatchObject({ nullable: true, constrained: true });
    expect(facts.get('privacy_requests.details')).toMatchObject({ nullable: true });
    expect(unsafeClears(erasePlan(dataMap(app.modules)), facts)).toEqual([]);
    // And the check does catch such a rule.
    const map = dataMap(app.modules).map((t) =>
      t.table === 'privacy_restrictions'
        ? { ...t, columns: { ...t.columns, lifted_at: { category: 'account' as const, personal: true } } }
        : t,
    );
    expect(unsafeClears(erasePlan(map), facts)).toEqual([{ table: 'privacy_restrictions', column: 'lifted_at' }]);
  });

  it('the cancel token never reaches the logs', async () => {
    const app = getApp();
    const kim = await person('kim');
    expect((await kim.post('/api/me/deletion', { password: kim.password })).status).toBe(202);
    const token = await cancelToken(kim.email);
    expect(app.logs.join('\n')).not.toContain(token);
    expect(app.logs.join('\n')).not.toContain(kim.password);
  });
});
