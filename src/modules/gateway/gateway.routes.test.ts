import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { sql } from 'drizzle-orm';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import {
  type GatewayWorkspace,
  gatewayWorkspace,
  listen,
  openAiClient,
  usageRow,
} from '../../../test/helpers/gateway.ts';
import { logIn, makeOperator, signUp } from '../../../test/helpers/identity.ts';
import { memoryCredits } from './gateway.credits.ts';
import { gatewayRepo } from './gateway.repo.ts';

/**
 * The /v1 gateway driven by the official OpenAI SDK (unmodified but for base URL and key)
 * against a real HTTP upstream speaking OpenAI's API on loopback.
 */

type UsageEvent = {
  requestId: string;
  status: number;
  errorCode: string | null;
  model: string;
  provider: string | null;
  inputTokens: number;
  outputTokens: number;
  estimated: boolean;
  costMicros: number;
  attempts: number;
  stream: boolean;
  keyId: string | null;
};

const BALANCE = 1_000_000_000;

type ApiError = InstanceType<typeof OpenAI.APIError>;

let app: TestApp;
let fake: FakeOpenAi;
let backup: FakeOpenAi;
const credits = memoryCredits();
let gw: GatewayWorkspace;

async function usageOf(w: GatewayWorkspace): Promise<UsageEvent[]> {
  const res = await w.owner.get<{ data: UsageEvent[] }>(`/api/workspaces/${w.workspaceId}/usage?limit=1000`);
  expect(res.status).toBe(200);
  return res.body.data;
}

async function lastUsage(w: GatewayWorkspace): Promise<UsageEvent> {
  await app.modules.gateway.service.idle();
  const [latest] = await usageOf(w);
  if (!latest) throw new Error('no usage event');
  return latest;
}

beforeAll(async () => {
  fake = await startFakeOpenAi();
  backup = await startFakeOpenAi();
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_GATEWAY_RETRIES: 1 }, credits });
  gw = await gatewayWorkspace(app, {
    providers: [{ name: 'fake', baseUrl: fake.baseUrl, apiKey: 'sk-upstream-secret', timeoutMs: 1500 }],
  });
  credits.grant(gw.workspaceId, BALANCE);
});

afterAll(async () => {
  await app?.close();
  await fake?.close();
  await backup?.close();
});

describe('happy', () => {
  it('lists the models of the workspace (discovered from the provider)', async () => {
    const list = await gw.openai.models.list();
    expect(list.data.map((m) => m.id).sort()).toEqual(['gpt-4o', 'gpt-4o-mini', 'text-embedding-3-small']);
    const one = await gw.openai.models.retrieve('gpt-4o');
    expect(one).toMatchObject({ id: 'gpt-4o', object: 'model', owned_by: 'fake' });
  });

  it('answers a chat completion, says who served it, and meters it exactly', async () => {
    const { data, response } = await gw.openai.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello there' }], seed: 7, stop: ['zz'] })
      .withResponse();
    expect(data.choices[0]?.message.content).toBe('echo: hello there');
    expect(response.headers.get('x-berth-provider')).toBe('fake');
    expect(response.headers.get('x-berth-model')).toBe('gpt-4o-mini');
    const requestId = response.headers.get('x-request-id');
    const upstream = fake.received.at(-1);
    expect(upstream?.headers.authorization).toBe('Bearer sk-upstream-secret');
    expect(upstream?.body).toMatchObject({ seed: 7, stop: ['zz'], model: 'gpt-4o-mini' });
    const event = await lastUsage(gw);
    expect(event).toMatchObject({
      requestId,
      status: 200,
      model: 'gpt-4o-mini',
      provider: 'fake',
      inputTokens: data.usage?.prompt_tokens,
      outputTokens: data.usage?.completion_tokens,
      estimated: false,
      attempts: 1,
      stream: false,
      keyId: gw.keyId,
    });
    // gpt-4o-mini: 0.15 USD in, 0.60 USD out per million tokens, rounded up.
    const prompt = data.usage?.prompt_tokens ?? 0;
    const completion = data.usage?.completion_tokens ?? 0;
    expect(event.costMicros).toBe(Math.ceil((prompt * 150_000 + completion * 600_000) / 1_000_000));
  });

  it('streams, with the usage chunk when asked for it', async () => {
    const stream = await gw.openai.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'one two three' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe('echo: one two three');
    expect(usage?.completion_tokens).toBe(4);
    const event = await lastUsage(gw);
    expect(event).toMatchObject({ status: 200, stream: true, outputTokens: 4, estimated: false });
  });

  it('keeps its upstream connection alive across calls and finished streams', async () => {
    const before = fake.connections();
    for (let i = 0; i < 8; i++) {
      const stream = await gw.openai.chat.completions.create({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: `stream ${i}` }],
        stream: true,
      });
      let text = '';
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
      expect(text).toBe(`echo: stream ${i}`);
      await gw.openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'json' }] });
    }
    // One call at a time: a gateway that closes the connection after each stream opens 8 or more.
    expect(fake.connections() - before).toBeLessThanOrEqual(1);
  });

  it('asks the provider for usage on every stream, but shows it only to clients that asked', async () => {
    const stream = await gw.openai.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'quiet' }],
      stream: true,
    });
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.every((c) => c.choices.length > 0 && !c.usage)).toBe(true);
    expect(fake.received.at(-1)?.body?.stream_options).toEqual({ include_usage: true });
    const event = await lastUsage(gw);
    expect(event).toMatchObject({ status: 200, outputTokens: 2, estimated: false });
  });

  it('passes tools through and returns parallel tool calls, whole and streamed', async () => {
    const tools: OpenAI.ChatCompletionTool[] = [
      {
        type: 'function',
        function: { name: 'lookup', parameters: { type: 'object', properties: { q: { type: 'string' } } } },
      },
      { type: 'function', function: { name: 'search', parameters: { type: 'object' } } },
    ];
    const res = await gw.openai.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'weather' }],
      tools,
      tool_choice: 'auto',
      parallel_tool_calls: true,
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object' } } },
    });
    expect(res.choices[0]?.finish_reason).toBe('tool_calls');
    const calls = res.choices[0]?.message.tool_calls ?? [];
    expect(calls.map((c) => (c.type === 'function' ? c.function.name : ''))).toEqual(['lookup', 'search']);
    expect(fake.received.at(-1)?.body).toMatchObject({ tool_choice: 'auto', parallel_tool_calls: true });
    expect(fake.received.at(-1)?.body?.response_format).toMatchObject({ type: 'json_schema' });

    const stream = gw.openai.chat.completions.stream({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'weather' }],
      tools,
    });
    const final = await stream.finalChatCompletion();
    const streamed = final.choices[0]?.message.tool_calls ?? [];
    expect(streamed).toHaveLength(2);
    const first = streamed[0];
    expect(first?.type === 'function' ? JSON.parse(first.function.arguments) : null).toEqual({ q: 'weather' });
  });

  it('answers n choices and embeddings', async () => {
    const res = await gw.openai.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'x' }],
      n: 2,
    });
    expect(res.choices).toHaveLength(2);
    const emb = await gw.openai.embeddings.create({ model: 'text-embedding-3-small', input: ['a b', 'c'] });
    expect(emb.data).toHaveLength(2);
    expect(emb.data[0]?.embedding).toHaveLength(512);
    const event = await lastUsage(gw);
    expect(event).toMatchObject({ status: 200, model: 'text-embedding-3-small', inputTokens: 3, outputTokens: 0 });
  });

  it('reports usage per model and per day', async () => {
    const byModel = await gw.owner.get<{ data: { group: string; requests: number }[] }>(
      `/api/workspaces/${gw.workspaceId}/usage?groupBy=model`,
    );
    expect(byModel.status).toBe(200);
    expect(byModel.body.data.map((g) => g.group)).toEqual(expect.arrayContaining(['gpt-4o', 'gpt-4o-mini']));
    const byDay = await gw.owner.get<{ data: { group: string; requests: number }[] }>(
      `/api/workspaces/${gw.workspaceId}/usage?groupBy=day`,
    );
    expect(byDay.body.data).toHaveLength(1);
    expect(byDay.body.data[0]?.requests).toBe((await usageOf(gw)).length);
  });

  it('falls back to the next provider when the first is rate limited or failing', async () => {
    const w = await gatewayWorkspace(app, {
      providers: [
        { name: 'a-primary', baseUrl: fake.baseUrl, models: ['gpt-4o'], timeoutMs: 1500 },
        { name: 'b-backup', baseUrl: backup.baseUrl, models: ['gpt-4o'], timeoutMs: 1500 },
      ],
    });
    credits.grant(w.workspaceId, BALANCE);
    fake.next({ kind: 'status', status: 429, retryAfter: '0' }, { kind: 'status', status: 503 });
    const { data, response } = await w.openai.chat.completions
      .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'fallback' }] })
      .withResponse();
    expect(data.choices[0]?.message.content).toBe('echo: fallback');
    expect(response.headers.get('x-berth-provider')).toBe('b-backup');
    expect(await lastUsage(w)).toMatchObject({ status: 200, provider: 'b-backup', attempts: 3 });
  });
  it('stops trying a provider that keeps failing (circuit breaker) and tries it again after the cool-down', async () => {
    const w = await gatewayWorkspace(app, {
      providers: [
        { name: 'a-primary', baseUrl: fake.baseUrl, models: ['gpt-4o'], timeoutMs: 1500 },
        { name: 'b-backup', baseUrl: backup.baseUrl, models: ['gpt-4o'], timeoutMs: 1500 },
      ],
    });
    credits.grant(w.workspaceId, BALANCE);
    const call = () =>
      w.openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'cb' }] }).withResponse();
    fake.next(...Array.from({ length: 6 }, () => ({ kind: 'status' as const, status: 500 })));
    for (let i = 0; i < 3; i++) expect((await call()).response.headers.get('x-berth-provider')).toBe('b-backup');
    // Five failures in a row opened the circuit: the primary is not even asked.
    const asked = fake.received.length;
    expect((await call()).response.headers.get('x-berth-provider')).toBe('b-backup');
    expect(fake.received.length).toBe(asked);
    expect(await lastUsage(w)).toMatchObject({ provider: 'b-backup', attempts: 1 });
    app.clock.advance(31_000);
    expect((await call()).response.headers.get('x-berth-provider')).toBe('a-primary');
  });

  it('routes a model alias: targets in order, fallbacks, and weighted picks', async () => {
    const w = await gatewayWorkspace(app, {
      providers: [
        { name: 'a-primary', baseUrl: fake.baseUrl, models: ['gpt-4o', 'gpt-4o-mini'], timeoutMs: 1500 },
        { name: 'b-backup', baseUrl: backup.baseUrl, models: ['gpt-4o-mini'], timeoutMs: 1500 },
      ],
    });
    credits.grant(w.workspaceId, BALANCE);
    const set = await w.owner.put(`/api/workspaces/${w.workspaceId}/routes`, {
      alias: 'fast',
      targets: [{ model: 'gpt-4o-mini', provider: 'b-backup' }, { model: 'gpt-4o' }],
    });
    expect(set.status).toBe(200);
    expect((await w.openai.models.list()).data.map((m) => m.id)).toContain('fast');
    const call = () =>
      w.openai.chat.completions.create({ model: 'fast', messages: [{ role: 'user', content: 'hi' }] }).withResponse();
    const first = await call();
    expect(first.response.headers.get('x-berth-provider')).toBe('b-backup');
    expect(first.response.headers.get('x-berth-model')).toBe('gpt-4o-mini');
    // The first target fails (after its retry): the alias falls back to the next, priced as what served it.
    backup.next({ kind: 'status', status: 503 }, { kind: 'status', status: 503 });
    const second = await call();
    expect(second.response.headers.get('x-berth-provider')).toBe('a-primary');
    expect(second.response.headers.get('x-berth-model')).toBe('gpt-4o');
    const event = await lastUsage(w);
    expect(event).toMatchObject({ model: 'gpt-4o', provider: 'a-primary', attempts: 3 });
    const prompt = event.inputTokens;
    const completion = event.outputTokens;
    expect(event.costMicros).toBe(Math.ceil((prompt * 2_500_000 + completion * 10_000_000) / 1_000_000));

    // Weighted 3:1 over two providers: both serve, the heavier more often.
    await w.owner.put(`/api/workspaces/${w.workspaceId}/routes`, {
      alias: 'fast',
      strategy: 'weighted',
      targets: [
        { model: 'gpt-4o-mini', provider: 'a-primary', weight: 3 },
        { model: 'gpt-4o-mini', provider: 'b-backup', weight: 1 },
      ],
    });
    const served: Record<string, number> = {};
    for (let i = 0; i < 80; i++) {
      const r = await call();
      const p = r.response.headers.get('x-berth-provider') ?? '';
      served[p] = (served[p] ?? 0) + 1;
    }
    expect(served['a-primary']).toBeGreaterThan(served['b-backup'] ?? 0);
    expect(served['b-backup']).toBeGreaterThan(0);
    expect((await w.owner.delete(`/api/workspaces/${w.workspaceId}/routes/fast`)).status).toBe(204);
    const gone = await call().catch((e: unknown) => e);
    expect((gone as ApiError).code).toBe('model_not_found');
  });
});

describe('errors', () => {
  it('answers unknown models with 404 model_not_found in OpenAI shape', async () => {
    const err = await gw.openai.chat.completions
      .create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect((err as ApiError).code).toBe('model_not_found');
    expect(await lastUsage(gw)).toMatchObject({ status: 404, errorCode: 'model_not_found', model: 'no-such-model' });
  });

  it('refuses models outside the key allow-list', async () => {
    const w = await gatewayWorkspace(app, {
      providers: [{ name: 'fake', baseUrl: fake.baseUrl }],
      key: { allowedModels: ['gpt-4o-mini'] },
    });
    credits.grant(w.workspaceId, BALANCE);
    const err = await w.openai.chat.completions
      .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect((err as ApiError).code).toBe('model_not_allowed');
    expect((await w.openai.models.list()).data.map((m) => m.id)).toEqual(['gpt-4o-mini']);
  });

  it('refuses with 402 insufficient_credits when the worst case is not covered, and holds nothing', async () => {
    const w = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl }] });
    credits.grant(w.workspaceId, 100);
    const err = await w.openai.chat.completions
      .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }], max_tokens: 100_000 })
      .catch((e: unknown) => e);
    expect((err as ApiError).status).toBe(402);
    expect((err as ApiError).code).toBe('insufficient_credits');
    expect(credits.balance(w.workspaceId)).toBe(100);
  });

  it('retries an upstream 500, then answers 502 without its body, meters the failure and releases the credits', async () => {
    const before = credits.balance(gw.workspaceId);
    const held = credits.openReservations();
    fake.next({ kind: 'status', status: 500 }, { kind: 'status', status: 500 });
    const err = await gw.openai.chat.completions
      .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'secret-prompt-500' }] })
      .catch((e: unknown) => e);
    expect((err as ApiError).status).toBe(502);
    expect((err as ApiError).code).toBe('upstream_error');
    expect(JSON.stringify(err)).not.toContain('secret-prompt-500');
    expect(await lastUsage(gw)).toMatchObject({ status: 502, errorCode: 'upstream_error', attempts: 2, costMicros: 0 });
    expect(credits.balance(gw.workspaceId)).toBe(before);
    expect(credits.openReservations()).toBe(held);
  });

  it('relays an upstream 4xx as upstream_bad_request without the prompt it echoed', async () => {
    fake.next({ kind: 'status', status: 422 });
    const err = await gw.openai.chat.completions
      .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'secret-prompt-422' }] })
      .catch((e: unknown) => e);
    expect((err as ApiError).status).toBe(400);
    expect((err as ApiError).code).toBe('upstream_bad_request');
    expect((err as ApiError).message).not.toContain('secret-prompt-422');
    expect(await lastUsage(gw)).toMatchObject({ status: 400, attempts: 1 });
  });

  it('times out a hanging upstream with 504', async () => {
    fake.next({ kind: 'hang' }, { kind: 'hang' });
    const err = await gw.openai.chat.completions
      .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect((err as ApiError).status).toBe(504);
    expect((err as ApiError).code).toBe('upstream_timeout');
  });

  it('answers 502 for upstream garbage and wrong content types, and stays healthy', async () => {
    for (const kind of ['garbage', 'html'] as const) {
      fake.next({ kind }, { kind });
      const err = await gw.openai.chat.completions
        .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] })
        .catch((e: unknown) => e);
      expect((err as ApiError).status).toBe(502);
    }
    const ok = await gw.openai.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'ok' }],
    });
    expect(ok.choices[0]?.message.content).toBe('echo: ok');
  });

  it('ends a truncated upstream stream with an error event the SDK raises, and meters it', async () => {
    fake.next({ kind: 'truncate' });
    const stream = await gw.openai.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'a b c d e f g h' }],
      stream: true,
    });
    const err = await (async () => {
      for await (const _ of stream) {
        // read until the error
      }
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    const event = await lastUsage(gw);
    expect(event).toMatchObject({ status: 502, errorCode: 'upstream_error', stream: true, estimated: true });
    expect(event.outputTokens).toBeGreaterThan(0);
  });

  it('meters a stream the client abandons, billing what was delivered', async () => {
    fake.next({ kind: 'slow_stream', delayMs: 50 });
    const controller = new AbortController();
    const stream = await gw.openai.chat.completions.create(
      { model: 'gpt-4o', messages: [{ role: 'user', content: 'w '.repeat(40) }], stream: true },
      { signal: controller.signal },
    );
    let seen = 0;
    await (async () => {
      for await (const chunk of stream) {
        if (chunk.choices[0]?.delta.content) seen++;
        if (seen === 3) controller.abort();
      }
    })().catch(() => undefined);
    let event: UsageEvent | undefined;
    for (let i = 0; i < 50 && event?.errorCode !== 'client_closed'; i++) {
      await new Promise((r) => setTimeout(r, 50));
      event = await lastUsage(gw);
    }
    expect(event).toMatchObject({ status: 499, errorCode: 'client_closed', estimated: true });
    expect(event?.outputTokens).toBeGreaterThan(0);
    expect(event?.costMicros).toBeGreaterThan(0);
    // The upstream stream (about 2 s of frames left) is closed, not drained: the provider stops generating.
    for (let i = 0; i < 10 && fake.openStreams() > 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(fake.openStreams()).toBe(0);
  });

  it('limits requests per minute per key with 429, Retry-After and x-ratelimit headers', async () => {
    const w = await gatewayWorkspace(app, {
      providers: [{ name: 'fake', baseUrl: fake.baseUrl }],
      key: { rateLimitRpm: 2 },
    });
    credits.grant(w.workspaceId, BALANCE);
    const call = () =>
      w.openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }).withResponse();
    const first = await call();
    expect(first.response.headers.get('x-ratelimit-limit-requests')).toBe('2');
    expect(first.response.headers.get('x-ratelimit-remaining-requests')).toBe('1');
    await call();
    const err = await call().catch((e: unknown) => e);
    expect((err as ApiError).status).toBe(429);
    expect((err as ApiError).code).toBe('rate_limited');
    expect(Number((err as ApiError).headers?.get('retry-after'))).toBeGreaterThan(0);
    app.clock.advance(60_000);
    expect((await call()).data.choices).toHaveLength(1);
  });

  it('limits tokens per minute per key: counted once known, the next call refused once the window is spent', async () => {
    const w = await gatewayWorkspace(app, {
      providers: [{ name: 'fake', baseUrl: fake.baseUrl }],
      key: { rateLimitTpm: 10 },
    });
    credits.grant(w.workspaceId, BALANCE);
    const call = () =>
      w.openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'a b c d e f g h' }] });
    await call(); // 9 prompt + 9 completion tokens: over the 10 a minute, counted after the answer
    await app.modules.gateway.service.idle();
    const err = await call().catch((e: unknown) => e);
    expect((err as ApiError).status).toBe(429);
    expect((err as ApiError).message).toContain('tokens per minute');
    app.clock.advance(60_000);
    expect((await call()).choices).toHaveLength(1);
  });

  it('refuses unpriced models unless the workspace prices them', async () => {
    const w = await gatewayWorkspace(app, {
      providers: [{ name: 'local', baseUrl: fake.baseUrl, models: ['llama-local'] }],
    });
    credits.grant(w.workspaceId, BALANCE);
    const err = await w.openai.chat.completions
      .create({ model: 'llama-local', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect((err as ApiError).code).toBe('model_not_priced');
    const set = await w.owner.put(`/api/workspaces/${w.workspaceId}/model-prices`, {
      model: 'llama-local',
      inputMicrosPerMtok: 1_000_000,
      outputMicrosPerMtok: 2_000_000,
    });
    expect(set.status).toBe(200);
    const res = await w.openai.chat.completions.create({
      model: 'llama-local',
      messages: [{ role: 'user', content: 'x' }],
    });
    expect(res.choices[0]?.message.content).toBe('echo: x');
    expect((await lastUsage(w)).costMicros).toBeGreaterThan(0);
  });

  it('refuses bodies over the gateway limit (16 MiB by default) with 413 in OpenAI shape', async () => {
    const url = await listen(app);
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gw.secret}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(17 * 1024 * 1024) }] }),
    });
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('payload_too_large');
    expect(await lastUsage(gw)).toMatchObject({ status: 413, errorCode: 'payload_too_large', model: 'unknown' });
  });

  it('rejects malformed requests with 400 in OpenAI shape', async () => {
    const url = await listen(app);
    for (const body of [
      { model: 'gpt-4o', messages: [] },
      { model: 'gpt-4o', messages: [{ role: 'wizard', content: 'x' }] },
      {
        model: 'gpt-4o',
        messages: [{ role: 'user', content: 'x' }],
        tools: [{ type: 'function', function: { name: 'bad name!' } }],
      },
      { messages: [{ role: 'user', content: 'x' }] },
    ]) {
      const res = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${gw.secret}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      expect(res.status).toBe(400);
      const json = (await res.json()) as { error: { code: string; type: string } };
      expect(json.error).toMatchObject({ code: 'validation_failed', type: 'invalid_request_error' });
    }
    const bad = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gw.secret}`, 'content-type': 'application/json' },
      body: '{"model": ',
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('invalid_json');
    // Each refused call is metered once, with its status and code.
    const events = await usageOf(gw);
    expect(events.filter((e) => e.errorCode === 'validation_failed')).toHaveLength(4);
    expect(events.filter((e) => e.errorCode === 'invalid_json')).toHaveLength(1);
  });
});

describe('security', () => {
  it('never returns or logs a provider credential', async () => {
    const list = await gw.owner.get<{ data: Record<string, unknown>[] }>(`/api/workspaces/${gw.workspaceId}/providers`);
    expect(list.status).toBe(200);
    expect(list.body.data[0]).toMatchObject({ name: 'fake', hasCredentials: true });
    expect(list.text).not.toContain('sk-upstream-secret');
    expect(app.logs.join('\n')).not.toContain('sk-upstream-secret');
  });

  it('refuses provider addresses that are private unless allow-listed', async () => {
    for (const baseUrl of [
      'http://10.1.2.3/v1',
      'http://169.254.169.254/latest',
      'http://[::1]:8080/v1',
      'file:///etc/passwd',
    ]) {
      const res = await gw.owner.post(`/api/workspaces/${gw.workspaceId}/providers`, {
        name: 'evil',
        adapter: 'openai-compatible',
        baseUrl,
        models: ['m'],
      });
      expect(res.status, baseUrl).toBe(400);
      expect(res.body.code).toBe('egress_denied');
    }
  });

  it('refuses loopback upstreams when the operator has not allowed them, also through a host name', async () => {
    const strict = await createTestApp();
    try {
      const w = await gatewayWorkspace(strict);
      const literal = await w.owner.post(`/api/workspaces/${w.workspaceId}/providers`, {
        name: 'loop',
        adapter: 'openai-compatible',
        baseUrl: fake.baseUrl,
        models: ['gpt-4o'],
      });
      expect(literal.body.code).toBe('egress_denied');
      // A name is checked where it resolves, at connect time.
      const named = await w.owner.post(`/api/workspaces/${w.workspaceId}/providers`, {
        name: 'named',
        adapter: 'openai-compatible',
        baseUrl: fake.baseUrl.replace('127.0.0.1', 'localhost'),
        models: ['gpt-4o'],
      });
      expect(named.status).toBe(201);
      const before = fake.received.length;
      const err = await w.openai.chat.completions
        .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] })
        .catch((e: unknown) => e);
      expect((err as ApiError).status).toBe(502);
      expect(fake.received.length).toBe(before);
    } finally {
      await strict.close();
    }
  });

  it('refuses a cookie-only /v1 call and keys without gateway:invoke', async () => {
    const url = await listen(app);
    const res = await fetch(`${url}/v1/models`);
    expect(res.status).toBe(401);
    const key = await gw.owner.post<{ secret: string }>(`/api/workspaces/${gw.workspaceId}/keys`, {
      name: 'usage only',
      scopes: ['usage:read'],
    });
    const err = await openAiClient(url, key.body.secret)
      .models.list()
      .catch((e: unknown) => e);
    expect((err as ApiError).status).toBe(403);
  });
});

describe('platform providers', () => {
  it("lets every workspace call the operator's providers, after its own, and only operators manage them", async () => {
    const op = await signUp(app);
    await makeOperator(app, op.userId);
    const operator = await logIn(app, op.email, op.password);
    const added = await operator.post<{ id: string; hasCredentials: boolean }>('/api/operator/providers', {
      name: 'shared',
      adapter: 'openai-compatible',
      baseUrl: backup.baseUrl,
      apiKey: 'sk-platform-secret',
      models: ['gpt-4o', 'platform-only'],
    });
    expect(added.status).toBe(201);
    expect(added.body.hasCredentials).toBe(true);

    // A workspace with no provider of its own reaches the platform's.
    const bare = await gatewayWorkspace(app);
    credits.grant(bare.workspaceId, BALANCE);
    await bare.owner.put(`/api/workspaces/${bare.workspaceId}/model-prices`, {
      model: 'platform-only',
      inputMicrosPerMtok: 1,
      outputMicrosPerMtok: 1,
    });
    const viaPlatform = await bare.openai.chat.completions
      .create({ model: 'platform-only', messages: [{ role: 'user', content: 'x' }] })
      .withResponse();
    expect(viaPlatform.response.headers.get('x-berth-provider')).toBe('shared');
    expect(backup.received.at(-1)?.headers.authorization).toBe('Bearer sk-platform-secret');

    // A workspace's own provider of the same model goes first.
    const own = await gw.openai.chat.completions
      .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] })
      .withResponse();
    expect(own.response.headers.get('x-berth-provider')).toBe('fake');

    // Members and keys cannot manage platform providers; the list never shows the key.
    expect(
      (
        await bare.owner.post('/api/operator/providers', {
          name: 'x',
          adapter: 'openai-compatible',
          baseUrl: 'https://a.example.com/v1',
          models: ['m'],
        })
      ).status,
    ).toBe(403);
    const url = await listen(app);
    const byKey = await fetch(`${url}/api/operator/providers`, { headers: { authorization: `Bearer ${bare.secret}` } });
    expect(byKey.status).toBe(403);
    const list = await operator.get('/api/operator/providers');
    expect(list.text).toContain('shared');
    expect(list.text).not.toContain('sk-platform-secret');

    expect((await operator.delete('/api/operator/providers/shared')).status).toBe(204);
    const gone = await bare.openai.chat.completions
      .create({ model: 'platform-only', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect((gone as ApiError).code).toBe('model_not_found');
  });
});

describe('workspace standing', () => {
  it('refuses every call of a suspended or restricted workspace, on the next request, and serves it again once active', async () => {
    const w = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }] });
    credits.grant(w.workspaceId, BALANCE);
    const call = () =>
      w.openai.chat.completions
        .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] })
        .catch((e: unknown) => e);
    expect(await call()).toMatchObject({ choices: [{ message: { content: 'echo: x' } }] });
    const op = await signUp(app);
    await makeOperator(app, op.userId);
    const operator = await logIn(app, op.email, op.password);
    expect(
      (await w.owner.post(`/api/operator/workspaces/${w.workspaceId}/status`, { status: 'suspended' })).status,
    ).toBe(403);

    const suspended = await operator.post(`/api/operator/workspaces/${w.workspaceId}/status`, { status: 'suspended' });
    expect(suspended.body).toEqual({ id: w.workspaceId, status: 'suspended' });
    const refused = (await call()) as ApiError;
    expect(refused.status).toBe(403);
    expect(refused.code).toBe('workspace_suspended');
    expect(await lastUsage(w)).toMatchObject({ status: 403, errorCode: 'workspace_suspended', costMicros: 0 });

    await operator.post(`/api/operator/workspaces/${w.workspaceId}/status`, { status: 'restricted' });
    expect(((await call()) as ApiError).code).toBe('workspace_restricted');
    // Its data stays readable to its members while restricted.
    expect((await w.owner.get(`/api/workspaces/${w.workspaceId}/usage`)).status).toBe(200);

    await operator.post(`/api/operator/workspaces/${w.workspaceId}/status`, { status: 'active' });
    expect(await call()).toMatchObject({ choices: [{ message: { content: 'echo: x' } }] });
    const unknown = await operator.post('/api/operator/workspaces/ws_nope/status', { status: 'active' });
    expect(unknown.status).toBe(404);
  });
});

describe('workspace deletion', () => {
  it('deletes the usage events of a deleted workspace, and drops late ones for it', async () => {
    const w = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }] });
    credits.grant(w.workspaceId, BALANCE);
    await w.openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] });
    const recorded = await lastUsage(w);
    const count = () =>
      app.db.system(async (tx) => {
        const res = (await tx.execute(
          sql`select count(*)::int as n from usage_events where workspace_id = ${w.workspaceId}`,
        )) as unknown as { rows: Array<{ n: number }> };
        return res.rows[0]?.n;
      });
    expect(await count()).toBe(1);

    expect((await w.owner.delete(`/api/workspaces/${w.workspaceId}`, { confirmName: 'Gateway' })).status).toBe(204);
    expect(await count()).toBe(0);
    // An event still in the journal for it (the call ended as the workspace went) is skipped, not an error.
    const late = usageRow({
      workspaceId: w.workspaceId,
      id: 'use_01LATE0000000000000000000',
      requestId: recorded.requestId,
    });
    expect(await app.db.system((tx) => gatewayRepo.insertUsage(tx, [late]))).toBe(0);
    expect(await count()).toBe(0);
  });

  it('records a replayed event once (deduplicated by its id)', async () => {
    const row = usageRow({
      workspaceId: gw.workspaceId,
      id: 'use_01REPLAY00000000000000000',
      requestId: 'req_replayed',
    });
    expect(await app.db.system((tx) => gatewayRepo.insertUsage(tx, [row, { ...row }]))).toBe(1);
    expect(await app.db.system((tx) => gatewayRepo.insertUsage(tx, [row]))).toBe(0);
  });
});

describe('usage journal', () => {
  it('answers only once its usage event is in the journal: a call whose event cannot be written fails, whole or streamed', async () => {
    const active = path.join(app.config.dataDir, 'usage-journal', 'active.jsonl');
    // Seals (and closes) the active file, so the next event opens it again: here, a directory.
    await app.modules.gateway.service.usage.flush();
    mkdirSync(active);
    try {
      const whole = await gw.openai.chat.completions
        .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'unwritten' }] })
        .then(
          () => null,
          (err: ApiError) => err,
        );
      expect(whole?.status).toBe(500);
      expect(whole?.code).toBe('internal_error');
      const stream = await gw.openai.chat.completions.create({
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'unwritten stream' }],
        stream: true,
      });
      let text = '';
      const ended = (async () => {
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
      })();
      // The frames came, but no end: an error event instead of [DONE].
      await expect(ended).rejects.toThrow();
      expect(text).toBe('echo: unwritten stream');
    } finally {
      rmSync(active, { recursive: true, force: true });
    }
    const ok = await gw.openai.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'written' }] })
      .withResponse();
    expect(ok.data.choices[0]?.message.content).toBe('echo: written');
    await app.modules.gateway.service.idle();
    const requestId = ok.response.headers.get('x-request-id');
    expect((await usageOf(gw)).filter((e) => e.requestId === requestId)).toEqual([
      expect.objectContaining({ status: 200, stream: false }),
    ]);
  });
});
