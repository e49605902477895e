import OpenAI from 'openai';
import type { UsageEventRow } from '../../src/modules/gateway/gateway.tables.ts';
import type { TestApp } from './app.ts';
import { type SignedInClient, signUp } from './identity.ts';

export type GatewayWorkspace = {
  owner: SignedInClient;
  workspaceId: string;
  /** A key with gateway:invoke (and usage:read). */
  secret: string;
  keyId: string;
  openai: OpenAI;
};

/** The URL a listening test app answers at (listens on loopback the first time). */
export async function listen(app: TestApp): Promise<string> {
  if (!app.http.server.listening) await app.http.listen({ host: '127.0.0.1', port: 0 });
  const address = app.http.server.address();
  if (!address || typeof address === 'string') throw new Error('not listening');
  return `http://127.0.0.1:${address.port}`;
}

/** An unmodified OpenAI SDK client pointed at Berth (no SDK retries: the tests count calls). */
export function openAiClient(url: string, apiKey: string): OpenAI {
  return new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0, timeout: 20_000 });
}

/**
 * A workspace with an owner, a key and, for each `providers` entry, a connected provider.
 *
 * @example const gw = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl }] });
 */
export async function gatewayWorkspace(
  app: TestApp,
  opts: {
    providers?: Array<{ name: string; baseUrl: string; apiKey?: string; models?: string[]; timeoutMs?: number }>;
    key?: Record<string, unknown>;
  } = {},
): Promise<GatewayWorkspace> {
  const url = await listen(app);
  const owner = await signUp(app);
  const ws = await owner.post<{ id: string }>('/api/workspaces', { name: 'Gateway' });
  if (ws.status !== 201) throw new Error(`workspace: ${ws.status} ${ws.text}`);
  const workspaceId = ws.body.id;
  for (const p of opts.providers ?? []) {
    const res = await owner.post(`/api/workspaces/${workspaceId}/providers`, { adapter: 'openai-compatible', ...p });
    if (res.status !== 201) throw new Error(`provider: ${res.status} ${res.text}`);
  }
  const key = await owner.post<{ key: { id: string }; secret: string }>(`/api/workspaces/${workspaceId}/keys`, {
    name: 'sdk',
    scopes: ['gateway:invoke', 'usage:read'],
    ...opts.key,
  });
  if (key.status !== 201) throw new Error(`key: ${key.status} ${key.text}`);
  return {
    owner,
    workspaceId,
    secret: key.body.secret,
    keyId: key.body.key.id,
    openai: openAiClient(url, key.body.secret),
  };
}

/** A usage event row as the gateway records one (a 200 chat call), with `fields` over it. */
export function usageRow(fields: Partial<UsageEventRow> & Pick<UsageEventRow, 'id' | 'requestId'>): UsageEventRow {
  return {
    workspaceId: 'ws_1',
    keyId: null,
    userId: null,
    endpoint: 'chat.completions',
    provider: 'p',
    model: 'm',
    status: 200,
    errorCode: null,
    stream: false,
    latencyMs: 1,
    ttftMs: null,
    inputTokens: 1,
    outputTokens: 1,
    cachedTokens: 0,
    reasoningTokens: 0,
    estimated: false,
    costMicros: 1,
    attempts: 1,
    createdAt: new Date('2026-06-01T00:00:00Z'),
    creditLeaseId: null,
    ...fields,
  };
}
