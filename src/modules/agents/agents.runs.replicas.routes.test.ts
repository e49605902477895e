import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { createTestDb, onServerPostgres, type TestDb } from '../../../test/helpers/db.ts';
import { type GatewayWorkspace, gatewayWorkspace, listen } from '../../../test/helpers/gateway.ts';
import { type Bus, memoryBus, memoryHub } from '../../platform/bus/index.ts';
import { type ManualClock, manualClock } from '../../platform/clock.ts';
import { memoryCredits } from '../gateway/index.ts';
import type { RunView, StepView } from './agents.runs.schemas.ts';

/**
 * Runs across workers sharing one database: a run is executed by exactly one of the workers
 * that try at once; a worker whose lease was taken over writes nothing more (fencing, also
 * when the same process claims the run again); a worker that shuts down gives its lease back
 * and another resumes the run from its persisted steps; a cancel reaches the worker running it.
 */

/** A tool endpoint that holds every request until released. */
type Gate = { url: string; arrived: () => number; release(): void; close(): Promise<void> };

async function startGate(): Promise<Gate> {
  const waiting = new Set<ServerResponse>();
  let arrived = 0;
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    arrived += 1;
    waiting.add(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/slow`,
    arrived: () => arrived,
    release() {
      for (const res of waiting) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"late":"result from the first worker"}');
      }
      waiting.clear();
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

let testDb: TestDb;
let clock: ManualClock;
let hub: ReturnType<typeof memoryHub>;
const buses: Bus[] = [];
let a: TestApp;
let b: TestApp;
let fake: FakeOpenAi;
let gate: Gate;
let gw: GatewayWorkspace;
const credits = memoryCredits();
const config = { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_GATEWAY_RETRIES: 0 };

/** Another worker (replica) of the same installation. */
async function replica(): Promise<TestApp> {
  const bus = memoryBus({ hub });
  buses.push(bus);
  return createTestApp({ config, credits, clock, bus, testDb });
}

const runsUrl = () => `/api/workspaces/${gw.workspaceId}/runs`;

async function agent(name: string, extra: Record<string, unknown>) {
  const res = await gw.owner.post(`/api/workspaces/${gw.workspaceId}/agents/import?publish=true`, {
    name,
    model: 'gpt-4o-mini',
    instructions: 'Be brief.',
    ...extra,
  });
  expect(res.status, res.text).toBe(201);
}

/** A background run, queued and not yet executed. */
async function queued(agentName: string, input: string): Promise<string> {
  const res = await gw.owner.post<RunView>(runsUrl(), { agent: agentName, input, background: true });
  expect(res.status, res.text).toBe(202);
  return res.body.id;
}

async function getRun(id: string) {
  return (await gw.owner.get<RunView>(`${runsUrl()}/${id}`)).body;
}

async function steps(id: string) {
  return (await gw.owner.get<{ data: StepView[] }>(`${runsUrl()}/${id}/steps`)).body.data;
}

async function eventTypes(id: string): Promise<string[]> {
  const res = await gw.owner.get(`${runsUrl()}/${id}/events`);
  return [...res.text.matchAll(/^event: (.+)$/gm)].map((m) => m[1] ?? '');
}

async function row(id: string) {
  const res = await a.db.system((tx) =>
    tx.execute(sql`select status, lease_owner, lease_until, attempts from agent_runs where id = ${id}`),
  );
  return (
    res as unknown as {
      rows: Array<{ status: string; lease_owner: string | null; lease_until: string | Date | null; attempts: number }>;
    }
  ).rows[0];
}

/** The lease runs out while its worker is still busy (a stalled worker, a missed heartbeat). */
async function expireLease(id: string) {
  const past = new Date(clock.now().getTime() - 60_000).toISOString();
  await a.db.system((tx) => tx.execute(sql`update agent_runs set lease_until = ${past}::timestamptz where id = ${id}`));
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 10_000) {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const stepShape = (s: StepView[]) => s.map((x) => [x.seq, x.kind, x.status]);

beforeAll(async () => {
  fake = await startFakeOpenAi();
  gate = await startGate();
  testDb = await createTestDb();
  clock = manualClock(new Date());
  hub = memoryHub();
  a = await replica();
  b = await replica();
  gw = await gatewayWorkspace(a, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o-mini'] }] });
  credits.grant(gw.workspaceId, 1_000_000_000);
  await agent('plain', { tools: [] });
  await agent('calc', { tools: [{ type: 'builtin', name: 'calculator', requires_approval: false }] });
  await agent('gated', {
    tools: [
      {
        type: 'http',
        name: 'slow',
        description: 'A slow tool',
        parameters: { type: 'object' },
        request: { method: 'POST', url: gate.url },
        limits: { timeout_ms: 60_000 },
      },
    ],
  });
});

afterAll(async () => {
  gate?.release();
  await a?.close();
  await b?.close();
  for (const bus of buses) await bus.close();
  await testDb?.drop();
  await gate?.close();
  await fake?.close();
});

beforeEach(() => {
  fake.received.length = 0;
});

describe.skipIf(!onServerPostgres())('concurrent claims (server Postgres; skipped without TEST_DATABASE_URL)', () => {
  it('two workers executing the same queued runs at once: each run is executed once, its steps once', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(await queued('plain', `race ${i}`));
    await Promise.all(
      ids.flatMap((id) => [
        a.modules.agents.runs.execute(gw.workspaceId, id),
        b.modules.agents.runs.execute(gw.workspaceId, id),
      ]),
    );
    // One model call per run: the worker that lost the claim called nothing.
    expect(fake.received).toHaveLength(ids.length);
    for (const [i, id] of ids.entries()) {
      expect(await getRun(id)).toMatchObject({ status: 'completed', output: `echo: race ${i}` });
      expect(stepShape(await steps(id))).toEqual([[1, 'model', 'completed']]);
      expect(await eventTypes(id)).toEqual(['run.created', 'run.in_progress', 'run.step', 'run.completed']);
      expect((await row(id))?.attempts).toBe(0);
    }
  });
});

describe('fencing', () => {
  it('a worker whose lease was taken over writes nothing after the takeover', async () => {
    fake.next(
      { kind: 'reply', toolCalls: [{ name: 'slow', arguments: '{}' }] },
      { kind: 'reply', content: 'done by the second worker' },
    );
    const id = await queued('gated', 'go');
    const arrivedBefore = gate.arrived();
    const first = a.modules.agents.runs.execute(gw.workspaceId, id);
    await until('the first worker to be inside the tool', () => gate.arrived() === arrivedBefore + 1);
    await expireLease(id);
    await b.modules.agents.runs.execute(gw.workspaceId, id);
    expect(await getRun(id)).toMatchObject({ status: 'completed', output: 'done by the second worker' });

    // The first worker's tool answers now: its result and anything after it are refused.
    gate.release();
    await first;
    const s = await steps(id);
    expect(stepShape(s)).toEqual([
      [1, 'model', 'completed'],
      [2, 'tool', 'interrupted'],
      [3, 'model', 'completed'],
    ]);
    expect(JSON.stringify(s[1]?.content)).not.toContain('result from the first worker');
    expect(fake.received).toHaveLength(2);
    // The model was told the call may or may not have taken effect.
    const second = fake.received[1]?.body as { messages: Array<{ role: string; content: string }> };
    expect(second.messages.at(-1)?.content).toContain('interrupted');
    expect(await eventTypes(id)).toEqual([
      'run.created',
      'run.in_progress',
      'run.step',
      'run.in_progress',
      'run.step',
      'run.completed',
    ]);
    expect(await getRun(id)).toMatchObject({ status: 'completed', output: 'done by the second worker' });
    expect((await row(id))?.attempts).toBe(1);
  });

  it('fences an execution off when its own process claims the run again', async () => {
    fake.next({ kind: 'reply', toolCalls: [{ name: 'slow', arguments: '{}' }] }, { kind: 'hang' });
    const id = await queued('gated', 'again');
    const arrivedBefore = gate.arrived();
    const first = a.modules.agents.runs.execute(gw.workspaceId, id);
    await until('the first execution to be inside the tool', () => gate.arrived() === arrivedBefore + 1);
    await expireLease(id);
    // The same worker's job comes round again (its lease ran out): a second execution here.
    const second = a.modules.agents.runs.execute(gw.workspaceId, id);
    await until('the second execution to be waiting on the model', () => fake.hanging() === 1);

    gate.release();
    await first;
    // The first execution's late tool result did not replace the interrupted step, nor call the model.
    expect(stepShape(await steps(id))).toEqual([
      [1, 'model', 'completed'],
      [2, 'tool', 'interrupted'],
    ]);
    expect(fake.received).toHaveLength(2);

    // The second execution is the one a cancel stops, at once.
    const cancelled = await gw.owner.post<RunView>(`${runsUrl()}/${id}/cancel`);
    expect(cancelled.body).toMatchObject({ status: 'cancelled', stopReason: 'cancelled' });
    await second;
    await until('the upstream request to be closed', () => fake.hanging() === 0);
    expect((await eventTypes(id)).at(-1)).toBe('run.cancelled');
  });
});

describe('across workers', () => {
  it('a cancel made on one worker stops the run executing on another', async () => {
    fake.next({ kind: 'hang' });
    const id = await queued('plain', 'elsewhere');
    const running = b.modules.agents.runs.execute(gw.workspaceId, id);
    await until('the model call to be in flight', () => fake.hanging() === 1);
    // The owner's client talks to worker a; worker b runs the run.
    const cancelled = await gw.owner.post<RunView>(`${runsUrl()}/${id}/cancel`);
    expect(cancelled.body).toMatchObject({ status: 'cancelled', stopReason: 'cancelled' });
    await running;
    await until('the upstream request to be closed', () => fake.hanging() === 0);
    expect(await eventTypes(id)).toEqual(['run.created', 'run.in_progress', 'run.cancelled']);
  });

  it('a worker that shuts down gives its lease back and another resumes the run from its steps', async () => {
    const c = await replica();
    let closed = false;
    try {
      fake.next(
        { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"20+22"}' }] },
        { kind: 'hang' },
        { kind: 'reply', content: 'It is 42.' },
      );
      const id = await queued('calc', 'add');
      const running = c.modules.agents.runs.execute(gw.workspaceId, id);
      await until('the second model call to be in flight', () => fake.hanging() === 1);
      expect(stepShape(await steps(id))).toEqual([
        [1, 'model', 'completed'],
        [2, 'tool', 'completed'],
      ]);

      await c.close();
      closed = true;
      await running;
      await until('the upstream request to be closed', () => fake.hanging() === 0);
      const released = await row(id);
      expect(released?.status).toBe('in_progress');
      expect(released?.lease_owner).toBeNull();
      expect(new Date(released?.lease_until ?? 0).getTime()).toBeLessThanOrEqual(clock.now().getTime());

      // Another worker's sweep finds it at once (the clock has not moved) and resumes it.
      expect((await a.modules.agents.runs.sweep()).resumed).toBeGreaterThanOrEqual(1);
      await a.jobs.drain('agents.run');
      expect(await getRun(id)).toMatchObject({ status: 'completed', output: 'It is 42.' });
      expect(stepShape(await steps(id))).toEqual([
        [1, 'model', 'completed'],
        [2, 'tool', 'completed'],
        [3, 'model', 'completed'],
      ]);
      // The first step was not redone: three model requests in all, the last one with the tool's result.
      expect(fake.received).toHaveLength(3);
      const last = fake.received[2]?.body as { messages: Array<{ role: string; content: string }> };
      expect(last.messages.at(-1)).toMatchObject({ role: 'tool', content: '42' });
      // A shutdown is not a lost worker: it does not count towards the run's expiry.
      expect((await row(id))?.attempts).toBe(0);
      const types = await eventTypes(id);
      expect(types.filter((t) => t === 'run.in_progress')).toHaveLength(2);
      expect(types.at(-1)).toBe('run.completed');
    } finally {
      if (!closed) await c.close();
    }
  });

  it('a worker shutting down with a sync run and an event stream open answers both at once', async () => {
    const c = await replica();
    let closed = false;
    try {
      const key = await gw.owner.post<{ secret: string }>(`/api/workspaces/${gw.workspaceId}/keys`, {
        name: 'runner',
        scopes: ['agents:run', 'agents:read'],
      });
      expect(key.status, key.text).toBe(201);
      const url = `${await listen(c)}${runsUrl()}`;
      const headers = { authorization: `Bearer ${key.body.secret}`, 'content-type': 'application/json' };
      fake.next(
        { kind: 'hang' },
        { kind: 'hang' },
        { kind: 'reply', content: 'one' },
        { kind: 'reply', content: 'two' },
      );
      // Over real sockets: a graceful close waits for requests in flight.
      const sync = fetch(url, { method: 'POST', headers, body: JSON.stringify({ agent: 'plain', input: 'sync' }) });
      const streamed = fetch(url, {
        method: 'POST',
        headers,
        body: JSON.stringify({ agent: 'plain', input: 'streamed', stream: true }),
      });
      await until('both model calls to be in flight', () => fake.hanging() === 2);

      await c.close();
      closed = true;
      // The sync run answers as it stands (in progress); the stream ends without an error event.
      const syncRes = await sync;
      expect(syncRes.status).toBe(200);
      const run = (await syncRes.json()) as RunView;
      expect(run.status).toBe('in_progress');
      const streamRes = await streamed;
      const text = await streamRes.text();
      const events = [...text.matchAll(/^event: (.+)$/gm)].map((m) => m[1]);
      expect(events).toEqual(['run.created', 'run.in_progress']);
      await until('the upstream requests to be closed', () => fake.hanging() === 0);

      // Another worker resumes both.
      await a.modules.agents.runs.sweep();
      await a.jobs.drain('agents.run');
      expect(await getRun(run.id)).toMatchObject({ status: 'completed' });
      const list = (await gw.owner.get<{ data: RunView[] }>(`${runsUrl()}?agent=plain&limit=100`)).body.data;
      const streamedRun = list.find((r) => r.input === 'streamed');
      expect(streamedRun).toMatchObject({ status: 'completed' });
      expect(list.filter((r) => r.input === 'sync' || r.input === 'streamed')).toHaveLength(2);
    } finally {
      if (!closed) await c.close();
    }
  });
});
