import { verify } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { makeOperator, type SignedInClient, signUp, testEmail } from '../../../test/helpers/identity.ts';
import { MINUTE } from '../../platform/clock.ts';
import type { AuditEventView, CheckpointView, VerifyReport } from './index.ts';
import { checkpointMessage, generateAuditSigningKey, hashEvent } from './index.ts';

type Page = { data: AuditEventView[]; nextCursor: string | null };

let app: TestApp;
let owner: SignedInClient;
let ws: string;
let start: Date;

beforeAll(async () => {
  app = await createTestApp({ config: { BERTH_AUDIT_SIGNING_KEY: generateAuditSigningKey() } });
  start = app.clock.now();
  owner = await signUp(app, { displayName: 'Owner' });
  ws = (await owner.post<{ id: string }>('/api/workspaces', { name: 'Audited' })).body.id;
  for (let i = 0; i < 4; i++) {
    app.clock.advance(MINUTE);
    await owner.patch(`/api/workspaces/${ws}`, { name: `Audited ${i}` });
  }
  app.clock.advance(MINUTE);
  await owner.post(`/api/workspaces/${ws}/invitations`, { email: testEmail('inv'), role: 'viewer' });
});
afterAll(async () => {
  await app.close();
});

const base = () => `/api/workspaces/${ws}/audit`;

describe('happy', () => {
  it('lists newest first with who, from where, what and the hash chain', async () => {
    const res = await owner.get<Page>(base());
    expect(res.status).toBe(200);
    expect(res.body.data.map((e) => e.action)).toEqual([
      'invitation.created',
      'workspace.renamed',
      'workspace.renamed',
      'workspace.renamed',
      'workspace.renamed',
      'workspace.created',
    ]);
    const renamed = res.body.data[1];
    expect(renamed).toMatchObject({
      seq: 5,
      actor: { type: 'user', id: owner.userId, userId: owner.userId, ip: '127.0.0.1' },
      target: { type: 'workspace', id: ws },
      outcome: 'success',
      diff: { name: 'Audited 3' },
    });
    expect(renamed?.requestId).toMatch(/^req_/);
    expect(res.body.data[0]?.prevHash).toBe(renamed?.hash);
  });

  it('pages with an opaque cursor, without gaps or repeats', async () => {
    const seen: number[] = [];
    let url = `${base()}?limit=2`;
    for (;;) {
      const res = await owner.get<Page>(url);
      expect(res.status).toBe(200);
      seen.push(...res.body.data.map((e) => e.seq));
      if (!res.body.nextCursor) break;
      url = `${base()}?limit=2&cursor=${res.body.nextCursor}`;
    }
    expect(seen).toEqual([6, 5, 4, 3, 2, 1]);
  });

  it('filters by action (exact or prefix), actor, target and time range', async () => {
    const q = async (query: string) => (await owner.get<Page>(`${base()}?${query}`)).body.data.map((e) => e.seq);
    expect(await q('action=workspace.renamed')).toEqual([5, 4, 3, 2]);
    expect(await q('action=workspace.*')).toEqual([5, 4, 3, 2, 1]);
    expect(await q(`actor=${owner.userId}&action=invitation.created`)).toEqual([6]);
    expect(await q('actor=usr_nobody')).toEqual([]);
    expect(await q(`target=${ws}`)).toEqual([5, 4, 3, 2, 1]);
    const from = new Date(start.getTime() + 2 * MINUTE).toISOString();
    const to = new Date(start.getTime() + 4 * MINUTE).toISOString();
    expect(await q(`from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`)).toEqual([4, 3]);
  });

  it('exports JSON Lines, oldest first, streamed', async () => {
    const res = await owner.get(`${base()}/export?action=workspace.*`);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toContain('application/x-ndjson');
    const lines = res.text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as AuditEventView & { resolved: Pick<AuditEventView, 'actor' | 'target'> });
    expect(lines.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(lines[0]?.action).toBe('workspace.created');
    // The stored fields recompute each hash (users appear by pseudonym); `resolved` names the user.
    for (const e of lines) {
      const stored = {
        ...e,
        occurredAt: new Date(e.occurredAt),
        actorType: e.actor.type,
        actorId: e.actor.id,
        actorUserId: e.actor.userId,
        ip: e.actor.ip,
        userAgent: e.actor.userAgent,
        targetType: e.target.type,
        targetId: e.target.id,
      };
      expect(hashEvent(stored), `seq ${e.seq}`).toBe(e.hash);
    }
    expect(lines[0]?.actor.id).toMatch(/^anon_[0-9a-f]{32}$/);
    expect(lines[0]?.resolved.actor.id).toBe(owner.userId);
  });

  it('verifies, signs a checkpoint on demand, and the public key checks it offline', async () => {
    const cp = await owner.post<CheckpointView>(`${base()}/checkpoints`);
    expect(cp.status).toBe(201);
    expect(cp.body).toMatchObject({ chain: ws, seq: 6 });
    const report = await owner.get<VerifyReport>(`${base()}/verify`);
    expect(report.body).toMatchObject({
      ok: true,
      checked: 6,
      firstBrokenSeq: null,
      checkpoints: { checked: 1, signaturesChecked: true, latest: { seq: 6 } },
    });
    const key = await new TestClient(app).get<{ pem: string; keyId: string }>('/api/audit/public-key');
    expect(key.body.keyId).toBe(cp.body.keyId);
    const message = checkpointMessage({ ...cp.body, createdAt: new Date(cp.body.createdAt) });
    expect(verify(null, Buffer.from(message), key.body.pem, Buffer.from(cp.body.signature, 'base64url'))).toBe(true);
  });

  it('operators read, verify and checkpoint the platform chain', async () => {
    const op = await signUp(app);
    await makeOperator(app, op.userId);
    const target = await signUp(app);
    expect((await op.post(`/api/operator/users/${target.userId}/disable`)).status).toBe(200);
    const list = await op.get<Page>('/api/operator/audit?action=user.disabled');
    expect(list.status).toBe(200);
    expect(list.body.data[0]).toMatchObject({
      chain: 'platform',
      workspaceId: null,
      action: 'user.disabled',
      actor: { id: op.userId },
      target: { type: 'user', id: target.userId },
    });
    expect((await op.post('/api/operator/audit/checkpoints')).status).toBe(201);
    const report = await op.get<VerifyReport>('/api/operator/audit/verify');
    expect(report.body).toMatchObject({ ok: true, chain: 'platform', checkpoints: { checked: 1 } });
  });
});

describe('errors', () => {
  it('refuses a malformed cursor, limit, action or time', async () => {
    for (const query of [
      'cursor=garbage',
      'limit=0',
      'limit=201',
      'action=DROP%20TABLE',
      'from=yesterday',
      'extra=1',
    ]) {
      const res = await owner.get(`${base()}?${query}`);
      expect(res.status, query).toBe(400);
      expect(res.body.code, query).toBe('validation_failed');
    }
  });

  it('without a signing key, checkpoints answer 409 conflict naming the setting, the public key 404', async () => {
    const keyless = await createTestApp();
    try {
      const someone = await signUp(keyless);
      const id = (await someone.post<{ id: string }>('/api/workspaces', { name: 'K' })).body.id;
      const cp = await someone.post(`/api/workspaces/${id}/audit/checkpoints`);
      expect(cp.status).toBe(409);
      expect(String(cp.body.detail)).toContain('BERTH_AUDIT_SIGNING_KEY');
      expect((await new TestClient(keyless).get('/api/audit/public-key')).status).toBe(404);
      expect((await someone.get(`/api/workspaces/${id}/audit/verify`)).body).toMatchObject({ ok: true });
    } finally {
      await keyless.close();
    }
  });
});

describe('security', () => {
  it('an API key with workspace:admin (audit:read) reads and verifies but cannot sign checkpoints (a write of undeletable rows)', async () => {
    const { secret } = await app.modules.keys.service.createKey({
      scope: { workspaceId: ws, actor: { type: 'user', userId: owner.userId }, role: 'owner' },
      input: { name: 'auditor', scopes: ['workspace:admin'] },
    });
    const key = new TestClient(app);
    key.headers = { authorization: `Bearer ${secret}` };
    expect((await key.get(`${base()}/verify`)).status).toBe(200);
    const cp = await key.post(`${base()}/checkpoints`);
    expect(cp.status).toBe(403);
    expect(cp.body).toMatchObject({ code: 'forbidden' });
  });

  it('the platform chain is for operators only', async () => {
    expect((await new TestClient(app).get('/api/operator/audit')).status).toBe(401);
    expect((await owner.get('/api/operator/audit')).status).toBe(403);
    expect((await owner.get('/api/operator/audit/verify')).status).toBe(403);
    expect((await owner.post('/api/operator/audit/checkpoints')).status).toBe(403);
  });

  it("a workspace's log never shows another workspace's or the platform's events", async () => {
    const other = await signUp(app);
    const otherWs = (await other.post<{ id: string }>('/api/workspaces', { name: 'Other' })).body.id;
    const mine = await owner.get<Page>(`${base()}?limit=200`);
    expect(mine.body.data.every((e) => e.chain === ws && e.workspaceId === ws)).toBe(true);
    expect((await owner.get(`/api/workspaces/${otherWs}/audit`)).status).toBe(404);
    const theirs = await other.get<Page>(`/api/workspaces/${otherWs}/audit`);
    expect(theirs.body.data.map((e) => e.workspaceId)).toEqual([otherWs]);
  });
});
