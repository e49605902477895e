import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { berthInProcess } from '../../../test/helpers/cli.ts';
import { type GatewayWorkspace, gatewayWorkspace, listen } from '../../../test/helpers/gateway.ts';
import { EXIT_RUN_WAITING } from '../../cli/runs.commands.ts';
import { microsToUsd } from '../../platform/money.ts';
import { memoryCredits } from '../gateway/index.ts';
import type { RunView, StepView } from './agents.runs.schemas.ts';

/**
 * `berth agents run` and `berth runs list|get|cancel|approve|deny|events` in process, over
 * HTTP against a listening test app whose provider is a real OpenAI-compatible upstream
 * (test/fakes) answering as scripted, with API keys as a script would use them.
 */

let app: TestApp;
let fake: FakeOpenAi;
let gw: GatewayWorkspace;
let url: string;
/** agents:run + agents:read */
let runner: string;
let reader: string;
/** agents:run only: runs, but cannot read steps. */
let starter: string;
const credits = memoryCredits();

async function key(scopes: string[]) {
  const res = await gw.owner.post<{ secret: string }>(`/api/workspaces/${gw.workspaceId}/keys`, {
    name: 'cli',
    scopes,
  });
  if (res.status !== 201) throw new Error(`key: ${res.status} ${res.text}`);
  return res.body.secret;
}

async function agent(name: string, tools: Array<Record<string, unknown>>) {
  const res = await gw.owner.post(`/api/workspaces/${gw.workspaceId}/agents/import?publish=true`, {
    name,
    model: 'gpt-4o-mini',
    instructions: 'You are a careful calculator.',
    tools,
  });
  expect(res.status, res.text).toBe(201);
}

const berth = (args: string[], apiKey = runner, stdin = '', base = url) =>
  berthInProcess(args, { BERTH_URL: base, BERTH_API_KEY: apiKey }, stdin);

async function getRun(id: string): Promise<RunView> {
  const r = await berth(['runs', 'get', id, '--json'], reader);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as RunView;
}

/** The run a test just started (newest first). */
async function newestRun(): Promise<RunView> {
  const r = await berth(['runs', 'list', '--limit', '1', '--json'], reader);
  const run = (JSON.parse(r.stdout) as { data: RunView[] }).data[0];
  if (!run) throw new Error('no run');
  return run;
}

const lines = (text: string) => text.split('\n');
const jsonLines = (text: string) =>
  lines(text)
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as { id: number; event: string; data: Record<string, unknown> });

beforeAll(async () => {
  fake = await startFakeOpenAi();
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_GATEWAY_RETRIES: 0 }, credits });
  gw = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o-mini'] }] });
  credits.grant(gw.workspaceId, 1_000_000_000);
  url = await listen(app);
  runner = await key(['agents:run', 'agents:read']);
  reader = await key(['agents:read']);
  starter = await key(['agents:run']);
  await agent('calc', [{ type: 'builtin', name: 'calculator', requires_approval: false }]);
  await agent('careful', [{ type: 'builtin', name: 'calculator', requires_approval: true }]);
});

afterAll(async () => {
  await app?.close();
  await fake?.close();
});

beforeEach(() => {
  fake.received.length = 0;
});

describe('happy', () => {
  it('runs an agent and prints its output, steps, usage in USD and status (exit 0)', async () => {
    fake.next(
      { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"6*7"}' }] },
      { kind: 'reply', content: 'The answer is 42.' },
    );
    const r = await berth(['agents', 'run', 'calc', '--input', 'What is 6*7?']);
    expect(r.code, r.stderr).toBe(0);
    const out = lines(r.stdout);
    expect(out[0]).toBe('The answer is 42.');
    expect(out).toContain('steps:');
    expect(r.stdout).toMatch(/^ +1 {2}model {2}- +completed +\d+ tokens \(\d+ in, \d+ out\) +\d+ ms$/m);
    expect(r.stdout).toMatch(/^ +2 {2}tool {3}calculator +completed +- +\d+ ms$/m);
    expect(r.stdout).toMatch(/^ +3 {2}model {2}- +completed /m);
    const id = /^(run_\S+) completed \(end_turn\)$/.exec(out.at(-1) ?? '')?.[1] as string;
    expect(id).toBeDefined();

    // The usage line is the run's own numbers, its cost in USD from exact micro-units.
    const run = await getRun(id);
    expect(run.costMicros).toBeGreaterThan(0);
    const { inputTokens: i, outputTokens: o } = run.usage;
    expect(r.stdout).toContain(
      `usage: ${i + o} tokens (${i} in, ${o} out), 2 model steps, 1 tool step, ${microsToUsd(run.costMicros)} USD`,
    );
  });

  it('prints the run as JSON with --json, pins a version and continues a previous run', async () => {
    fake.next({ kind: 'reply', content: 'first answer' });
    const first = await berth(['agents', 'run', 'calc', '--input', 'remember blue', '--agent-version', '1', '--json']);
    expect(first.code, first.stderr).toBe(0);
    const a = JSON.parse(first.stdout) as RunView;
    expect(a).toMatchObject({ object: 'agent.run', status: 'completed', output: 'first answer', agentVersion: 1 });

    fake.next({ kind: 'reply', content: 'It was blue.' });
    const second = await berth(
      ['agents', 'run', 'calc', '--input', '-', '--previous-run', a.id, '--json'],
      runner,
      'what colour?',
    );
    expect(second.code, second.stderr).toBe(0);
    expect(JSON.parse(second.stdout)).toMatchObject({
      previousRunId: a.id,
      output: 'It was blue.',
      input: 'what colour?',
    });
    // The model saw the earlier turn, then the new input.
    const sent = fake.received.at(-1)?.body as { messages: Array<{ role: string; content: string }> };
    expect(sent.messages.map((m) => [m.role, m.content])).toEqual([
      ['system', 'You are a careful calculator.'],
      ['user', 'remember blue'],
      ['assistant', 'first answer'],
      ['user', 'what colour?'],
    ]);
  });

  it('streams the events as they come, and one JSON event per line with --json', async () => {
    fake.next(
      { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"3*3"}' }] },
      { kind: 'reply', content: 'nine' },
    );
    const r = await berth(['agents', 'run', 'calc', '--input', 'stream it', '--stream']);
    expect(r.code, r.stderr).toBe(0);
    const out = lines(r.stdout);
    expect(out[0]).toMatch(/^queued: agent agt_\S+ v1$/);
    expect(out).toContain('in progress');
    expect(r.stdout).toMatch(/^step 1 {2}model {2}\d+ tokens \(\d+ in, \d+ out\), [\d.]+ USD$/m);
    expect(out).toContain('  calls calculator {"expression":"3*3"}');
    expect(out).toContain('step 2  tool   calculator  completed: 9');
    expect(out).toContain('nine');
    expect(out.at(-2)).toMatch(/^usage: \d+ tokens .*, 2 model steps, 1 tool step, [\d.]+ USD$/);
    expect(out.at(-1)).toBe('completed (end_turn)');

    fake.next({ kind: 'reply', content: 'streamed' });
    const j = await berth(['agents', 'run', 'calc', '--input', 'json it', '--stream', '--json']);
    expect(j.code, j.stderr).toBe(0);
    const events = jsonLines(j.stdout);
    expect(events.map((e) => e.event)).toEqual(['run.created', 'run.in_progress', 'run.step', 'run.completed']);
    expect(events.map((e) => e.id)).toEqual([1, 2, 3, 4]);
    expect(events[3]?.data).toMatchObject({ status: 'completed', output: 'streamed' });
  });

  it('queues a background run, follows its events live and replays them after --after', async () => {
    fake.next({ kind: 'reply', content: 'done in the background' });
    const q = await berth(['agents', 'run', 'calc', '--input', 'later', '--background']);
    expect(q.code, q.stderr).toBe(0);
    const id = /^Queued (run_\S+) \(agt_\S+ v1\); follow it: berth runs events \1$/.exec(q.stdout)?.[1] as string;
    expect(id).toBeDefined();
    expect((await getRun(id)).status).toBe('queued');

    // Following before a worker took it: the command waits for the run's events.
    const following = berth(['runs', 'events', id], reader);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await app.jobs.drain();
    const r = await following;
    expect(r.code, r.stderr).toBe(0);
    const out = lines(r.stdout);
    expect(out[0]).toMatch(/^queued: agent agt_\S+ v1$/);
    expect(out).toContain('done in the background');
    expect(out.at(-1)).toBe(`${id} completed (end_turn)`);

    const replay = await berth(['runs', 'events', id, '--after', '2', '--json'], reader);
    expect(replay.code).toBe(0);
    expect(jsonLines(replay.stdout).map((e) => [e.id, e.event])).toEqual([
      [3, 'run.step'],
      [4, 'run.completed'],
    ]);
  });

  it('resumes a broken event stream with Last-Event-ID, losing and repeating nothing', async () => {
    fake.next({ kind: 'reply', content: 'resumable' });
    const made = JSON.parse((await berth(['agents', 'run', 'calc', '--input', 'x', '--json'])).stdout) as RunView;
    // A proxy that cuts the first event stream right after its first event.
    const asked: Array<string | undefined> = [];
    let cut = false;
    const proxy: Server = createServer((req, res) => {
      const events = req.url?.endsWith('/events') ?? false;
      if (events) asked.push(req.headers['last-event-id'] as string | undefined);
      const up = httpRequest(`${url}${req.url}`, { method: req.method, headers: req.headers }, (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        if (!events || cut) {
          upRes.pipe(res);
          return;
        }
        cut = true;
        let text = '';
        let sent = false;
        upRes.on('data', (d: Buffer) => {
          text += d.toString('utf8');
          const end = text.indexOf('\n\n');
          if (sent || end < 0) return;
          sent = true;
          res.write(text.slice(0, end + 2), () => res.socket?.destroy());
        });
      });
      req.pipe(up);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    try {
      const r = await berth(['runs', 'events', made.id, '--json'], reader, '', proxyUrl);
      expect(r.code, r.stderr).toBe(0);
      expect(jsonLines(r.stdout).map((e) => e.id)).toEqual([1, 2, 3, 4]);
      expect(asked).toEqual(['0', '1']);
    } finally {
      await new Promise((resolve) => proxy.close(resolve));
    }
  });

  it('lists runs by agent and status, a page at a time', async () => {
    const all = await berth(['runs', 'list', '--agent', 'calc', '--status', 'completed', '--json'], reader);
    expect(all.code, all.stderr).toBe(0);
    const page = JSON.parse(all.stdout) as { data: RunView[] };
    expect(page.data.length).toBeGreaterThanOrEqual(5);
    expect(page.data.every((r) => r.status === 'completed')).toBe(true);

    const one = await berth(['runs', 'list', '--agent', 'calc', '--limit', '1'], reader);
    expect(one.code).toBe(0);
    expect(one.stdout).toMatch(
      /^run_\S+ {2}completed +end_turn +agt_\S+ v1 + \d+ tokens + [\d.]+ USD {2}\d{4}-\d\d-\d\dT\S+Z\n\nMore: add --cursor run_\S+$/,
    );
    expect((await berth(['runs', 'list', '--status', 'expired'], reader)).stdout).toBe('No runs.');
  });
});

describe('approvals', () => {
  it('exits 8 while a run waits, approves with edited arguments, and shows the steps once it ran', async () => {
    fake.next(
      { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"2+2"}' }] },
      { kind: 'reply', content: 'It is 9.' },
    );
    const r = await berth(['agents', 'run', 'careful', '--input', 'add']);
    expect(r.code).toBe(EXIT_RUN_WAITING);
    const run = await newestRun();
    const call = run.requiredAction?.toolCalls[0]?.id as string;
    expect(r.stdout).toContain(`waiting for approval until ${run.requiredAction?.expiresAt}:`);
    expect(r.stdout).toContain(`  ${call}  calculator  {"expression":"2+2"}`);
    expect(r.stdout).toContain(`approve: berth runs approve ${run.id}`);
    expect(lines(r.stdout).at(-1)).toBe(`${run.id} requires_action`);

    const bad = await berth(['runs', 'approve', run.id, '--tool-call', call, '--arguments', '[1]', '--json']);
    expect(bad.code).toBe(4);
    expect(JSON.parse(bad.stdout)).toMatchObject({ error: { code: 'invalid_arguments' } });

    const ok = await berth(['runs', 'approve', run.id, '--tool-call', call, '--arguments', '{"expression":"4+5"}']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toBe(`Approved ${call} of ${run.id}; it is queued (follow it: berth runs events ${run.id}).`);
    await app.jobs.drain();

    const shown = await berth(['runs', 'get', run.id, '--steps'], reader);
    expect(shown.code).toBe(0);
    expect(lines(shown.stdout)[0]).toBe(`${run.id}  completed (end_turn)`);
    expect(shown.stdout).toMatch(/^ +2 {2}tool {3}calculator +completed /m);
    expect(shown.stdout.endsWith('output:\nIt is 9.')).toBe(true);
    const withSteps = JSON.parse(
      (await berth(['runs', 'get', run.id, '--steps', '--json'], reader)).stdout,
    ) as RunView & {
      steps: StepView[];
    };
    expect(withSteps.status).toBe('completed');
    expect(withSteps.steps.find((s) => s.kind === 'tool')?.content).toEqual({
      arguments: '{"expression":"4+5"}',
      result: '9',
    });

    // Deciding on a finished run: exit 4 with the server's code.
    const again = await berth(['runs', 'approve', run.id, '--json']);
    expect(again.code).toBe(4);
    expect(JSON.parse(again.stdout)).toMatchObject({ error: { code: 'run_finished' } });
  });

  it('denies with a reason the model is told', async () => {
    fake.next(
      { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"2+2"}' }] },
      { kind: 'reply', content: 'Understood.' },
    );
    expect((await berth(['agents', 'run', 'careful', '--input', 'add', '--json'])).code).toBe(EXIT_RUN_WAITING);
    const run = await newestRun();
    const denied = await berth(['runs', 'deny', run.id, '--reason', 'not today', '--json']);
    expect(denied.code, denied.stderr).toBe(0);
    expect(JSON.parse(denied.stdout)).toMatchObject({ id: run.id, status: 'queued' });
    await app.jobs.drain();
    const last = fake.received.at(-1)?.body as { messages: Array<{ role: string; content: string }> };
    expect(last.messages.at(-1)?.content).toContain('not today');
    expect((await getRun(run.id)).output).toBe('Understood.');
  });

  it('streams up to the approval (exit 8), cancels, and follows the cancelled run (exit 1)', async () => {
    fake.next({ kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"1+1"}' }] });
    const r = await berth(['agents', 'run', 'careful', '--input', 'add', '--stream']);
    expect(r.code).toBe(EXIT_RUN_WAITING);
    expect(r.stdout).toContain('  calls calculator {"expression":"1+1"}');
    expect(r.stdout).toContain('(the run: berth runs list --status requires_action)');
    expect(lines(r.stdout).at(-1)).toBe('requires_action');

    const run = await newestRun();
    expect(run.status).toBe('requires_action');
    const cancelled = await berth(['runs', 'cancel', run.id]);
    expect(cancelled.code, cancelled.stderr).toBe(0);
    expect(cancelled.stdout).toBe(`Cancelled ${run.id}.`);
    const followed = await berth(['runs', 'events', run.id], reader);
    expect(followed.code).toBe(1);
    expect(lines(followed.stdout).at(-1)).toBe(`${run.id} cancelled (cancelled): cancelled: The run was cancelled.`);

    const again = await berth(['runs', 'cancel', run.id, '--json']);
    expect(again.code).toBe(4);
    expect(JSON.parse(again.stdout)).toMatchObject({ error: { code: 'run_finished' } });
  });
});

describe('errors', () => {
  it('exits 1 with the run’s error when it fails', async () => {
    fake.next({ kind: 'status', status: 500 });
    const r = await berth(['agents', 'run', 'calc', '--input', 'hello']);
    expect(r.code).toBe(1);
    expect(lines(r.stdout).at(-1)).toMatch(/^run_\S+ failed \(llm_error\): upstream_error: .+$/);

    fake.next({ kind: 'status', status: 500 });
    const s = await berth(['agents', 'run', 'calc', '--input', 'hello', '--stream', '--json']);
    expect(s.code).toBe(1);
    expect(jsonLines(s.stdout).at(-1)).toMatchObject({ event: 'run.failed', data: { stopReason: 'llm_error' } });
  });

  it('exits 4 with the server’s code when refused, 2 for unusable input', async () => {
    const scoped = await berth(['agents', 'run', 'calc', '--input', 'x', '--json'], reader);
    expect(scoped.code).toBe(4);
    expect(JSON.parse(scoped.stdout)).toMatchObject({ error: { code: 'insufficient_scope' } });
    const unknown = await berth(['agents', 'run', 'nobody', '--input', 'x']);
    expect(unknown.code).toBe(4);
    expect(unknown.stderr).toMatch(/^berth: .+/);
    const missing = await berth(['runs', 'get', 'run_00000000000000000000000000', '--json'], reader);
    expect(missing.code).toBe(4);
    expect(JSON.parse(missing.stdout)).toMatchObject({ error: { code: 'not_found' } });
    const noEvents = await berth(['runs', 'events', 'run_00000000000000000000000000', '--json'], reader);
    expect(noEvents.code).toBe(4);
    expect(JSON.parse(noEvents.stdout)).toMatchObject({ error: { code: 'not_found' } });
    const badStatus = await berth(['runs', 'list', '--status', 'sleeping', '--json'], reader);
    expect(badStatus.code).toBe(4);
    expect(JSON.parse(badStatus.stdout)).toMatchObject({ error: { code: 'validation_failed' } });

    expect((await berth(['agents', 'run', 'calc', '--input', 'x', '--stream', '--background'])).code).toBe(2);
    expect((await berth(['agents', 'run', 'calc', '--input', 'x', '--agent-version', 'latest'])).code).toBe(2);
    expect((await berth(['agents', 'run', 'calc'])).code).toBe(2);
    expect((await berth(['runs', 'events', 'run_x', '--after', 'soon'], reader)).code).toBe(2);
    expect((await berthInProcess(['runs', 'list'], { BERTH_URL: url })).code).toBe(2);
    // A server that cannot be reached: exit 5 at once, not after retries.
    const down = await berth(
      ['runs', 'events', 'run_x', '--workspace', gw.workspaceId],
      reader,
      '',
      'http://127.0.0.1:9',
    );
    expect(down.code).toBe(5);
    // Nothing reached the model.
    expect(fake.received).toHaveLength(0);
  });

  it('still prints the output of a run when the key may run but not read steps', async () => {
    fake.next({ kind: 'reply', content: 'short answer' });
    const r = await berth(['agents', 'run', 'calc', '--input', 'hi'], starter);
    expect(r.code).toBe(0);
    expect(lines(r.stdout)[0]).toBe('short answer');
    expect(r.stdout).not.toContain('steps:');
    expect(r.stderr).toBe('berth: steps not shown: the API key lacks agents:read.');
  });
});

describe('security', () => {
  it('shows no run of another workspace, whatever the key names', async () => {
    const other = await gatewayWorkspace(app);
    const res = await other.owner.post<{ secret: string }>(`/api/workspaces/${other.workspaceId}/keys`, {
      name: 'other',
      scopes: ['agents:run', 'agents:read'],
    });
    const theirs = res.body.secret;
    const mine = await newestRun();
    const got = await berth(['runs', 'get', mine.id, '--json'], theirs);
    expect(got.code).toBe(4);
    expect(JSON.parse(got.stdout)).toMatchObject({ error: { code: 'not_found' } });
    const cross = await berth(['runs', 'get', mine.id, '--workspace', gw.workspaceId, '--json'], theirs);
    expect(cross.code).toBe(4);
    const cancel = await berth(['runs', 'cancel', mine.id, '--json'], theirs);
    expect(cancel.code).toBe(4);
    expect((await berth(['runs', 'list', '--json'], theirs)).stdout).toContain('"data": []');
  });
});
