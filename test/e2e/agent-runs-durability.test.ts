import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../fakes/openai-upstream.ts';
import { berth, migratedDataDir, startServer } from '../helpers/cli.ts';

// Agent runs survive their worker: a real `berth start` (jobs and the run sweeper on, leases
// of 2 s) is killed with SIGKILL while a background run waits on its model, and a new server
// on the same data dir resumes the run from its persisted steps (the first model call and
// the tool call are not made again), or, when its workers keep dying, gives it up as
// `expired` with `run_lost`. Never is a run left in progress.

type RunView = {
  id: string;
  status: string;
  stopReason: string | null;
  lastError: { code: string } | null;
  output: string | null;
  usage: { modelSteps: number; toolSteps: number };
};
type StepView = { seq: number; kind: string; status: string; content: unknown };

const LIVE = new Set(['queued', 'in_progress']);
const children = new Set<ChildProcess>();

function running(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

async function until<T>(what: string, probe: () => Promise<T | null>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== null) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('happy', () => {
  let dataDir = '';
  let fake: FakeOpenAi;
  let env: Record<string, string> = {};
  let workspaceId = '';
  let apiKey = '';
  let server: { child: ChildProcess; url: string } | null = null;

  async function start() {
    const s = await startServer(env, 90_000);
    children.add(s.child);
    server = { child: s.child, url: s.url };
    return server;
  }

  async function kill() {
    const s = server;
    if (!s) throw new Error('no server');
    const gone = new Promise((resolve) => s.child.once('exit', resolve));
    s.child.kill('SIGKILL');
    await gone;
    server = null;
    // The killed process's connection to the model is gone with it.
    await until('the upstream request to close', async () => (fake.hanging() === 0 ? true : null), 10_000);
  }

  async function api<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    if (!server) throw new Error('no server');
    const res = await fetch(`${server.url}/api/workspaces/${workspaceId}${path}`, {
      method,
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return {
      status: res.status,
      body: (text && res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text) as T,
    };
  }

  const getRun = async (id: string) => (await api<RunView>('GET', `/runs/${id}`)).body;
  const steps = async (id: string) => (await api<{ data: StepView[] }>('GET', `/runs/${id}/steps`)).body.data;
  const eventTypes = async (id: string) =>
    [...(await api<string>('GET', `/runs/${id}/events`)).body.matchAll(/^event: (.+)$/gm)].map((m) => m[1]);
  const chats = () => fake.received.filter((r) => r.method === 'POST' && r.path.endsWith('/chat/completions'));

  /** The run once it is in progress with `n` persisted steps and its next model call in flight. */
  async function waitingOnModel(id: string, n: number) {
    return until(`run ${id} to wait on its model with ${n} steps`, async () => {
      if (fake.hanging() !== 1) return null;
      const [run, s] = [await getRun(id), await steps(id)];
      return run.status === 'in_progress' && s.length === n ? run : null;
    });
  }

  /** The run once it ended (the new server's sweep found it and a worker finished it). */
  async function ended(id: string) {
    return until(`run ${id} to end`, async () => {
      const run = await getRun(id);
      return LIVE.has(run.status) ? null : run;
    });
  }

  beforeAll(async () => {
    dataDir = await migratedDataDir('berth-run-durability-');
    fake = await startFakeOpenAi();
    env = {
      BERTH_DATA_DIR: dataDir,
      BERTH_EGRESS_ALLOW: '127.0.0.1',
      BERTH_RUN_LEASE_SECONDS: '2',
      BERTH_CREDITS: 'unlimited',
      BERTH_GATEWAY_RETRIES: '0',
    };
    const created = await berth(
      ['admin', 'create', '--email', 'runner@example.com', '--workspace', 'Runs', '--json'],
      { BERTH_DATA_DIR: dataDir },
      'correct horse battery staple\n',
    );
    expect(created.code, created.stderr).toBe(0);
    ({ workspaceId, apiKey } = JSON.parse(created.stdout) as { workspaceId: string; apiKey: string });
    await start();
    const provider = await api('POST', '/providers', {
      name: 'fake',
      adapter: 'openai-compatible',
      baseUrl: fake.baseUrl,
      models: ['gpt-4o-mini'],
    });
    expect(provider.status, JSON.stringify(provider.body)).toBe(201);
    const agent = await api('POST', '/agents/import?publish=true', {
      name: 'calc',
      model: 'gpt-4o-mini',
      instructions: 'You are a careful calculator.',
      tools: [{ type: 'builtin', name: 'calculator', requires_approval: false }],
    });
    expect(agent.status, JSON.stringify(agent.body)).toBe(201);
  }, 180_000);

  afterAll(async () => {
    for (const child of children) {
      if (running(child)) {
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGKILL');
        await gone;
      }
    }
    await fake?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }, 60_000);

  it('a run whose server is killed mid-run is resumed by the next server from its persisted steps', async () => {
    if (!server) await start();
    fake.received.length = 0;
    fake.next(
      { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"6*7"}' }] },
      { kind: 'hang' },
      { kind: 'reply', content: 'The answer is 42.' },
    );
    const created = await api<RunView>('POST', '/runs', { agent: 'calc', input: 'What is 6*7?', background: true });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    const id = created.body.id;
    await waitingOnModel(id, 2);
    expect((await steps(id)).map((s) => [s.seq, s.kind, s.status])).toEqual([
      [1, 'model', 'completed'],
      [2, 'tool', 'completed'],
    ]);

    await kill();
    await start();
    const run = await ended(id);
    expect(run).toMatchObject({ status: 'completed', stopReason: 'end_turn', output: 'The answer is 42.' });
    expect(run.usage).toMatchObject({ modelSteps: 2, toolSteps: 1 });
    expect((await steps(id)).map((s) => [s.seq, s.kind, s.status])).toEqual([
      [1, 'model', 'completed'],
      [2, 'tool', 'completed'],
      [3, 'model', 'completed'],
    ]);
    // The first model call was made once; the resumed call carried the persisted tool result.
    expect(chats()).toHaveLength(3);
    const last = chats()[2]?.body as { messages: Array<{ role: string; content: string }> };
    expect(last.messages.at(-1)).toMatchObject({ role: 'tool', content: '42' });
    expect(last.messages.filter((m) => m.role === 'assistant')).toHaveLength(1);
    const types = await eventTypes(id);
    expect(types.filter((t) => t === 'run.in_progress')).toHaveLength(2);
    expect(types.at(-1)).toBe('run.completed');
  }, 240_000);

  it('a run whose servers keep dying ends expired with run_lost, never left in progress', async () => {
    if (!server) await start();
    fake.received.length = 0;
    fake.next({ kind: 'hang' });
    const created = await api<RunView>('POST', '/runs', { agent: 'calc', input: 'doomed', background: true });
    expect(created.status).toBe(202);
    const id = created.body.id;
    // The first worker and three takeovers die while the model call is in flight.
    for (let attempt = 0; attempt <= 3; attempt++) {
      await waitingOnModel(id, 0);
      await kill();
      if (attempt < 3) fake.next({ kind: 'hang' });
      await start();
    }
    const run = await ended(id);
    expect(run).toMatchObject({ status: 'expired', stopReason: null, lastError: { code: 'run_lost' } });
    // The fourth takeover gave up without calling the model.
    expect(chats()).toHaveLength(4);
    const types = await eventTypes(id);
    // Four executions started (the first and three takeovers); the fifth claim only ended it.
    expect(types.filter((t) => t === 'run.in_progress')).toHaveLength(4);
    expect(types.at(-1)).toBe('run.expired');
  }, 300_000);
});
