import Anthropic from '@anthropic-ai/sdk';
import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeAnthropic, startFakeAnthropic } from '../../../test/fakes/anthropic-upstream.ts';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { type GatewayWorkspace, gatewayWorkspace, listen } from '../../../test/helpers/gateway.ts';

/**
 * Either inbound API reaches any model: the official Anthropic SDK on /v1/messages and the
 * official OpenAI SDK on /v1/chat/completions, each against an OpenAI-compatible upstream
 * and a native Anthropic upstream (real HTTP peers on loopback).
 */

type UsageEvent = {
  endpoint: string;
  status: number;
  provider: string | null;
  model: string;
  inputTokens: number;
  outputTokens: number;
  cachedTokens: number;
  estimated: boolean;
};

let app: TestApp;
let openaiUp: FakeOpenAi;
let anthropicUp: FakeAnthropic;
let gw: GatewayWorkspace;
let anthropic: Anthropic;

async function lastUsage(): Promise<UsageEvent> {
  await app.modules.gateway.service.idle();
  const res = await gw.owner.get<{ data: UsageEvent[] }>(`/api/workspaces/${gw.workspaceId}/usage?limit=1`);
  const [e] = res.body.data;
  if (!e) throw new Error('no usage event');
  return e;
}

const weatherTool = {
  name: 'get_weather',
  description: 'Weather of a city',
  input_schema: { type: 'object' as const, properties: { q: { type: 'string' } }, required: ['q'] },
};

beforeAll(async () => {
  openaiUp = await startFakeOpenAi();
  anthropicUp = await startFakeAnthropic({ apiKey: 'sk-ant-upstream' });
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1' } });
  gw = await gatewayWorkspace(app, {
    providers: [{ name: 'oai', baseUrl: openaiUp.baseUrl, models: ['gpt-4o'] }],
  });
  const added = await gw.owner.post(`/api/workspaces/${gw.workspaceId}/providers`, {
    name: 'claude',
    adapter: 'anthropic',
    baseUrl: anthropicUp.baseUrl,
    apiKey: 'sk-ant-upstream',
  });
  expect(added.status).toBe(201);
  expect(added.body.models).toEqual(['claude-sonnet-4-5', 'claude-haiku-4-5']);
  const url = await listen(app);
  anthropic = new Anthropic({ baseURL: url, apiKey: gw.secret, maxRetries: 0, timeout: 20_000 });
});

afterAll(async () => {
  await app?.close();
  await openaiUp?.close();
  await anthropicUp?.close();
});

describe('happy', () => {
  it('Anthropic SDK -> OpenAI-compatible model: system prompt, text and usage translated', async () => {
    const msg = await anthropic.messages.create({
      model: 'gpt-4o',
      max_tokens: 100,
      system: 'Be brief.',
      messages: [{ role: 'user', content: 'hi there' }],
      stop_sequences: ['END'],
    });
    expect(msg.type).toBe('message');
    expect(msg.role).toBe('assistant');
    expect(msg.content).toEqual([{ type: 'text', text: 'echo: hi there' }]);
    expect(msg.stop_reason).toBe('end_turn');
    expect(msg.usage.output_tokens).toBe(3);
    const sent = openaiUp.received.at(-1)?.body;
    expect(sent?.messages).toEqual([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'hi there' },
    ]);
    expect(sent).toMatchObject({ max_tokens: 100, stop: ['END'] });
    expect(await lastUsage()).toMatchObject({ endpoint: 'messages', status: 200, provider: 'oai', outputTokens: 3 });
  });

  it('Anthropic SDK -> OpenAI-compatible model: streamed text and a tool call round trip', async () => {
    const stream = anthropic.messages.stream({
      model: 'gpt-4o',
      max_tokens: 100,
      messages: [{ role: 'user', content: 'one two' }],
    });
    const texts: string[] = [];
    stream.on('text', (t) => texts.push(t));
    const final = await stream.finalMessage();
    expect(texts.join('')).toBe('echo: one two');
    expect(final.content).toEqual([{ type: 'text', text: 'echo: one two' }]);
    // The upstream's count arrives at the end of its stream; message_delta hands it on.
    expect(final.usage).toMatchObject({ input_tokens: 3, output_tokens: 3 });

    const tooled = await anthropic.messages
      .stream({
        model: 'gpt-4o',
        max_tokens: 100,
        tools: [weatherTool],
        tool_choice: { type: 'auto', disable_parallel_tool_use: true },
        messages: [{ role: 'user', content: 'Paris' }],
      })
      .finalMessage();
    expect(tooled.stop_reason).toBe('tool_use');
    const use = tooled.content.find((b) => b.type === 'tool_use');
    expect(use).toMatchObject({ type: 'tool_use', name: 'get_weather', input: { q: 'Paris' } });
    expect(openaiUp.received.at(-1)?.body).toMatchObject({ tool_choice: 'auto', parallel_tool_calls: false });

    const answer = await anthropic.messages.create({
      model: 'gpt-4o',
      max_tokens: 100,
      tools: [weatherTool],
      messages: [
        { role: 'user', content: 'Paris' },
        { role: 'assistant', content: tooled.content },
        {
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: use?.type === 'tool_use' ? use.id : '', content: 'sunny' },
            { type: 'text', text: 'and so?' },
          ],
        },
      ],
    });
    const sent = openaiUp.received.at(-1)?.body?.messages as OpenAI.ChatCompletionMessageParam[];
    expect(sent.map((m) => m.role)).toEqual(['user', 'assistant', 'tool', 'user']);
    expect(sent[2]).toMatchObject({ role: 'tool', content: 'sunny' });
    expect(answer.stop_reason).toBe('tool_use');
  });

  it('Anthropic SDK -> Anthropic model: native answer, thinking and cached tokens', async () => {
    const msg = await anthropic.messages.create({
      model: 'claude-sonnet-4-5',
      max_tokens: 20_000,
      thinking: { type: 'enabled', budget_tokens: 4096 },
      messages: [{ role: 'user', content: 'word '.repeat(30).trim() }],
    });
    expect(msg.content.map((b) => b.type)).toEqual(['thinking', 'text']);
    expect(anthropicUp.received.at(-1)?.headers['x-api-key']).toBe('sk-ant-upstream');
    expect(anthropicUp.received.at(-1)?.headers.authorization).toBeUndefined();
    expect(msg.usage.cache_read_input_tokens).toBe(10);
    const event = await lastUsage();
    expect(event).toMatchObject({ provider: 'claude', cachedTokens: 10, estimated: false });
    expect(event.inputTokens).toBe(msg.usage.input_tokens + 10);
  });

  it('OpenAI SDK -> Anthropic model: system, images, tools and streamed tool arguments translated', async () => {
    const res = await gw.openai.chat.completions.create({
      model: 'claude-haiku-4-5',
      messages: [
        { role: 'system', content: 'You are terse.' },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'look' },
            { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
          ],
        },
      ],
      temperature: 1.5,
    });
    expect(res.choices[0]?.message.content).toBe('echo: look');
    expect(res.choices[0]?.finish_reason).toBe('stop');
    const sent = anthropicUp.received.at(-1)?.body;
    expect(sent).toMatchObject({ system: 'You are terse.', max_tokens: 4096, temperature: 1 });
    expect(((sent?.messages ?? []) as { content: unknown }[])[0]?.content).toEqual([
      { type: 'text', text: 'look' },
      { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } },
    ]);

    const stream = gw.openai.chat.completions.stream({
      model: 'claude-haiku-4-5',
      messages: [{ role: 'user', content: 'Rome' }],
      tools: [{ type: 'function', function: { name: 'get_weather', parameters: weatherTool.input_schema } }],
      tool_choice: 'required',
      stream_options: { include_usage: true },
    });
    const final = await stream.finalChatCompletion();
    const call = final.choices[0]?.message.tool_calls?.[0];
    expect(call?.type === 'function' && JSON.parse(call.function.arguments)).toEqual({ q: 'Rome' });
    expect(final.choices[0]?.finish_reason).toBe('tool_calls');
    expect(anthropicUp.received.at(-1)?.body?.tool_choice).toEqual({ type: 'any' });
    expect(await lastUsage()).toMatchObject({
      endpoint: 'chat.completions',
      provider: 'claude',
      outputTokens: 5,
      estimated: false,
    });
  });
});

describe('errors', () => {
  it('answers Anthropic-shaped errors the Anthropic SDK understands', async () => {
    const notFound = await anthropic.messages
      .create({ model: 'nope', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(notFound).toBeInstanceOf(Anthropic.NotFoundError);
    expect((notFound as InstanceType<typeof Anthropic.APIError>).error).toMatchObject({
      type: 'error',
      error: { type: 'not_found_error', code: 'model_not_found' },
    });

    const url = await listen(app);
    const badKey = new Anthropic({ baseURL: url, apiKey: 'brt_live_nope', maxRetries: 0 });
    const unauth = await badKey.messages
      .create({ model: 'gpt-4o', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(unauth).toBeInstanceOf(Anthropic.AuthenticationError);

    const invalid = await fetch(`${url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': gw.secret, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }),
    });
    expect(invalid.status).toBe(400);
    expect(await invalid.json()).toMatchObject({
      type: 'error',
      error: { type: 'invalid_request_error', code: 'validation_failed' },
    });
  });

  it('meters a Messages stream the Anthropic SDK aborts, billing what was delivered', async () => {
    openaiUp.next({ kind: 'slow_stream', delayMs: 40 });
    const stream = anthropic.messages.stream({
      model: 'gpt-4o',
      max_tokens: 200,
      messages: [{ role: 'user', content: 'w '.repeat(40) }],
    });
    let deltas = 0;
    stream.on('text', () => {
      if (++deltas === 3) stream.abort();
    });
    await stream.finalMessage().catch(() => undefined);
    let event: UsageEvent | undefined;
    for (let i = 0; i < 50 && event?.status !== 499; i++) {
      await new Promise((r) => setTimeout(r, 50));
      event = await lastUsage();
    }
    expect(event).toMatchObject({ endpoint: 'messages', status: 499, estimated: true });
    expect(event?.outputTokens).toBeGreaterThan(0);
  });

  it('maps an overloaded Anthropic upstream (529) to a retryable failure, without the echoed prompt', async () => {
    anthropicUp.failNext(529, 529);
    const err = await anthropic.messages
      .create({ model: 'claude-haiku-4-5', max_tokens: 5, messages: [{ role: 'user', content: 'secret-529' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.APIError);
    expect((err as InstanceType<typeof Anthropic.APIError>).status).toBe(502);
    expect(JSON.stringify((err as InstanceType<typeof Anthropic.APIError>).error)).not.toContain('secret-529');
    expect(await lastUsage()).toMatchObject({ status: 502, provider: 'claude' });
  });
});
