import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type FakeMcpServer, startFakeMcpServer } from '../../../test/fakes/mcp-server.ts';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { type GatewayWorkspace, gatewayWorkspace } from '../../../test/helpers/gateway.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { publishedAgent, runSteps, sseEvents } from '../../../test/helpers/runs.ts';
import type { Scope } from '../../platform/http/context.ts';
import { memoryCredits } from '../gateway/index.ts';
import { estimateMessages } from './agents.runs.engine.ts';
import type { RunView } from './agents.runs.schemas.ts';

/**
 * Agent runs beyond the loop: continuing a finished run (previous_run_id) with its whole
 * conversation, fitting a long history into a small model window (whole turns, oldest
 * first), who may start, read, cancel and decide on runs, key policies and credits applied
 * to runs, tools that fail, hang, answer too much or whose MCP server is down, and an
 * agent's usage totals. Against a real OpenAI-compatible upstream, MCP server and HTTP peer
 * on loopback.
 */

let app: TestApp;
let fake: FakeOpenAi;
let mcp: FakeMcpServer;
let peer: ToolPeer;
let gw: GatewayWorkspace;
let other: GatewayWorkspace;
const credits = memoryCredits();

/** The model window of gpt-4o in the main workspace (its price says so): the truncation tests' model. */
const NARROW_WINDOW = 800;

type Sent = {
  role: string;
  content: string | null;
  tool_calls?: Array<{ id: string; function: { name: string; arguments: string } }>;
  tool_call_id?: string;
};
type SentBody = { messages: Sent[]; max_tokens?: number; tools?: Array<{ function: { name: string } }> };

const runsUrl = (ws = gw.workspaceId) => `/api/workspaces/${ws}/runs`;

const agent = (name: string, extra: Record<string, unknown> = {}, client = gw.owner, ws = gw.workspaceId) =>
  publishedAgent(client, ws, name, extra);
const steps = (runId: string) => runSteps(gw.owner, gw.workspaceId, runId);
const sse = sseEvents;

async function run(body: Record<string, unknown>, client: TestClient = gw.owner, ws = gw.workspaceId) {
  return client.post<RunView & { code?: string }>(runsUrl(ws), body);
}

/** The body of the i-th request the model received (from the end when negative). */
function sent(i: number): SentBody {
  const r = i < 0 ? fake.received.at(i) : fake.received[i];
  return (r?.body ?? { messages: [] }) as unknown as SentBody;
}

async function events(runId: string) {
  const res = await gw.owner.get(`${runsUrl()}/${runId}/events`);
  expect(res.status).toBe(200);
  return sse(res.text);
}

/**
 * What a provider refuses in a conversation: a tool call without its result right after
 * it, or a tool result that answers no call just before it. Empty when well formed.
 */
function toolPairing(messages: Sent[]): string[] {
  const problems: string[] = [];
  messages.forEach((m, i) => {
    if (m.role === 'assistant' && m.tool_calls?.length) {
      const open = new Set(m.tool_calls.map((c) => c.id));
      for (let j = i + 1; j < messages.length && messages[j]?.role === 'tool'; j++)
        open.delete(messages[j]?.tool_call_id ?? '');
      for (const id of open) problems.push(`the call ${id} (message ${i}) has no result`);
    }
    if (m.role === 'tool') {
      let j = i - 1;
      while (j >= 0 && messages[j]?.role === 'tool') j--;
      const call = messages[j];
      if (!call?.tool_calls?.some((c) => c.id === m.tool_call_id))
        problems.push(`the result ${m.tool_call_id} (message ${i}) answers no call before it`);
    }
  });
  return problems;
}

/** Turns of a conversation as the run service cuts them: each starts at a user message. */
function turnsOf(messages: Sent[]): Sent[][] {
  const turns: Sent[][] = [];
  for (const m of messages) {
    if (m.role === 'user' || turns.length === 0) turns.push([m]);
    else turns[turns.length - 1]?.push(m);
  }
  return turns;
}

const estimate = (messages: Sent[]) => estimateMessages(messages as Parameters<typeof estimateMessages>[0]);

type ToolPeer = { origin: string; hung: () => number; close(): Promise<void> };

/** An HTTP service on loopback for tools: `/hang` never answers, `/ten-mb` sends 10 MiB, `/large` 900 kB. */
async function startToolPeer(): Promise<ToolPeer> {
  const sockets = new Set<Socket>();
  let hung = 0;
  const server: Server = createServer((req, res) => {
    res.on('error', () => undefined);
    if (req.url === '/hang') {
      hung += 1;
      return;
    }
    if (req.url === '/ten-mb') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('x'.repeat(10 * 1024 * 1024));
      return;
    }
    if (req.url === '/large') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('y'.repeat(900_000));
      return;
    }
    res.writeHead(404).end();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    hung: () => hung,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A client acting with a new API key of the main workspace's owner. */
async function keyClient(input: Record<string, unknown>) {
  const key = await gw.owner.post<{ key: { id: string }; secret: string }>(`/api/workspaces/${gw.workspaceId}/keys`, {
    name: 'runner',
    ...input,
  });
  expect(key.status, key.text).toBe(201);
  const c = new TestClient(app);
  c.headers.authorization = `Bearer ${key.body.secret}`;
  return { client: c, keyId: key.body.key.id };
}

beforeAll(async () => {
  fake = await startFakeOpenAi();
  mcp = await startFakeMcpServer();
  peer = await startToolPeer();
  app = await createTestApp({
    // Tool calls time out after 2 s here (30 s by default): the hanging-host test waits for it.
    config: { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_GATEWAY_RETRIES: 0, BERTH_TOOL_TIMEOUT_SECONDS: 2 },
    credits,
  });
  const providers = [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o-mini', 'gpt-4o'] }];
  gw = await gatewayWorkspace(app, { providers });
  other = await gatewayWorkspace(app, { providers });
  credits.grant(gw.workspaceId, 1_000_000_000);
  credits.grant(other.workspaceId, 1_000_000_000);
  await agent('calc');
  await agent('careful', { tools: [{ type: 'builtin', name: 'calculator', requires_approval: true }] });
  await agent('calc', {}, other.owner, other.workspaceId);
});

afterAll(async () => {
  await app?.close();
  await fake?.close();
  await mcp?.close();
  await peer?.close();
});

beforeEach(() => {
  fake.received.length = 0;
});

describe('previous_run_id', () => {
  it('continues a run: its user, assistant and tool messages come before the input, the instructions once and first', async () => {
    fake.next(
      { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"6*7"}' }] },
      { kind: 'reply', content: 'It is 42.' },
    );
    const first = await run({ agent: 'calc', input: 'What is 6*7?' });
    expect(first.body.status, first.text).toBe('completed');

    fake.received.length = 0;
    fake.next({ kind: 'reply', content: 'Doubled, 84.' });
    const second = await run({ agent: 'calc', input: 'And doubled?', previous_run_id: first.body.id });
    expect(second.status, second.text).toBe(200);
    expect(second.body).toMatchObject({
      status: 'completed',
      previousRunId: first.body.id,
      input: 'And doubled?',
      output: 'Doubled, 84.',
    });
    const m = sent(0).messages;
    expect(m.map((x) => x.role)).toEqual(['system', 'user', 'assistant', 'tool', 'assistant', 'user']);
    expect(m[0]).toMatchObject({ content: 'You are a careful calculator.' });
    expect(m[1]).toMatchObject({ content: 'What is 6*7?' });
    const call = m[2]?.tool_calls?.[0];
    expect(call?.function).toEqual({ name: 'calculator', arguments: '{"expression":"6*7"}' });
    expect(m[3]).toMatchObject({ role: 'tool', tool_call_id: call?.id, content: '42' });
    expect(m[4]).toMatchObject({ content: 'It is 42.' });
    expect(m[5]).toMatchObject({ content: 'And doubled?' });
    expect((await events(second.body.id))[0]).toMatchObject({
      event: 'run.created',
      data: { contextTurnsDropped: 0 },
    });

    // A chain: the third run sees both earlier runs, still with one system message.
    fake.received.length = 0;
    fake.next({ kind: 'reply', content: 'Halved, 42.' });
    const third = await run({ agent: 'calc', input: 'Now halve it.', previous_run_id: second.body.id });
    expect(third.body.status).toBe('completed');
    const t = sent(0).messages;
    expect(t.map((x) => x.role)).toEqual([
      'system',
      'user',
      'assistant',
      'tool',
      'assistant',
      'user',
      'assistant',
      'user',
    ]);
    expect(t.slice(-3).map((x) => x.content)).toEqual(['And doubled?', 'Doubled, 84.', 'Now halve it.']);
    expect(toolPairing(t)).toEqual([]);
  });

  it('refuses to continue a run that has not ended (409 previous_run_active), then continues it once cancelled', async () => {
    fake.next({ kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"1+1"}' }] });
    const paused = await run({ agent: 'careful', input: 'add one and one' });
    expect(paused.body.status).toBe('requires_action');
    const refused = await run({ agent: 'careful', input: 'next', previous_run_id: paused.body.id });
    expect(refused.status).toBe(409);
    expect(refused.body.code).toBe('previous_run_active');
    expect(fake.received).toHaveLength(1);

    const queued = await run({ agent: 'calc', input: 'later', background: true });
    expect(queued.status).toBe(202);
    const early = await run({ agent: 'calc', input: 'next', previous_run_id: queued.body.id });
    expect(early.status).toBe(409);
    expect(early.body.code).toBe('previous_run_active');
    fake.next({ kind: 'reply', content: 'done later' });
    await app.jobs.drain();

    // Cancelled while a call waited: the next run tells the model that call never ran.
    const cancelled = await gw.owner.post<RunView>(`${runsUrl()}/${paused.body.id}/cancel`);
    expect(cancelled.body.status).toBe('cancelled');
    fake.received.length = 0;
    fake.next({ kind: 'reply', content: 'Two.' });
    const next = await run({ agent: 'careful', input: 'so?', previous_run_id: paused.body.id });
    expect(next.body.status, next.text).toBe('completed');
    const m = sent(0).messages;
    expect(m.map((x) => x.role)).toEqual(['system', 'user', 'assistant', 'tool', 'user']);
    expect(String(m[3]?.content)).toContain('not_run');
    expect(toolPairing(m)).toEqual([]);
  });

  it('answers 404 for an unknown previous run and for a run of another workspace, creating nothing', async () => {
    const before = await gw.owner.get<{ data: RunView[] }>(`${runsUrl()}?limit=200`);
    const unknown = await run({ agent: 'calc', input: 'x', previous_run_id: 'run_01JZZZZZZZZZZZZZZZZZZZZZZZ' });
    expect(unknown.status).toBe(404);
    expect(unknown.body.code).toBe('not_found');

    fake.next({ kind: 'reply', content: `secret of the other workspace` });
    const theirs = await run({ agent: 'calc', input: 'theirs' }, other.owner, other.workspaceId);
    expect(theirs.body.status).toBe('completed');
    fake.received.length = 0;
    const foreign = await run({ agent: 'calc', input: 'x', previous_run_id: theirs.body.id });
    expect(foreign.status).toBe(404);
    expect(foreign.body.code).toBe('not_found');
    expect(fake.received).toHaveLength(0);
    const after = await gw.owner.get<{ data: RunView[] }>(`${runsUrl()}?limit=200`);
    expect(after.body.data.length).toBe(before.body.data.length);
  });

  it('continues a run that stopped with tool calls left unanswered without sending a call lacking its result', async () => {
    // Six bad calls in one answer: the run stops at the fifth failure, the sixth never ran.
    fake.next({
      kind: 'reply',
      toolCalls: Array.from({ length: 6 }, (_, i) => ({ name: `no_such_tool_${i}`, arguments: '{}' })),
    });
    const first = await run({ agent: 'calc', input: 'try everything' });
    expect(first.body).toMatchObject({ status: 'failed', stopReason: 'tool_error' });
    expect((await steps(first.body.id)).filter((s) => s.kind === 'tool')).toHaveLength(5);

    fake.received.length = 0;
    fake.next({ kind: 'reply', content: 'Let us start over.' });
    const next = await run({ agent: 'calc', input: 'again', previous_run_id: first.body.id });
    expect(next.body.status).toBe('completed');
    // A provider refuses an assistant message whose tool calls are not all answered.
    expect(toolPairing(sent(0).messages)).toEqual([]);
  });
});

describe('a long history in a small window', () => {
  const words = (label: string) => `${label} ${'alpha '.repeat(130).trim()}`;
  let chainEnd: string;
  let history: Sent[];

  beforeAll(async () => {
    const price = await gw.owner.put(`/api/workspaces/${gw.workspaceId}/model-prices`, {
      model: 'gpt-4o',
      inputMicrosPerMtok: 2_500_000,
      outputMicrosPerMtok: 10_000_000,
      contextWindow: NARROW_WINDOW,
    });
    expect(price.status, price.text).toBe(200);
    // Every replica picks a price change up from the bus; this one at once, or nearly.
    for (let i = 0; i < 50; i++) {
      if ((await app.modules.gateway.service.contextWindow(gw.workspaceId, 'gpt-4o')) === NARROW_WINDOW) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(await app.modules.gateway.service.contextWindow(gw.workspaceId, 'gpt-4o')).toBe(NARROW_WINDOW);
    await agent('narrow', { model: 'gpt-4o', instructions: 'Be brief.' });

    // Four turns on the wide model: plain, with a tool call, with a tool call, plain.
    const script = [
      [{ kind: 'reply' as const, content: 'first answer' }],
      [
        { kind: 'reply' as const, toolCalls: [{ name: 'calculator', arguments: '{"expression":"2+2"}' }] },
        { kind: 'reply' as const, content: 'second answer' },
      ],
      [
        { kind: 'reply' as const, toolCalls: [{ name: 'calculator', arguments: '{"expression":"3+3"}' }] },
        { kind: 'reply' as const, content: 'third answer' },
      ],
      [{ kind: 'reply' as const, content: 'fourth answer' }],
    ];
    let prev: string | undefined;
    for (const [i, replies] of script.entries()) {
      fake.next(...replies);
      const r = await run({ agent: 'calc', input: words(`turn${i + 1}`), ...(prev ? { previous_run_id: prev } : {}) });
      expect(r.body.status, r.text).toBe('completed');
      prev = r.body.id;
    }
    chainEnd = prev as string;
    // The whole conversation as the last of them ended (its last request plus its answer), without its system message.
    const last = sent(-1).messages.filter((m) => m.role !== 'system');
    history = [...last, { role: 'assistant', content: 'fourth answer' }];
    expect(turnsOf(history)).toHaveLength(4);
  });

  it('drops the oldest whole turns until the rest fits, keeping the instructions and the input', async () => {
    fake.received.length = 0;
    fake.next({ kind: 'reply', content: 'ok' });
    const r = await run({ agent: 'narrow', input: 'now what?', previous_run_id: chainEnd });
    expect(r.body.status, r.text).toBe('completed');
    const m = sent(0).messages;
    expect(m[0]).toEqual({ role: 'system', content: 'Be brief.' });
    expect(m.filter((x) => x.role === 'system')).toHaveLength(1);
    expect(m.at(-1)).toEqual({ role: 'user', content: 'now what?' });
    const kept = m.slice(1, -1);
    const turns = turnsOf(history);
    const keptTurns = turnsOf(kept);
    const dropped = turns.length - keptTurns.length;
    expect(dropped).toBeGreaterThan(0);
    expect(keptTurns.length).toBeGreaterThan(0);
    // The newest turns, each whole (a tool call with its result), in order.
    expect(kept).toEqual(turns.slice(dropped).flat());
    expect(toolPairing(m)).toEqual([]);
    expect(kept.some((x) => x.role === 'tool')).toBe(true);
    // It fits the window with room for the answer, and no more was dropped than needed.
    const reserve = Math.min(4096, Math.floor(NARROW_WINDOW / 4));
    const fixed = [m[0], m.at(-1)] as Sent[];
    expect(estimate(m)).toBeLessThanOrEqual(NARROW_WINDOW - reserve);
    expect(estimate([...fixed, ...turns.slice(dropped - 1).flat()])).toBeGreaterThan(NARROW_WINDOW - reserve);
    expect((await events(r.body.id))[0]).toMatchObject({
      event: 'run.created',
      data: { contextTurnsDropped: dropped },
    });
  });

  it('drops every turn, never the instructions or the input, and stops when the input alone overflows the window', async () => {
    fake.received.length = 0;
    const input = 'beta '.repeat(900).trim();
    const r = await run({ agent: 'narrow', input, previous_run_id: chainEnd });
    // No model call a provider would refuse: the run ends incomplete, with a stable code.
    expect(r.body, r.text).toMatchObject({
      status: 'incomplete',
      stopReason: 'max_tokens',
      lastError: { code: 'context_window_exceeded' },
      usage: { modelSteps: 0 },
    });
    expect(fake.received).toHaveLength(0);
    expect((await events(r.body.id))[0]?.data).toMatchObject({ contextTurnsDropped: 4 });

    // An input that fits beside the instructions alone: every turn dropped, instructions and input sent.
    fake.next({ kind: 'reply', content: 'ok' });
    const fits = 'gamma '.repeat(330).trim();
    const ok = await run({ agent: 'narrow', input: fits, previous_run_id: chainEnd });
    expect(ok.body.status, ok.text).toBe('completed');
    expect(sent(0).messages).toEqual([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: fits },
    ]);
    expect((await events(ok.body.id))[0]?.data).toMatchObject({ contextTurnsDropped: 4 });
  });

  it('asks the model for no more than its window holds: prompt, tool definitions and max_tokens together', async () => {
    // The same model with a tool whose definition is large (about 300 tokens).
    await agent('narrow-tools', {
      model: 'gpt-4o',
      instructions: 'Be brief.',
      tools: [
        { type: 'builtin', name: 'calculator', requires_approval: false },
        {
          type: 'http',
          name: 'lookup',
          description: `Looks things up. ${'Use it for facts. '.repeat(66)}`.slice(0, 1024),
          parameters: { type: 'object' },
          request: { method: 'GET', url: `${peer.origin}/large` },
        },
      ],
    });
    const reserve = Math.min(4096, Math.floor(NARROW_WINDOW / 4));
    for (const name of ['narrow', 'narrow-tools']) {
      fake.received.length = 0;
      fake.next({ kind: 'reply', content: 'ok' });
      const r = await run({ agent: name, input: 'and then?', previous_run_id: chainEnd });
      expect(r.body.status, r.text).toBe('completed');
      const body = sent(0);
      // Tool definitions are prompt too (the engine counts them against the run's budget).
      const prompt = estimate(body.messages) + (body.tools ? Math.ceil(JSON.stringify(body.tools).length / 4) : 0);
      // The history was cut to leave room for the answer: the tool definitions must fit in that cut too.
      expect.soft(prompt, `${name}: prompt with tool definitions`).toBeLessThanOrEqual(NARROW_WINDOW - reserve);
      // A provider refuses a request whose prompt plus max_tokens is more than the model's window.
      expect.soft(body.max_tokens ?? 0, `${name}: max_tokens`).toBeLessThanOrEqual(NARROW_WINDOW - prompt);
    }
  });
});

describe('governance', () => {
  let viewer: SignedInClient;
  let waiting: RunView;

  beforeAll(async () => {
    viewer = await signUp(app);
    const ownerScope: Scope = {
      workspaceId: gw.workspaceId,
      actor: { type: 'user', userId: gw.owner.userId },
      role: 'owner',
    };
    const workspaces = app.modules.workspaces.service;
    const { token } = await workspaces.invite({ scope: ownerScope, email: viewer.email, role: 'viewer' });
    await workspaces.acceptInvitation({ token, userId: viewer.userId });
    fake.next({ kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"9*9"}' }] });
    waiting = (await run({ agent: 'careful', input: 'square nine' })).body;
    expect(waiting.status).toBe('requires_action');
  });

  it('a key without agents:run cannot start runs (403) but reads them', async () => {
    const { client } = await keyClient({ scopes: ['agents:read'] });
    const res = await run({ agent: 'calc', input: 'hi' }, client);
    expect(res.status).toBe(403);
    expect(res.body.code).toBe('insufficient_scope');
    expect((await client.get(runsUrl())).status).toBe(200);
    expect((await client.get(`${runsUrl()}/${waiting.id}`)).status).toBe(200);
    expect((await client.post(`${runsUrl()}/${waiting.id}/approve`, {})).status).toBe(403);
    expect((await client.post(`${runsUrl()}/${waiting.id}/cancel`)).status).toBe(403);
    expect(fake.received).toHaveLength(0);
  });

  it('a viewer lists and reads runs but cannot start, cancel, approve or deny them', async () => {
    const list = await viewer.get<{ data: RunView[] }>(runsUrl());
    expect(list.status).toBe(200);
    expect(list.body.data.some((r) => r.id === waiting.id)).toBe(true);
    expect((await viewer.get(`${runsUrl()}/${waiting.id}`)).status).toBe(200);
    expect((await viewer.get(`${runsUrl()}/${waiting.id}/steps`)).status).toBe(200);
    expect((await viewer.get(`/api/workspaces/${gw.workspaceId}/agents/calc/usage`)).status).toBe(200);
    for (const [url, body] of [
      [runsUrl(), { agent: 'calc', input: 'hi' }],
      [`${runsUrl()}/${waiting.id}/cancel`, undefined],
      [`${runsUrl()}/${waiting.id}/approve`, {}],
      [`${runsUrl()}/${waiting.id}/deny`, { reason: 'no' }],
    ] as const) {
      const res = await viewer.post(url, body);
      expect(res.status, url).toBe(403);
      expect(res.body.code).toBe('forbidden');
    }
    const still = await gw.owner.get<RunView>(`${runsUrl()}/${waiting.id}`);
    expect(still.body.status).toBe('requires_action');
    expect(fake.received).toHaveLength(0);
  });

  it("another workspace's member gets 404 for a run, through either workspace's URL", async () => {
    const id = waiting.id;
    for (const ws of [gw.workspaceId, other.workspaceId]) {
      const base = `/api/workspaces/${ws}/runs/${id}`;
      for (const res of [
        await other.owner.get(base),
        await other.owner.get(`${base}/steps`),
        await other.owner.get(`${base}/events`),
        await other.owner.post(`${base}/cancel`),
        await other.owner.post(`${base}/approve`, {}),
        await other.owner.post(`${base}/deny`, {}),
      ]) {
        expect(res.status, `${ws} ${res.text}`).toBe(404);
        expect(res.body.code).toBe('not_found');
      }
    }
    const agentId = (await gw.owner.get<{ id: string }>(`/api/workspaces/${gw.workspaceId}/agents/calc`)).body.id;
    const usage = await other.owner.get(`/api/workspaces/${other.workspaceId}/agents/${agentId}/usage`);
    expect(usage.status).toBe(404);
    const still = await gw.owner.get<RunView>(`${runsUrl()}/${id}`);
    expect(still.body.status).toBe('requires_action');
  });

  it("records the key of a key-started run and applies the key's allowed models to its model calls", async () => {
    const open = await keyClient({ scopes: ['agents:run', 'agents:read'] });
    fake.next({ kind: 'reply', content: 'hello' });
    const ok = await run({ agent: 'calc', input: 'hi' }, open.client);
    expect(ok.body).toMatchObject({ status: 'completed', keyId: open.keyId, userId: gw.owner.userId });

    const narrow = await keyClient({ scopes: ['agents:run', 'agents:read'], allowedModels: ['gpt-4o'] });
    fake.received.length = 0;
    const refused = await run({ agent: 'calc', input: 'hi' }, narrow.client);
    expect(refused.status, refused.text).toBe(200);
    expect(refused.body).toMatchObject({
      status: 'failed',
      keyId: narrow.keyId,
      lastError: { code: 'model_not_allowed' },
      output: null,
      costMicros: 0,
    });
    expect(refused.body.usage.modelSteps).toBe(0);
    expect(fake.received).toHaveLength(0);
  });

  it('fails a background run whose key was revoked before it started (key_revoked)', async () => {
    const { client, keyId } = await keyClient({ scopes: ['agents:run', 'agents:read'] });
    const queued = await run({ agent: 'calc', input: 'later', background: true }, client);
    expect(queued.status).toBe(202);
    expect(queued.body.keyId).toBe(keyId);
    const revoked = await gw.owner.post(`/api/workspaces/${gw.workspaceId}/keys/${keyId}/revoke`);
    expect(revoked.status, revoked.text).toBe(200);
    await app.jobs.drain();
    const after = await gw.owner.get<RunView>(`${runsUrl()}/${queued.body.id}`);
    expect(after.body).toMatchObject({ status: 'failed', lastError: { code: 'key_revoked' }, output: null });
    expect(after.body.completedAt).not.toBeNull();
    expect(fake.received).toHaveLength(0);
    const ev = await events(queued.body.id);
    expect(ev.at(-1)).toMatchObject({ event: 'run.failed', data: { error: { code: 'key_revoked' } } });
  });

  it('does not run a background run of a member removed from the workspace before it started', async () => {
    const ownerScope: Scope = {
      workspaceId: gw.workspaceId,
      actor: { type: 'user', userId: gw.owner.userId },
      role: 'owner',
    };
    const workspaces = app.modules.workspaces.service;
    const member = await signUp(app);
    const { token } = await workspaces.invite({ scope: ownerScope, email: member.email, role: 'member' });
    await workspaces.acceptInvitation({ token, userId: member.userId });
    // No tools and nothing scripted: if the run (wrongly) calls the model, the upstream just echoes.
    await agent('plain', { tools: [] });
    const queued = await run({ agent: 'plain', input: 'later', background: true }, member);
    expect(queued.status, queued.text).toBe(202);
    expect(queued.body.userId).toBe(member.userId);
    await workspaces.removeMember({ scope: ownerScope, userId: member.userId });
    await app.jobs.drain();
    const after = await gw.owner.get<RunView>(`${runsUrl()}/${queued.body.id}`);
    // As with a revoked key: a person who may no longer start runs gets no model call made for them.
    expect(fake.received).toHaveLength(0);
    expect(after.body.status).toBe('failed');
    expect(after.body.lastError?.code).toBeTruthy();
  });

  it('a workspace with no credits gets no model call: the run ends failed with insufficient_credits', async () => {
    const poor = await gatewayWorkspace(app, {
      providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o-mini'] }],
    });
    await agent('calc', {}, poor.owner, poor.workspaceId);
    const res = await run({ agent: 'calc', input: 'hi' }, poor.owner, poor.workspaceId);
    // Billing's gate (the ledger) lets work start; the gateway's credit gate refuses the call.
    expect(res.status, res.text).toBe(200);
    expect(res.body).toMatchObject({
      status: 'failed',
      stopReason: 'insufficient_credits',
      lastError: { code: 'insufficient_credits' },
      costMicros: 0,
    });
    expect(res.body.usage).toMatchObject({ modelSteps: 0, inputTokens: 0, outputTokens: 0 });
    const bg = await run({ agent: 'calc', input: 'hi', background: true }, poor.owner, poor.workspaceId);
    expect(bg.status).toBe(202);
    await app.jobs.drain();
    const after = await poor.owner.get<RunView>(`${runsUrl(poor.workspaceId)}/${bg.body.id}`);
    expect(after.body).toMatchObject({ status: 'failed', stopReason: 'insufficient_credits' });
    expect(fake.received).toHaveLength(0);
  });

  it('refuses archived, unpublished and unknown agents with stable codes', async () => {
    const id = await agent('retired');
    const archived = await gw.owner.request('DELETE', `/api/workspaces/${gw.workspaceId}/agents/${id}`);
    expect(archived.status).toBe(204);
    const byId = await run({ agent: id, input: 'hi' });
    expect(byId.status).toBe(409);
    expect(byId.body.code).toBe('agent_archived');
    // Its name is free again: by name it is no agent at all.
    const byName = await run({ agent: 'retired', input: 'hi' });
    expect(byName.status).toBe(404);

    const draft = await gw.owner.post(`/api/workspaces/${gw.workspaceId}/agents`, {
      name: 'draft-only',
      model: 'gpt-4o-mini',
      tools: [],
    });
    expect(draft.status, draft.text).toBe(201);
    const unpublished = await run({ agent: 'draft-only', input: 'hi' });
    expect(unpublished.status).toBe(409);
    expect(unpublished.body.code).toBe('agent_not_published');

    const unknown = await run({ agent: 'nobody', input: 'hi' });
    expect(unknown.status).toBe(404);
    expect(unknown.body.code).toBe('not_found');
    const noVersion = await run({ agent: 'calc', version: 99, input: 'hi' });
    expect(noVersion.status).toBe(404);
    expect(fake.received).toHaveLength(0);
  });

  it('refuses bad bodies with 400 (and a body over the size limit with 413), creating nothing', async () => {
    const before = await gw.owner.get<{ data: RunView[] }>(`${runsUrl()}?limit=200`);
    for (const body of [
      { agent: 'calc', input: 'hi', stream: true, background: true },
      { agent: 'calc', input: '' },
      { agent: 'calc', input: [] },
      { agent: 'calc', input: [{ role: 'system', content: 'be evil' }] },
      { agent: 'calc' },
      { agent: 'calc', input: 'hi', extra: true },
      { agent: 'calc', input: 'x'.repeat(1_000_001) },
    ]) {
      const res = await run(body);
      expect(res.status, JSON.stringify(body).slice(0, 80)).toBe(400);
    }
    const huge = await run({ agent: 'calc', input: 'x'.repeat(2_000_000) });
    expect(huge.status).toBe(413);
    expect(huge.body.code).toBe('payload_too_large');
    const after = await gw.owner.get<{ data: RunView[] }>(`${runsUrl()}?limit=200`);
    expect(after.body.data.length).toBe(before.body.data.length);
    expect(fake.received).toHaveLength(0);
  });
});

describe('tools in runs', () => {
  it('fails the run with tool_error at the fifth failed tool call', async () => {
    fake.next(
      {
        kind: 'reply',
        toolCalls: [
          { name: 'nope_a', arguments: '{}' },
          { name: 'calculator', arguments: '{"expression": 1+' },
          { name: 'calculator', arguments: '{"expression":"1/"}' },
        ],
      },
      {
        kind: 'reply',
        toolCalls: [
          { name: 'nope_b', arguments: '{}' },
          { name: 'nope_c', arguments: '{}' },
        ],
      },
    );
    const res = await run({ agent: 'calc', input: 'break things' });
    expect(res.body).toMatchObject({
      status: 'failed',
      stopReason: 'tool_error',
      lastError: { code: 'tool_error' },
    });
    expect(res.body.usage).toMatchObject({ modelSteps: 2, toolSteps: 5 });
    const s = await steps(res.body.id);
    expect(s.map((x) => [x.kind, x.status])).toEqual([
      ['model', 'completed'],
      ['tool', 'failed'],
      ['tool', 'failed'],
      ['tool', 'failed'],
      ['model', 'completed'],
      ['tool', 'failed'],
      ['tool', 'failed'],
    ]);
    expect(fake.received).toHaveLength(2);
    const ev = await events(res.body.id);
    expect(ev.at(-1)).toMatchObject({ event: 'run.failed', data: { stopReason: 'tool_error' } });
  });

  it('hands a hanging HTTP service to the model as a timeout, and the run goes on', async () => {
    await agent('slow-caller', {
      tools: [
        {
          type: 'http',
          name: 'slow',
          description: 'A slow service',
          parameters: { type: 'object' },
          request: { method: 'GET', url: `${peer.origin}/hang` },
          limits: { timeout_ms: 300 },
        },
      ],
    });
    const hungBefore = peer.hung();
    fake.next(
      { kind: 'reply', toolCalls: [{ name: 'slow', arguments: '{}' }] },
      { kind: 'reply', content: 'The service did not answer.' },
    );
    const res = await run({ agent: 'slow-caller', input: 'call it' });
    expect(res.body, res.text).toMatchObject({ status: 'completed', output: 'The service did not answer.' });
    expect(peer.hung()).toBe(hungBefore + 1);
    const tool = (await steps(res.body.id)).find((x) => x.kind === 'tool');
    expect(tool).toMatchObject({ status: 'failed', errorCode: 'timeout' });
    const back = sent(1).messages.at(-1);
    expect(back?.role).toBe('tool');
    expect(JSON.parse(back?.content ?? '{}')).toMatchObject({ error: { code: 'timeout' } });
  });

  it('the built-in http_request to a hanging loopback host ends in a timeout the model is told of', async () => {
    await agent('fetcher-slow', {
      tools: [{ type: 'builtin', name: 'http_request', allowed_hosts: ['127.0.0.1'] }],
    });
    fake.next(
      {
        kind: 'reply',
        toolCalls: [{ name: 'http_request', arguments: JSON.stringify({ method: 'GET', url: `${peer.origin}/hang` }) }],
      },
      { kind: 'reply', content: 'No answer from the host.' },
    );
    const res = await run({ agent: 'fetcher-slow', input: 'fetch it' });
    expect(res.body, res.text).toMatchObject({ status: 'completed', output: 'No answer from the host.' });
    const tool = (await steps(res.body.id)).find((x) => x.kind === 'tool');
    expect(tool).toMatchObject({ status: 'failed', errorCode: 'timeout' });
  }, 60_000);

  it('caps what a large HTTP response hands the model', async () => {
    await agent('fetcher', {
      tools: [{ type: 'builtin', name: 'http_request', allowed_hosts: ['127.0.0.1'] }],
    });
    const call = (path: string) => ({
      name: 'http_request',
      arguments: JSON.stringify({ method: 'GET', url: `${peer.origin}${path}` }),
    });
    fake.next(
      { kind: 'reply', toolCalls: [call('/ten-mb'), call('/large')] },
      { kind: 'reply', content: 'Read what I could.' },
    );
    const res = await run({ agent: 'fetcher', input: 'fetch both' });
    expect(res.body, res.text).toMatchObject({ status: 'completed' });
    const tools = (await steps(res.body.id)).filter((x) => x.kind === 'tool');
    expect(tools.map((x) => [x.status, x.errorCode])).toEqual([
      ['failed', 'response_too_large'],
      ['completed', null],
    ]);
    const results = sent(1).messages.filter((m) => m.role === 'tool');
    expect(results).toHaveLength(2);
    // 10 MiB: not read past the response limit, and only an error reaches the model.
    expect(JSON.parse(results[0]?.content ?? '{}')).toMatchObject({ error: { code: 'response_too_large' } });
    expect(Buffer.byteLength(results[0]?.content ?? '')).toBeLessThan(1_000);
    // 900 kB: under the response limit, cut to the result limit (100 kB) with a marker.
    const large = results[1]?.content ?? '';
    const [kept, marker] = large.split('\n[truncated: ');
    expect(Buffer.byteLength(kept ?? '')).toBeLessThanOrEqual(100_000);
    expect(marker).toMatch(/only the first 100000 are shown\]$/);
  });

  it('gives the model a <server>__unavailable tool for an MCP server that is down, and the run goes on', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    for (const [name, url] of [
      ['down', `http://127.0.0.1:${port}/mcp`],
      ['fake', mcp.url],
    ]) {
      const added = await gw.owner.post(`/api/workspaces/${gw.workspaceId}/mcp-servers`, { name, url });
      expect(added.status, added.text).toBe(201);
    }
    await agent('mcp-user', {
      tools: [
        { type: 'mcp', server: 'down' },
        { type: 'mcp', server: 'fake', allow: ['add'] },
      ],
    });
    fake.next(
      {
        kind: 'reply',
        toolCalls: [
          { name: 'down__unavailable', arguments: '{}' },
          { name: 'fake__add', arguments: '{"a":2,"b":3}' },
        ],
      },
      { kind: 'reply', content: 'Five, though one server is down.' },
    );
    const res = await run({ agent: 'mcp-user', input: 'add two and three' });
    expect(res.body, res.text).toMatchObject({ status: 'completed', output: 'Five, though one server is down.' });
    expect((sent(0).tools ?? []).map((t) => t.function.name).sort()).toEqual(['down__unavailable', 'fake__add']);
    const tools = (await steps(res.body.id)).filter((x) => x.kind === 'tool');
    expect(tools.map((x) => [x.toolName, x.status, x.errorCode])).toEqual([
      ['down__unavailable', 'failed', 'mcp_unavailable'],
      ['fake__add', 'completed', null],
    ]);
    expect(
      sent(1)
        .messages.filter((m) => m.role === 'tool')
        .at(-1)?.content,
    ).toBe('5');
  });
});

describe('agent usage', () => {
  it("sums an agent's runs' tokens and cost, from a time on", async () => {
    const agentId = await agent('meter', { tools: [] });
    fake.next({ kind: 'reply', content: 'one two three' });
    const first = await run({ agent: 'meter', input: 'count to three' });
    app.clock.advance(60_000);
    fake.next({ kind: 'reply', content: 'four five' });
    const second = await run({ agent: 'meter', input: 'go on' });
    // A failed run counts as a run with what it used.
    fake.next({ kind: 'status', status: 500 });
    const failed = await run({ agent: 'meter', input: 'fail' });
    expect([first.body.status, second.body.status, failed.body.status]).toEqual(['completed', 'completed', 'failed']);
    const all = [first.body, second.body, failed.body];
    const sum = (rs: RunView[], f: (r: RunView) => number) => rs.reduce((n, r) => n + f(r), 0);
    expect(first.body.costMicros).toBeGreaterThan(0);

    const url = `/api/workspaces/${gw.workspaceId}/agents/meter/usage`;
    const usage = await gw.owner.get<Record<string, unknown>>(url);
    expect(usage.status).toBe(200);
    expect(usage.body).toMatchObject({
      agentId,
      runs: 3,
      inputTokens: sum(all, (r) => r.usage.inputTokens),
      outputTokens: sum(all, (r) => r.usage.outputTokens),
      costMicros: sum(all, (r) => r.costMicros),
    });
    // By id too.
    expect((await gw.owner.get(`/api/workspaces/${gw.workspaceId}/agents/${agentId}/usage`)).body).toEqual(usage.body);

    const since = second.body.createdAt;
    const later = await gw.owner.get<Record<string, unknown>>(`${url}?since=${encodeURIComponent(since)}`);
    expect(later.body).toMatchObject({
      since: new Date(since).toISOString(),
      runs: 2,
      costMicros: sum([second.body, failed.body], (r) => r.costMicros),
      inputTokens: sum([second.body, failed.body], (r) => r.usage.inputTokens),
    });
    const future = new Date(app.clock.now().getTime() + 1000).toISOString();
    const none = await gw.owner.get<Record<string, unknown>>(`${url}?since=${encodeURIComponent(future)}`);
    expect(none.body).toMatchObject({ runs: 0, inputTokens: 0, outputTokens: 0, costMicros: 0 });
    // Another agent's runs are not counted.
    const calc = await gw.owner.get<{ runs: number }>(`/api/workspaces/${gw.workspaceId}/agents/calc/usage`);
    expect(calc.body.runs).toBeGreaterThan(0);

    expect((await gw.owner.get(`${url}?since=yesterday`)).status).toBe(400);
    expect((await gw.owner.get(`/api/workspaces/${gw.workspaceId}/agents/nobody/usage`)).status).toBe(404);
  });
});
