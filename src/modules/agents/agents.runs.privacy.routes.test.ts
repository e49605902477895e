import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { findEverywhere } from '../../../test/helpers/dump.ts';
import { type GatewayWorkspace, gatewayWorkspace } from '../../../test/helpers/gateway.ts';
import { logIn, type SignedInClient, signUp, testEmail, testIp } from '../../../test/helpers/identity.ts';
import { DAY, MINUTE, manualClock } from '../../platform/clock.ts';
import { memoryCredits } from '../gateway/index.ts';
import { DELETION_GRACE_DAYS, ERASURE_JOB } from '../privacy/index.ts';
import type { RunView, StepView } from './agents.runs.schemas.ts';
import { RUN_JOB } from './agents.runs.service.ts';

/**
 * Agent runs and the rights of the people who start them: a restricted user's runs are
 * refused (403 processing_restricted) and a queued or approved run of theirs ends failed when
 * a worker takes it, while their runs stay readable and work again once the restriction is
 * lifted; a workspace's deletion removes its runs, steps and events; an erased member's runs
 * stay with the workspace but nothing of the member is left in any column.
 */

const RUN_TABLES = ['agent_runs', 'agent_run_steps', 'agent_run_events'] as const;
type Counts = Record<(typeof RUN_TABLES)[number], number>;

const clock = manualClock(new Date());
const credits = memoryCredits();
let app: TestApp;
let fake: FakeOpenAi;

/** A workspace with a provider on the fake upstream, credits, and two published agents. */
async function runsWorkspace(): Promise<GatewayWorkspace> {
  const gw = await gatewayWorkspace(app, {
    providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o-mini'] }],
  });
  credits.grant(gw.workspaceId, 1_000_000_000);
  for (const [name, requiresApproval] of [
    ['helper', false],
    ['careful', true],
  ] as const) {
    const res = await gw.owner.post(`/api/workspaces/${gw.workspaceId}/agents/import?publish=true`, {
      name,
      model: 'gpt-4o-mini',
      tools: [{ type: 'builtin', name: 'calculator', requires_approval: requiresApproval }],
    });
    expect(res.status, res.text).toBe(201);
  }
  return gw;
}

const runsUrl = (workspaceId: string) => `/api/workspaces/${workspaceId}/runs`;

/** A sync run of `helper` that answers at once (one model call). */
async function answeredRun(client: TestClient, workspaceId: string, input = 'Say hi') {
  fake.next({ kind: 'reply', content: 'Hi.' });
  const res = await client.post<RunView>(runsUrl(workspaceId), { agent: 'helper', input });
  expect(res.status, res.text).toBe(200);
  expect(res.body.status).toBe('completed');
  return res.body;
}

/** Rows in the run tables: of a workspace, or of some runs. */
async function counts(where: { workspaceId: string } | { runIds: string[] }): Promise<Counts> {
  const out = {} as Counts;
  for (const table of RUN_TABLES) {
    const cond =
      'workspaceId' in where
        ? sql`workspace_id = ${where.workspaceId}`
        : sql`${sql.identifier(table === 'agent_runs' ? 'id' : 'run_id')} in (${sql.join(
            where.runIds.map((id) => sql`${id}`),
            sql`, `,
          )})`;
    const res = (await app.db.system((tx) =>
      tx.execute(sql`select count(*)::int as n from ${sql.identifier(table)} where ${cond}`),
    )) as unknown as { rows: Array<{ n: number }> };
    out[table] = res.rows[0]?.n ?? 0;
  }
  return out;
}

const NONE: Counts = { agent_runs: 0, agent_run_steps: 0, agent_run_events: 0 };

/** Confirms the address with the link mailed at sign-up: rows naming it by address are then the user's. */
async function verifyEmail(c: SignedInClient): Promise<void> {
  const mails = await app.modules.notifications.service.listOutbox({ limit: 1000 });
  const mail = mails.find((m) => m.to === c.email && m.tag === 'verify_email');
  const token = /token=([A-Za-z0-9_-]{43})/.exec(mail?.text ?? '')?.[1];
  if (!token) throw new Error('no verification mail in the outbox');
  const res = await new TestClient(app).post('/api/auth/verify-email', { token });
  expect(res.status, res.text).toBe(200);
}

/** A member of `gw`'s workspace with a confirmed address, invited by its owner and signed in. */
async function member(gw: GatewayWorkspace, label: string): Promise<SignedInClient & { displayName: string }> {
  const displayName = `Runner ${label} ${testIp().replaceAll('.', '')}`;
  const c = await signUp(app, { email: testEmail(label), displayName });
  await verifyEmail(c);
  const { token } = await app.modules.workspaces.service.invite({
    scope: { workspaceId: gw.workspaceId, actor: { type: 'user', userId: gw.owner.userId }, role: 'owner' },
    email: c.email,
    role: 'member',
  });
  await app.modules.workspaces.service.acceptInvitation({ token, userId: c.userId });
  return Object.assign(c, { displayName });
}

/** A client authenticating with a new API key of `owner` in the workspace. */
async function keyClient(owner: TestClient, workspaceId: string): Promise<TestClient> {
  const key = await owner.post<{ secret: string }>(`/api/workspaces/${workspaceId}/keys`, {
    name: 'runner',
    scopes: ['agents:run', 'agents:read'],
  });
  expect(key.status, key.text).toBe(201);
  const c = new TestClient(app);
  c.headers = { authorization: `Bearer ${key.body.secret}` };
  return c;
}

beforeAll(async () => {
  fake = await startFakeOpenAi();
  app = await createTestApp({
    config: { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_GATEWAY_RETRIES: 0, BERTH_SIGNUP_IP_MAX: 10_000 },
    credits,
    clock,
  });
});

afterAll(async () => {
  await app?.close();
  await fake?.close();
});

describe('restriction of processing', () => {
  it('refuses a restricted user’s new runs (session and API key), keeps their runs readable, and runs again once lifted', async () => {
    const gw = await runsWorkspace();
    const byKey = await keyClient(gw.owner, gw.workspaceId);
    const before = await answeredRun(gw.owner, gw.workspaceId);

    const restricted = await gw.owner.post('/api/me/privacy/restriction');
    expect(restricted.status).toBe(200);
    const received = fake.received.length;
    for (const client of [gw.owner, byKey]) {
      const refused = await client.post(runsUrl(gw.workspaceId), { agent: 'helper', input: 'again' });
      expect(refused.status).toBe(403);
      expect(refused.body).toMatchObject({ code: 'processing_restricted' });
    }
    // Nothing was created and nothing reached the model.
    expect((await counts({ workspaceId: gw.workspaceId })).agent_runs).toBe(1);
    expect(fake.received.length).toBe(received);

    // The runs they started stay readable, intact.
    const read = await gw.owner.get<RunView>(`${runsUrl(gw.workspaceId)}/${before.id}`);
    expect(read.status).toBe(200);
    expect(read.body).toMatchObject({ status: 'completed', output: 'Hi.', userId: gw.owner.userId });
    const steps = await byKey.get<{ data: StepView[] }>(`${runsUrl(gw.workspaceId)}/${before.id}/steps`);
    expect(steps.status).toBe(200);
    expect(steps.body.data).toHaveLength(1);
    const list = await gw.owner.get<{ data: RunView[] }>(runsUrl(gw.workspaceId));
    expect(list.body.data.map((r) => r.id)).toEqual([before.id]);

    const lifted = await gw.owner.delete('/api/me/privacy/restriction');
    expect(lifted.status).toBe(200);
    await answeredRun(gw.owner, gw.workspaceId);
    await answeredRun(byKey, gw.workspaceId);
  });

  it('a background run queued before the restriction ends failed (processing_restricted) when a worker takes it', async () => {
    const gw = await runsWorkspace();
    const queued = await gw.owner.post<RunView>(runsUrl(gw.workspaceId), {
      agent: 'helper',
      input: 'later',
      background: true,
    });
    expect(queued.status, queued.text).toBe(202);
    expect(queued.body.status).toBe('queued');

    expect((await gw.owner.post('/api/me/privacy/restriction')).status).toBe(200);
    const received = fake.received.length;
    expect(await app.jobs.drain(RUN_JOB)).toMatchObject({ failed: 0 });

    const run = await gw.owner.get<RunView>(`${runsUrl(gw.workspaceId)}/${queued.body.id}`);
    expect(run.body).toMatchObject({ status: 'failed', lastError: { code: 'processing_restricted' } });
    expect(fake.received.length).toBe(received);
    expect((await gw.owner.delete('/api/me/privacy/restriction')).status).toBe(200);
  });

  it('a run waiting for approval when its user restricts processing ends failed once approved, calling no tool or model', async () => {
    const gw = await runsWorkspace();
    fake.next({ kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"1+1"}' }] });
    const waiting = await gw.owner.post<RunView>(runsUrl(gw.workspaceId), { agent: 'careful', input: 'Add 1+1' });
    expect(waiting.status, waiting.text).toBe(200);
    expect(waiting.body.status).toBe('requires_action');

    expect((await gw.owner.post('/api/me/privacy/restriction')).status).toBe(200);
    const received = fake.received.length;
    const approved = await gw.owner.post(`${runsUrl(gw.workspaceId)}/${waiting.body.id}/approve`, {});
    expect(approved.status, approved.text).toBe(200);
    expect(await app.jobs.drain(RUN_JOB)).toMatchObject({ failed: 0 });

    const run = await gw.owner.get<RunView>(`${runsUrl(gw.workspaceId)}/${waiting.body.id}`);
    expect(run.body).toMatchObject({ status: 'failed', lastError: { code: 'processing_restricted' } });
    const steps = await gw.owner.get<{ data: StepView[] }>(`${runsUrl(gw.workspaceId)}/${waiting.body.id}/steps`);
    expect(steps.body.data.map((s) => s.kind)).toEqual(['model']);
    expect(fake.received.length).toBe(received);
    expect((await gw.owner.delete('/api/me/privacy/restriction')).status).toBe(200);
  });
});

describe('workspace deletion', () => {
  it('removes the workspace’s runs with their steps and events; a queued run of it then finds nothing to do', async () => {
    const gw = await runsWorkspace();
    const other = await runsWorkspace();
    const done = await answeredRun(gw.owner, gw.workspaceId);
    fake.next({ kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"3*3"}' }] });
    const waiting = await gw.owner.post<RunView>(runsUrl(gw.workspaceId), { agent: 'careful', input: '3*3' });
    expect(waiting.body.status).toBe('requires_action');
    const queued = await gw.owner.post<RunView>(runsUrl(gw.workspaceId), {
      agent: 'helper',
      input: 'later',
      background: true,
    });
    expect(queued.status).toBe(202);
    const ids = [done.id, waiting.body.id, queued.body.id];
    const theirs = await answeredRun(other.owner, other.workspaceId);
    const held = await counts({ runIds: ids });
    expect(held.agent_runs).toBe(3);
    expect(held.agent_run_steps).toBeGreaterThanOrEqual(2);
    expect(held.agent_run_events).toBeGreaterThanOrEqual(3);

    const del = await gw.owner.delete(`/api/workspaces/${gw.workspaceId}`, { confirmName: 'Gateway' });
    expect(del.status, del.text).toBeLessThan(300);
    expect(await counts({ workspaceId: gw.workspaceId })).toEqual(NONE);
    expect(await counts({ runIds: ids })).toEqual(NONE);

    // The queued run's job finds no run and ends without calling the model.
    const received = fake.received.length;
    expect(await app.jobs.drain(RUN_JOB)).toMatchObject({ failed: 0 });
    expect(fake.received.length).toBe(received);
    expect(await counts({ runIds: ids })).toEqual(NONE);
    // Another workspace's runs are untouched.
    expect((await counts({ runIds: [theirs.id] })).agent_runs).toBe(1);
  });
});

describe('erasure', () => {
  it('an erased member’s runs stay with the workspace, and nothing of the member is left in any column', async () => {
    const gw = await runsWorkspace();
    const alice = await member(gw, 'alice');
    const aliceKey = await keyClient(alice, gw.workspaceId);
    const bySession = await answeredRun(alice, gw.workspaceId);
    const byKey = await answeredRun(aliceKey, gw.workspaceId);
    fake.next({ kind: 'reply', content: 'Queued and done.' });
    const queued = await alice.post<RunView>(runsUrl(gw.workspaceId), {
      agent: 'helper',
      input: 'later',
      background: true,
    });
    expect(queued.status).toBe(202);
    await app.jobs.drain();
    await app.modules.gateway.service.idle();
    await app.modules.gateway.service.usage.flush();
    const ids = [bySession.id, byKey.id, queued.body.id];
    const held = await counts({ runIds: ids });
    expect(held.agent_runs).toBe(3);

    // Before erasure the scan finds her in the runs (and the model calls' usage events).
    expect(await findEverywhere(app, [alice.userId])).toEqual(
      expect.arrayContaining([`public.agent_runs.user_id: ${alice.userId}`]),
    );

    const requested = await alice.post('/api/me/deletion', { password: alice.password });
    expect(requested.status, requested.text).toBe(202);
    clock.advance(DELETION_GRACE_DAYS * DAY + MINUTE);
    await app.jobs.send(ERASURE_JOB, {});
    expect(await app.jobs.drain(ERASURE_JOB)).toMatchObject({ failed: 0 });

    // Nothing of Alice anywhere: not her id, email or name.
    expect(await findEverywhere(app, [alice.userId, alice.email, alice.displayName])).toEqual([]);

    // Her runs are the workspace's and stay, whole, naming her only by pseudonym.
    expect(await counts({ runIds: ids })).toEqual(held);
    const owner = await logIn(app, gw.owner.email, gw.owner.password);
    const pseudonym = app.modules.vault.service.pseudonym(alice.userId);
    for (const id of ids) {
      const run = await owner.get<RunView>(`${runsUrl(gw.workspaceId)}/${id}`);
      expect(run.status).toBe(200);
      expect(run.body.status).toBe('completed');
      expect(run.body.userId).toBe(pseudonym);
      // Nor in what the run's content and event stream say, decrypted.
      const events = await owner.get(`${runsUrl(gw.workspaceId)}/${id}/events`);
      const steps = await owner.get(`${runsUrl(gw.workspaceId)}/${id}/steps`);
      expect(events.text).toContain('run.completed');
      for (const text of [run.text, events.text, steps.text]) {
        for (const needle of [alice.userId, alice.email, alice.displayName]) expect(text).not.toContain(needle);
      }
    }
  }, 120_000);
});
