import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeAnthropic, startFakeAnthropic } from '../../../test/fakes/anthropic-upstream.ts';
import { HASH_EMBEDDING_DIMS } from '../../../test/fakes/hash-embeddings.ts';
import { type FakeOpenAi, fakeTokens, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { type GatewayWorkspace, gatewayWorkspace } from '../../../test/helpers/gateway.ts';
import { AppError } from '../../platform/errors.ts';
import { newId } from '../../platform/ids.ts';
import { memoryCredits } from './gateway.credits.ts';
import type { UsageEventView } from './gateway.schemas.ts';
import type { Caller } from './gateway.service.ts';

/**
 * The gateway's `embed`, as the knowledge module calls it: the governance, reservation and
 * usage event of /v1/embeddings, without HTTP in front, against a real HTTP upstream.
 */

const BALANCE = 1_000_000_000;
const MODEL = 'text-embedding-3-small';

let app: TestApp;
let fake: FakeOpenAi;
let anthropicUp: FakeAnthropic;
const credits = memoryCredits();
let gw: GatewayWorkspace;

function callerOf(w: GatewayWorkspace, over: Partial<Caller> = {}): Caller {
  return {
    workspaceId: w.workspaceId,
    keyId: w.keyId,
    userId: null,
    allowedModels: null,
    rateLimitRpm: null,
    rateLimitTpm: null,
    requestId: newId('req'),
    ...over,
  };
}

/** The usage events of one call (by its request id), once settled and journaled. */
async function eventsOf(w: GatewayWorkspace, requestId: string): Promise<UsageEventView[]> {
  await app.modules.gateway.service.idle();
  const res = await w.owner.get<{ data: UsageEventView[] }>(`/api/workspaces/${w.workspaceId}/usage?limit=1000`);
  expect(res.status).toBe(200);
  return res.body.data.filter((e) => e.requestId === requestId);
}

/** The AppError a call rejected with. */
async function refusal(p: Promise<unknown>): Promise<AppError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  return err as AppError;
}

function cosine(a: unknown, b: unknown): number {
  const x = a as number[];
  const y = b as number[];
  return x.reduce((s, v, i) => s + v * (y[i] ?? 0), 0);
}

beforeAll(async () => {
  fake = await startFakeOpenAi();
  anthropicUp = await startFakeAnthropic({ apiKey: 'sk-ant-upstream' });
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_GATEWAY_RETRIES: 1 }, credits });
  gw = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, timeoutMs: 1500 }] });
  credits.grant(gw.workspaceId, BALANCE);
});

afterAll(async () => {
  await app?.close();
  await fake?.close();
  await anthropicUp?.close();
});

describe('happy', () => {
  it('embeds, records one usage event with the tokens the upstream reported, and settles the credits', async () => {
    const before = credits.balance(gw.workspaceId);
    const held = credits.openReservations();
    const input = ['pelicans catch fish by diving', 'how do pelicans catch fish', 'quarterly revenue grew'];
    const caller = callerOf(gw);
    const { response, usage, provider, model } = await app.modules.gateway.service.embed(caller, {
      model: MODEL,
      input,
    });
    expect({ provider, model }).toEqual({ provider: 'fake', model: MODEL });
    expect(response.data.map((d) => d.index)).toEqual([0, 1, 2]);
    expect(response.data[0]?.embedding).toHaveLength(HASH_EMBEDDING_DIMS);
    const [doc, query, other] = response.data.map((d) => d.embedding);
    expect(cosine(doc, query)).toBeGreaterThan(cosine(other, query));

    const reported = input.reduce((n, t) => n + fakeTokens(t), 0);
    expect(response.usage.prompt_tokens).toBe(reported);
    expect(usage).toMatchObject({
      endpoint: 'embeddings',
      requestId: caller.requestId,
      status: 200,
      provider: 'fake',
      model: MODEL,
      inputTokens: reported,
      outputTokens: 0,
      estimated: false,
      attempts: 1,
    });
    expect(usage.costMicros).toBeGreaterThan(0);

    const events = await eventsOf(gw, caller.requestId);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ endpoint: 'embeddings', inputTokens: reported, costMicros: usage.costMicros });
    expect(credits.balance(gw.workspaceId)).toBe(before - usage.costMicros);
    expect(credits.openReservations()).toBe(held);
  });

  it('sends the dimensions asked for, and answers with them', async () => {
    const { response } = await app.modules.gateway.service.embed(callerOf(gw), {
      model: MODEL,
      input: 'one text',
      dimensions: 64,
    });
    expect(fake.received.at(-1)?.body).toMatchObject({ model: MODEL, input: 'one text', dimensions: 64 });
    expect(response.data[0]?.embedding).toHaveLength(64);
  });
});

describe('errors', () => {
  it('refuses a model outside the caller allow-list, and meters the refusal', async () => {
    const caller = callerOf(gw, { allowedModels: ['gpt-4o-mini'] });
    const err = await refusal(app.modules.gateway.service.embed(caller, { model: MODEL, input: 'x' }));
    expect(err).toMatchObject({ code: 'model_not_allowed', status: 403 });
    const events = await eventsOf(gw, caller.requestId);
    expect(events).toMatchObject([{ endpoint: 'embeddings', status: 403, errorCode: 'model_not_allowed' }]);
  });

  it('refuses a model no provider of the workspace serves', async () => {
    const caller = callerOf(gw);
    const err = await refusal(app.modules.gateway.service.embed(caller, { model: 'no-such-embedder', input: 'x' }));
    expect(err).toMatchObject({ code: 'model_not_found', status: 404 });
    const events = await eventsOf(gw, caller.requestId);
    expect(events).toMatchObject([{ endpoint: 'embeddings', status: 404, model: 'no-such-embedder' }]);
  });

  it('refuses a workspace without credits, and holds nothing', async () => {
    const w = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl }] });
    const calls = fake.received.length;
    const err = await refusal(app.modules.gateway.service.embed(callerOf(w), { model: MODEL, input: 'some words' }));
    expect(err).toMatchObject({ code: 'insufficient_credits', status: 402 });
    expect(fake.received.length).toBe(calls);
    expect(credits.balance(w.workspaceId)).toBe(0);
  });

  it('answers bad_request for a provider without an embeddings API', async () => {
    const w = await gatewayWorkspace(app);
    credits.grant(w.workspaceId, BALANCE);
    const added = await w.owner.post(`/api/workspaces/${w.workspaceId}/providers`, {
      name: 'claude',
      adapter: 'anthropic',
      baseUrl: anthropicUp.baseUrl,
      apiKey: 'sk-ant-upstream',
    });
    expect(added.status).toBe(201);
    const caller = callerOf(w);
    const err = await refusal(app.modules.gateway.service.embed(caller, { model: 'claude-haiku-4-5', input: 'x' }));
    expect(err).toMatchObject({ code: 'bad_request', message: 'This provider has no embeddings API.' });
    expect(await eventsOf(w, caller.requestId)).toMatchObject([{ status: 400, errorCode: 'bad_request' }]);
    expect(credits.balance(w.workspaceId)).toBe(BALANCE);
  });

  it('retries an upstream 500, then throws upstream_error, meters the failure and releases the credits', async () => {
    const before = credits.balance(gw.workspaceId);
    const held = credits.openReservations();
    fake.next({ kind: 'status', status: 500 }, { kind: 'status', status: 500 });
    const caller = callerOf(gw);
    const err = await refusal(app.modules.gateway.service.embed(caller, { model: MODEL, input: 'secret-text-500' }));
    expect(err).toMatchObject({ code: 'upstream_error', status: 502 });
    expect(err.message).not.toContain('secret-text-500');
    const events = await eventsOf(gw, caller.requestId);
    expect(events).toMatchObject([{ endpoint: 'embeddings', status: 502, attempts: 2, costMicros: 0 }]);
    expect(credits.balance(gw.workspaceId)).toBe(before);
    expect(credits.openReservations()).toBe(held);
  });

  it('meters a call its caller aborted as client_closed', async () => {
    fake.next({ kind: 'hang' });
    const controller = new AbortController();
    const caller = callerOf(gw);
    const pending = app.modules.gateway.service.embed(caller, { model: MODEL, input: 'x' }, controller.signal);
    setTimeout(() => controller.abort(), 50);
    const err = await refusal(pending);
    expect(err.code).toBe('upstream_error');
    expect(await eventsOf(gw, caller.requestId)).toMatchObject([{ status: 499, errorCode: 'client_closed' }]);
  });
});
