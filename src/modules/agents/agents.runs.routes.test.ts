import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { type GatewayWorkspace, gatewayWorkspace } from '../../../test/helpers/gateway.ts';
import { publishedAgent, runSteps, sseEvents } from '../../../test/helpers/runs.ts';
import { memoryCredits } from '../gateway/index.ts';
import type { RunView } from './agents.runs.schemas.ts';

/**
 * Agent runs over HTTP against a real OpenAI-compatible upstream (test/fakes): the
 * tool-calling loop, steps and events, approvals, background runs through the job queue,
 * server-sent events resumable with Last-Event-ID, cancel, bad tool calls from the model,
 * per-run cost from the gateway's metered calls, and content encrypted at rest.
 */

let app: TestApp;
let fake: FakeOpenAi;
let gw: GatewayWorkspace;
const credits = memoryCredits();
const CANARY = 'canary-run-input-5d2e';

const runsUrl = () => `/api/workspaces/${gw.workspaceId}/runs`;

const agent = (name: string, extra: Record<string, unknown> = {}) =>
  publishedAgent(gw.owner, gw.workspaceId, name, extra);
const steps = (runId: string) => runSteps(gw.owner, gw.workspaceId, runId);
const sse = sseEvents;

async function run(body: Record<string, unknown>) {
  return gw.owner.post<RunView>(runsUrl(), body);
}

beforeAll(async () => {
  fake = await startFakeOpenAi();
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_GATEWAY_RETRIES: 0 }, credits });
  gw = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o-mini'] }] });
  credits.grant(gw.workspaceId, 1_000_000_000);
  await agent('calc');
  await agent('careful', {
    tools: [
      { type: 'builtin', name: 'calculator', requires_approval: true },
      { type: 'builtin', name: 'current_time', requires_approval: false },
    ],
  });
});

afterAll(async () => {
  await app?.close();
  await fake?.close();
});

beforeEach(() => {
  fake.received.length = 0;
});

describe('a run', () => {
  it('loops model call, tool call, model call and ends with the answer, its steps, usage and cost', async () => {
    fake.next(
      { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"6*7"}' }] },
      { kind: 'reply', content: 'The answer is 42.' },
    );
    const res = await run({ agent: 'calc', input: `What is 6*7? ${CANARY}` });
    expect(res.status, res.text).toBe(200);
    const r = res.body;
    expect(r).toMatchObject({
      object: 'agent.run',
      status: 'completed',
      stopReason: 'end_turn',
      lastError: null,
      output: 'The answer is 42.',
      agentVersion: 1,
      requiredAction: null,
    });
    expect(r.usage.modelSteps).toBe(2);
    expect(r.usage.toolSteps).toBe(1);
    // The tool's result went back to the model as a tool message.
    const second = fake.received[1]?.body as { messages: Array<{ role: string; content: string }> };
    expect(second.messages.at(-1)).toMatchObject({ role: 'tool', content: '42' });
    expect(second.messages[0]).toMatchObject({ role: 'system', content: 'You are a careful calculator.' });

    const s = await steps(r.id);
    expect(s.map((x) => [x.seq, x.kind, x.status])).toEqual([
      [1, 'model', 'completed'],
      [2, 'tool', 'completed'],
      [3, 'model', 'completed'],
    ]);
    expect(s[1]).toMatchObject({
      toolName: 'calculator',
      content: { arguments: '{"expression":"6*7"}', result: '42' },
    });

    // The run's tokens and cost are the sum of its metered gateway calls (request id = run id).
    await app.modules.gateway.service.idle();
    await app.modules.gateway.service.usage.flush();
    const events = await app.db.system((tx) =>
      tx.execute(sql`select input_tokens, output_tokens, cost_micros from usage_events where request_id = ${r.id}`),
    );
    const rows = (
      events as unknown as { rows: Array<{ input_tokens: number; output_tokens: number; cost_micros: string }> }
    ).rows;
    expect(rows).toHaveLength(2);
    expect(r.usage.inputTokens).toBe(rows.reduce((n, x) => n + Number(x.input_tokens), 0));
    expect(r.usage.outputTokens).toBe(rows.reduce((n, x) => n + Number(x.output_tokens), 0));
    expect(r.costMicros).toBe(rows.reduce((n, x) => n + Number(x.cost_micros), 0));
    expect(r.costMicros).toBeGreaterThan(0);
    expect(s.reduce((n, x) => n + x.costMicros, 0)).toBe(r.costMicros);

    const usage = await gw.owner.get<{ runs: number; costMicros: number }>(
      `/api/workspaces/${gw.workspaceId}/agents/calc/usage`,
    );
    expect(usage.status).toBe(200);
    expect(usage.body.runs).toBeGreaterThanOrEqual(1);
    expect(usage.body.costMicros).toBeGreaterThanOrEqual(r.costMicros);
  });

  it('keeps its content encrypted at rest and out of the logs', async () => {
    fake.next({ kind: 'reply', content: `Noted ${CANARY}` });
    const res = await run({ agent: 'calc', input: `remember ${CANARY}` });
    expect(res.body.status).toBe('completed');
    const dump = await app.db.system((tx) =>
      tx.execute(
        sql`select r::text as t from agent_runs r where id = ${res.body.id}
            union all select s::text from agent_run_steps s where run_id = ${res.body.id}
            union all select e::text from agent_run_events e where run_id = ${res.body.id}`,
      ),
    );
    const text = (dump as unknown as { rows: Array<{ t: string }> }).rows.map((x) => x.t).join('\n');
    expect(text).toContain(res.body.id);
    expect(text).not.toContain(CANARY);
    expect(app.logs.join('\n')).not.toContain(CANARY);
  });

  it('hands bad tool calls back to the model as tool errors and goes on', async () => {
    fake.next(
      {
        kind: 'reply',
        toolCalls: [
          { name: 'calculator', arguments: '{"expression": 6*' },
          { name: 'no_such_tool', arguments: '{}' },
        ],
      },
      { kind: 'reply', content: 'Sorry, I could not compute that.' },
    );
    const res = await run({ agent: 'calc', input: 'break it' });
    expect(res.body).toMatchObject({ status: 'completed', stopReason: 'end_turn' });
    const s = await steps(res.body.id);
    expect(s.filter((x) => x.kind === 'tool').map((x) => [x.status, x.errorCode])).toEqual([
      ['failed', 'invalid_arguments'],
      ['failed', 'unknown_tool'],
    ]);
  });

  it('stops after exactly max_steps model calls', async () => {
    await agent('looper', { limits: { max_steps: 2, max_tokens: 100_000, timeout_seconds: 60 } });
    fake.next(
      { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"1+1"}' }] },
      { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"2+2"}' }] },
    );
    const res = await run({ agent: 'looper', input: 'loop' });
    expect(res.body).toMatchObject({ status: 'incomplete', stopReason: 'max_steps' });
    expect(res.body.usage.modelSteps).toBe(2);
    expect(fake.received).toHaveLength(2);
  });

  it('never asks a model for more output than the token budget has left, and stops at it', async () => {
    await agent('budget', { tools: [], limits: { max_steps: 10, max_tokens: 40, timeout_seconds: 60 } });
    const words = Array.from({ length: 20 }, (_, i) => `w${i}`).join(' ');
    const res = await run({ agent: 'budget', input: words });
    expect(res.body).toMatchObject({ status: 'incomplete', stopReason: 'max_tokens' });
    expect(fake.received).toHaveLength(1);
    const asked = (fake.received[0]?.body as { max_tokens: number } | undefined)?.max_tokens ?? 0;
    expect(asked).toBeGreaterThan(0);
    expect(asked).toBeLessThan(40);
    expect(res.body.usage.outputTokens).toBeLessThanOrEqual(asked);
    expect(res.body.usage.totalTokens).toBeLessThanOrEqual(40);
    // The cut-off answer is kept as the output.
    expect(res.body.output).toMatch(/^echo: w0/);

    // A budget smaller than the input: no model call at all.
    await agent('tiny', { tools: [], limits: { max_steps: 10, max_tokens: 5, timeout_seconds: 60 } });
    fake.received.length = 0;
    const tiny = await run({ agent: 'tiny', input: words });
    expect(tiny.body).toMatchObject({ status: 'incomplete', stopReason: 'max_tokens' });
    expect(tiny.body.usage.modelSteps).toBe(0);
    expect(fake.received).toHaveLength(0);
  });

  it('fails with llm_error and the gateway code when the model cannot be reached', async () => {
    fake.next({ kind: 'status', status: 500 });
    const res = await run({ agent: 'calc', input: 'hello' });
    expect(res.body).toMatchObject({ status: 'failed', stopReason: 'llm_error' });
    expect(res.body.lastError?.code).toBe('upstream_error');
  });
});

describe('approvals', () => {
  it('pauses for a tool that needs approval and resumes with edited arguments once approved', async () => {
    fake.next(
      { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"2+2"}' }] },
      { kind: 'reply', content: 'It is 9.' },
    );
    const res = await run({ agent: 'careful', input: 'add' });
    expect(res.body.status).toBe('requires_action');
    const action = res.body.requiredAction;
    expect(action?.toolCalls).toHaveLength(1);
    const callId = action?.toolCalls[0]?.id as string;
    expect(new Date(action?.expiresAt as string).getTime()).toBeGreaterThan(app.clock.now().getTime());

    const approved = await gw.owner.post<RunView>(`${runsUrl()}/${res.body.id}/approve`, {
      tool_call_id: callId,
      arguments: '{"expression":"4+5"}',
    });
    expect(approved.status, approved.text).toBe(200);
    expect(approved.body.status).toBe('queued');
    await app.jobs.drain();
    const done = await gw.owner.get<RunView>(`${runsUrl()}/${res.body.id}`);
    expect(done.body).toMatchObject({ status: 'completed', output: 'It is 9.' });
    const tool = (await steps(res.body.id)).find((x) => x.kind === 'tool');
    expect(tool?.content).toEqual({ arguments: '{"expression":"4+5"}', result: '9' });

    // Deciding again, or cancelling the finished run: 409 with stable codes, nothing changes.
    const again = await gw.owner.post(`${runsUrl()}/${res.body.id}/approve`, {});
    expect(again.status).toBe(409);
    expect(again.body.code).toBe('run_finished');
    const cancel = await gw.owner.post(`${runsUrl()}/${res.body.id}/cancel`);
    expect(cancel.status).toBe(409);
    expect(cancel.body.code).toBe('run_finished');
  });

  it('tells the model a denied call was denied, with the reason', async () => {
    fake.next(
      { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"2+2"}' }] },
      { kind: 'reply', content: 'Understood.' },
    );
    const res = await run({ agent: 'careful', input: 'add' });
    const denied = await gw.owner.post<RunView>(`${runsUrl()}/${res.body.id}/deny`, { reason: 'not today' });
    expect(denied.body.status).toBe('queued');
    await app.jobs.drain();
    const tool = (await steps(res.body.id)).find((x) => x.kind === 'tool');
    expect(tool).toMatchObject({ status: 'denied', errorCode: 'denied' });
    const last = fake.received.at(-1)?.body as { messages: Array<{ role: string; content: string }> };
    expect(last.messages.at(-1)?.content).toContain('not today');
  });

  it('refuses edited arguments that are not a JSON object and decisions on unknown calls', async () => {
    fake.next({ kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"2+2"}' }] });
    const res = await run({ agent: 'careful', input: 'add' });
    const callId = res.body.requiredAction?.toolCalls[0]?.id as string;
    const bad = await gw.owner.post(`${runsUrl()}/${res.body.id}/approve`, { tool_call_id: callId, arguments: '[1]' });
    expect(bad.status).toBe(400);
    expect(bad.body.code).toBe('invalid_arguments');
    const unknown = await gw.owner.post(`${runsUrl()}/${res.body.id}/approve`, { tool_call_id: 'call_nope' });
    expect(unknown.status).toBe(404);
    const still = await gw.owner.get<RunView>(`${runsUrl()}/${res.body.id}`);
    expect(still.body.status).toBe('requires_action');
    const cancelled = await gw.owner.post<RunView>(`${runsUrl()}/${res.body.id}/cancel`);
    expect(cancelled.body).toMatchObject({ status: 'cancelled', stopReason: 'cancelled' });
  });
});

describe('background runs and events', () => {
  it('queues a background run (202) that a worker runs, and replays its events from Last-Event-ID', async () => {
    fake.next({ kind: 'reply', content: 'done in the background' });
    const res = await run({ agent: 'calc', input: 'later', background: true });
    expect(res.status).toBe(202);
    expect(res.body.status).toBe('queued');
    await app.jobs.drain();
    const done = await gw.owner.get<RunView>(`${runsUrl()}/${res.body.id}`);
    expect(done.body).toMatchObject({ status: 'completed', output: 'done in the background' });

    const all = await gw.owner.get(`${runsUrl()}/${res.body.id}/events`);
    expect(all.status).toBe(200);
    expect(String(all.headers['content-type'])).toContain('text/event-stream');
    const events = sse(all.text);
    expect(events.map((e) => e.event)).toEqual(['run.created', 'run.in_progress', 'run.step', 'run.completed']);
    expect(events.map((e) => e.id)).toEqual([1, 2, 3, 4]);
    expect(events[3]?.data).toMatchObject({ status: 'completed', output: 'done in the background' });

    const resumed = await gw.owner.get(`${runsUrl()}/${res.body.id}/events`, { 'last-event-id': '2' });
    expect(sse(resumed.text).map((e) => e.id)).toEqual([3, 4]);
  });

  it('streams a run as server-sent events', async () => {
    fake.next(
      { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"3*3"}' }] },
      { kind: 'reply', content: 'nine' },
    );
    const res = await gw.owner.post(runsUrl(), { agent: 'calc', input: 'stream it', stream: true });
    expect(res.status).toBe(200);
    const events = sse(res.text);
    // The stream names its run (header and first event): a client can resume it by id.
    expect(events[0]).toMatchObject({ event: 'run.created', data: { runId: res.headers['x-berth-run-id'] } });
    expect(String(res.headers['x-berth-run-id'])).toMatch(/^run_/);
    expect(events.at(-1)).toMatchObject({ event: 'run.completed', data: { output: 'nine' } });
    expect(events.filter((e) => e.event === 'run.step').map((e) => e.data.kind)).toEqual(['model', 'tool', 'model']);
  });

  it('lists runs newest first with a cursor, by agent and status', async () => {
    const page = await gw.owner.get<{ data: RunView[]; nextCursor: string | null }>(`${runsUrl()}?limit=2`);
    expect(page.status).toBe(200);
    expect(page.body.data).toHaveLength(2);
    const next = await gw.owner.get<{ data: RunView[] }>(`${runsUrl()}?limit=2&cursor=${page.body.nextCursor}`);
    expect(next.body.data[0]?.id).not.toBe(page.body.data[0]?.id);
    const failed = await gw.owner.get<{ data: RunView[] }>(`${runsUrl()}?status=failed`);
    expect(failed.body.data.every((r) => r.status === 'failed')).toBe(true);
    const byAgent = await gw.owner.get<{ data: RunView[] }>(`${runsUrl()}?agent=looper`);
    expect(byAgent.body.data.length).toBeGreaterThan(0);
  });
});

// Last: it moves the clock a day on (sessions of earlier tests expire).
describe('approval expiry', () => {
  it('expires a run whose approval came too late (409 approval_expired)', async () => {
    // An API key acts after the clock moved (a session would have expired by then).
    const key = await gw.owner.post<{ secret: string }>(`/api/workspaces/${gw.workspaceId}/keys`, {
      name: 'runner',
      scopes: ['agents:run', 'agents:read'],
    });
    expect(key.status, key.text).toBe(201);
    const bot = new TestClient(app);
    bot.headers.authorization = `Bearer ${key.body.secret}`;
    fake.next({ kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"2+2"}' }] });
    const res = await bot.post<RunView>(runsUrl(), { agent: 'careful', input: 'add' });
    expect(res.body.status).toBe('requires_action');
    expect(res.body.keyId).not.toBeNull();
    app.clock.advance(app.config.BERTH_RUN_APPROVAL_TTL_SECONDS * 1000 + 1000);
    const late = await bot.post(`${runsUrl()}/${res.body.id}/approve`, {});
    expect(late.status).toBe(409);
    expect(late.body.code).toBe('approval_expired');
    const after = await bot.get<RunView>(`${runsUrl()}/${res.body.id}`);
    expect(after.body).toMatchObject({ status: 'expired', lastError: { code: 'approval_expired' } });
  });
});
