import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { type GatewayWorkspace, gatewayWorkspace } from '../../../test/helpers/gateway.ts';
import { publishedAgent, runSteps } from '../../../test/helpers/runs.ts';
import { memoryCredits } from '../gateway/index.ts';
import type { RunView } from './agents.runs.schemas.ts';

/**
 * A run's time limit and the ways a run stops while a model call is in flight: the timeout,
 * cancel (the upstream request is aborted), and a worker that died (its run is resumed by
 * the sweep, or expires as lost once it was taken over more often than allowed).
 */

let app: TestApp;
let fake: FakeOpenAi;
let gw: GatewayWorkspace;
const credits = memoryCredits();

const runsUrl = () => `/api/workspaces/${gw.workspaceId}/runs`;

const agent = (name: string, extra: Record<string, unknown> = {}) =>
  publishedAgent(gw.owner, gw.workspaceId, name, extra);
const steps = (runId: string) => runSteps(gw.owner, gw.workspaceId, runId);

async function getRun(id: string) {
  const res = await gw.owner.get<RunView>(`${runsUrl()}/${id}`);
  expect(res.status).toBe(200);
  return res.body;
}

/** The event types of a run, in order (its SSE stream ends once the run ended). */
async function eventTypes(id: string): Promise<string[]> {
  const res = await gw.owner.get(`${runsUrl()}/${id}/events`);
  expect(res.status).toBe(200);
  return [...res.text.matchAll(/^event: (.+)$/gm)].map((m) => m[1] ?? '');
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 10_000) {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function runRow(id: string) {
  const res = await app.db.system((tx) =>
    tx.execute(sql`select status, lease_owner, lease_until, attempts from agent_runs where id = ${id}`),
  );
  return (res as unknown as { rows: Array<{ status: string; lease_owner: string | null; attempts: number }> }).rows[0];
}

/** Leaves a queued run as a worker that died mid-run leaves it: in progress, its lease run out. */
async function abandon(id: string, attempts: number) {
  const past = new Date(app.clock.now().getTime() - 60_000).toISOString();
  const deadline = new Date(app.clock.now().getTime() + 300_000).toISOString();
  await app.db.system((tx) =>
    tx.execute(sql`update agent_runs set status = 'in_progress', lease_owner = 'wrk_dead.1',
      lease_until = ${past}::timestamptz, attempts = ${attempts}, deadline_at = ${deadline}::timestamptz,
      started_at = ${past}::timestamptz where id = ${id}`),
  );
}

beforeAll(async () => {
  fake = await startFakeOpenAi();
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_GATEWAY_RETRIES: 0 }, credits });
  gw = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o-mini'] }] });
  credits.grant(gw.workspaceId, 1_000_000_000);
  await agent('calc');
  await agent('hasty', { tools: [], limits: { max_steps: 10, max_tokens: 100_000, timeout_seconds: 1 } });
  await agent('patient', {
    tools: [{ type: 'builtin', name: 'calculator', requires_approval: true }],
    limits: { max_steps: 10, max_tokens: 100_000, timeout_seconds: 1 },
  });
});

afterAll(async () => {
  await app?.close();
  await fake?.close();
});

beforeEach(() => {
  fake.received.length = 0;
});

describe('time limit', () => {
  it('ends a run whose model call hangs past timeout_seconds as incomplete (timeout) and aborts the call', async () => {
    fake.next({ kind: 'hang' });
    const res = await gw.owner.post<RunView>(runsUrl(), { agent: 'hasty', input: 'take your time' });
    expect(res.status, res.text).toBe(200);
    expect(res.body).toMatchObject({
      status: 'incomplete',
      stopReason: 'timeout',
      lastError: { code: 'timeout' },
      output: null,
    });
    expect(res.body.usage.modelSteps).toBe(0);
    expect(fake.received).toHaveLength(1);
    await until('the upstream request to be closed', () => fake.hanging() === 0);
    expect(await steps(res.body.id)).toEqual([]);
    expect((await eventTypes(res.body.id)).at(-1)).toBe('run.incomplete');
    expect((await runRow(res.body.id))?.lease_owner).toBeNull();
  });

  it('does not count the time a run waited for an approval', async () => {
    fake.next(
      { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"2+3"}' }] },
      { kind: 'reply', content: 'It is 5.' },
    );
    const res = await gw.owner.post<RunView>(runsUrl(), { agent: 'patient', input: 'add' });
    expect(res.body.status).toBe('requires_action');
    // The person decides long after the run's 1 s limit would have passed had the wait counted.
    app.clock.advance(30_000);
    const approved = await gw.owner.post<RunView>(`${runsUrl()}/${res.body.id}/approve`, {});
    expect(approved.status, approved.text).toBe(200);
    expect(approved.body.status).toBe('queued');
    await app.jobs.drain('agents.run');
    const done = await getRun(res.body.id);
    expect(done).toMatchObject({ status: 'completed', stopReason: 'end_turn', output: 'It is 5.' });
    expect(fake.received).toHaveLength(2);
  });

  it('still stops a resumed run at the time it had left', async () => {
    fake.next(
      { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"2+3"}' }] },
      { kind: 'hang' },
    );
    const res = await gw.owner.post<RunView>(runsUrl(), { agent: 'patient', input: 'add' });
    expect(res.body.status).toBe('requires_action');
    app.clock.advance(30_000);
    const approved = await gw.owner.post<RunView>(`${runsUrl()}/${res.body.id}/approve`, {});
    expect(approved.body.status).toBe('queued');
    await app.jobs.drain('agents.run');
    const done = await getRun(res.body.id);
    expect(done).toMatchObject({ status: 'incomplete', stopReason: 'timeout' });
    // The tool ran (approved) before the second model call hung.
    expect((await steps(res.body.id)).map((s) => [s.kind, s.status])).toEqual([
      ['model', 'completed'],
      ['tool', 'completed'],
    ]);
    await until('the upstream request to be closed', () => fake.hanging() === 0);
  });
});

describe('cancel while running', () => {
  it('cancels a run whose model call is in flight: the call is aborted and the events end with run.cancelled', async () => {
    fake.next({ kind: 'hang' });
    const res = await gw.owner.post<RunView>(runsUrl(), { agent: 'calc', input: 'wait for it', background: true });
    expect(res.status).toBe(202);
    const draining = app.jobs.drain('agents.run');
    await until('the model call to be in flight', () => fake.hanging() === 1);
    expect((await getRun(res.body.id)).status).toBe('in_progress');

    const cancelled = await gw.owner.post<RunView>(`${runsUrl()}/${res.body.id}/cancel`);
    expect(cancelled.status, cancelled.text).toBe(200);
    expect(cancelled.body).toMatchObject({
      status: 'cancelled',
      stopReason: 'cancelled',
      lastError: { code: 'cancelled' },
    });
    await draining;
    await until('the upstream request to be closed', () => fake.hanging() === 0);
    const types = await eventTypes(res.body.id);
    expect(types).toEqual(['run.created', 'run.in_progress', 'run.cancelled']);
    expect(await steps(res.body.id)).toEqual([]);
    expect((await runRow(res.body.id))?.lease_owner).toBeNull();
    const again = await gw.owner.post(`${runsUrl()}/${res.body.id}/cancel`);
    expect(again.status).toBe(409);
    expect(again.body.code).toBe('run_finished');
  });

  it('cancels at once a run whose worker died (no worker would stop it), and no worker resumes it', async () => {
    const orphan = await gw.owner.post<RunView>(runsUrl(), { agent: 'calc', input: 'orphan', background: true });
    expect(orphan.status).toBe(202);
    await abandon(orphan.body.id, 0);
    const started = Date.now();
    const cancelled = await gw.owner.post<RunView>(`${runsUrl()}/${orphan.body.id}/cancel`);
    expect(cancelled.body).toMatchObject({ status: 'cancelled', stopReason: 'cancelled' });
    // Answered without waiting for a worker to notice (it waits up to 10 s for a live one).
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(await app.modules.agents.runs.sweep()).toMatchObject({ resumed: 0 });
    await app.jobs.drain('agents.run');
    expect((await getRun(orphan.body.id)).status).toBe('cancelled');
    expect((await eventTypes(orphan.body.id)).at(-1)).toBe('run.cancelled');
  });
});

describe('a worker that died', () => {
  it('leaves its run to the sweep, which resumes it on another worker', async () => {
    fake.next({ kind: 'reply', content: 'picked up again' });
    const res = await gw.owner.post<RunView>(runsUrl(), { agent: 'calc', input: 'resume me', background: true });
    await abandon(res.body.id, 0);
    expect(await app.modules.agents.runs.sweep()).toMatchObject({ resumed: 1 });
    await app.jobs.drain('agents.run');
    expect(await getRun(res.body.id)).toMatchObject({ status: 'completed', output: 'picked up again' });
    expect((await runRow(res.body.id))?.attempts).toBe(1);
    const types = await eventTypes(res.body.id);
    expect(types.at(-1)).toBe('run.completed');
  });

  it('expires a run taken over more often than allowed, as run_lost, without another model call', async () => {
    const res = await gw.owner.post<RunView>(runsUrl(), { agent: 'calc', input: 'doomed', background: true });
    // Three takeovers already (maxAttempts): the fourth gives the run up.
    await abandon(res.body.id, 3);
    expect(await app.modules.agents.runs.sweep()).toMatchObject({ resumed: 1 });
    await app.jobs.drain('agents.run');
    const lost = await getRun(res.body.id);
    expect(lost).toMatchObject({ status: 'expired', stopReason: null, lastError: { code: 'run_lost' } });
    expect(fake.received).toHaveLength(0);
    expect((await eventTypes(res.body.id)).at(-1)).toBe('run.expired');
    // Nothing is left for the sweep.
    expect(await app.modules.agents.runs.sweep()).toMatchObject({ resumed: 0 });
  });
});
