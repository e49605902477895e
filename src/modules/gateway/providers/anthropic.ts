import type { LookupFunction } from 'node:net';
import type { ChatCompletionChunk, ChatCompletionStream, ProviderAdapter } from '../gateway.adapter.ts';
import { UpstreamError } from '../gateway.adapter.ts';
import {
  type AnthropicResponse,
  anthropicStreamTranslator,
  DEFAULT_ANTHROPIC_MAX_TOKENS,
  fromAnthropicResponse,
  toAnthropicRequest,
} from '../gateway.anthropic.ts';
import { isObject, type SseEvent, upstreamClient } from './http.ts';

export type AnthropicOptions = {
  name?: string;
  /** e.g. https://api.anthropic.com/v1 */
  baseUrl: string;
  apiKey?: string;
  headers?: Record<string, string>;
  timeoutMs?: number;
  connections?: number;
  lookup?: LookupFunction;
  /** Output tokens asked for when the caller names no maximum (Anthropic requires one). */
  defaultMaxTokens?: number;
};

export const ANTHROPIC_VERSION = '2023-06-01';

/**
 * The native Anthropic Messages API adapter: canonical requests are translated out
 * (system prompt, images, tools, tool results, stop sequences, thinking budget) and the
 * answers, streamed or whole, translated back, with Anthropic's usage including cache reads.
 */
const isMessageStop = (ev: SseEvent) => ev.event === 'message_stop';

export function createAnthropicAdapter(opts: AnthropicOptions): ProviderAdapter {
  const maxTokens = opts.defaultMaxTokens ?? DEFAULT_ANTHROPIC_MAX_TOKENS;
  const client = upstreamClient({
    baseUrl: opts.baseUrl,
    timeoutMs: opts.timeoutMs ?? 60_000,
    connections: opts.connections,
    lookup: opts.lookup,
    // 529 is Anthropic's "overloaded": retryable, like a 503.
    mapStatus: (status) => (status === 529 ? 503 : status),
    headers: {
      'content-type': 'application/json',
      'anthropic-version': ANTHROPIC_VERSION,
      ...opts.headers,
      ...(opts.apiKey ? { 'x-api-key': opts.apiKey } : {}),
    },
  });

  return {
    name: opts.name ?? 'anthropic',

    async chatCompletion(req, callOpts) {
      const body = toAnthropicRequest({ ...req, stream: false }, maxTokens);
      const res = await client.json<AnthropicResponse>('POST', '/messages', body, callOpts, (v) =>
        Array.isArray(v.content),
      );
      return fromAnthropicResponse(res);
    },

    async chatCompletionStream(req, callOpts) {
      const body = { ...toAnthropicRequest(req, maxTokens), stream: true };
      const { events, status } = await client.stream('/messages', body, callOpts, isMessageStop);
      const translator = anthropicStreamTranslator(Math.floor(Date.now() / 1000));
      async function* chunks(): AsyncGenerator<ChatCompletionChunk[]> {
        for await (const batch of events) {
          const out: ChatCompletionChunk[] = [];
          for (const ev of batch) {
            let data: unknown;
            try {
              data = JSON.parse(ev.data);
            } catch {
              throw new UpstreamError('upstream_error', { status });
            }
            if (!isObject(data)) throw new UpstreamError('upstream_error');
            const type = ev.event ?? String(data.type ?? '');
            // An error event mid-stream: its message is not kept.
            if (type === 'error') throw new UpstreamError('upstream_error');
            const step = translator.push(type, data);
            out.push(...step.chunks);
            if (step.done) {
              if (out.length > 0) yield out;
              return;
            }
          }
          if (out.length > 0) yield out;
        }
        throw new UpstreamError('upstream_error', { status });
      }
      return chunks() satisfies ChatCompletionStream;
    },

    async listModels(callOpts) {
      const list = await client.json<{ data: { id?: unknown }[] }>('GET', '/models?limit=1000', null, callOpts, (v) =>
        Array.isArray(v.data),
      );
      return list.data.flatMap((m) => (typeof m.id === 'string' ? [m.id] : []));
    },

    close: () => client.close(),
  };
}
