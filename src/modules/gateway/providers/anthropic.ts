import type { LookupFunction } from 'node:net';
import { Pool } from 'undici';
import type {
  CallOptions,
  ChatCompletionChunk,
  ChatCompletionStream,
  ProviderAdapter,
  Usage,
} from '../gateway.adapter.ts';
import { UpstreamError, upstreamErrorForStatus } from '../gateway.adapter.ts';
import {
  type AnthropicResponse,
  anthropicStreamTranslator,
  DEFAULT_ANTHROPIC_MAX_TOKENS,
  fromAnthropicResponse,
  toAnthropicRequest,
} from '../gateway.anthropic.ts';
import { type Attempt, isObject, retryAfter, sseEvents, startAttempt, toUpstreamError } from './http.ts';

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
export function createAnthropicAdapter(opts: AnthropicOptions): ProviderAdapter {
  const url = new URL(opts.baseUrl);
  const basePath = url.pathname.replace(/\/+$/, '');
  const pool = new Pool(url.origin, {
    connections: opts.connections ?? 64,
    pipelining: 1,
    ...(opts.lookup ? { connect: { lookup: opts.lookup } } : {}),
  });
  const defaultTimeout = opts.timeoutMs ?? 60_000;
  const maxTokens = opts.defaultMaxTokens ?? DEFAULT_ANTHROPIC_MAX_TOKENS;
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'anthropic-version': ANTHROPIC_VERSION,
    ...opts.headers,
    ...(opts.apiKey ? { 'x-api-key': opts.apiKey } : {}),
  };

  async function send(
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    callOpts: CallOptions | undefined,
    attempt: Attempt,
  ) {
    if (callOpts?.signal?.aborted) throw new UpstreamError('upstream_aborted');
    const res = await pool.request({
      method,
      path: `${basePath}${path}`,
      headers,
      body: body === null ? null : JSON.stringify(body),
      signal: attempt.signal,
      headersTimeout: 0,
      bodyTimeout: 0,
    });
    if (res.statusCode >= 400) {
      // Discarded unread: the body may echo the prompt. 529 is Anthropic's "overloaded".
      await res.body.dump().catch(() => undefined);
      throw upstreamErrorForStatus(res.statusCode === 529 ? 503 : res.statusCode, retryAfter(res.headers));
    }
    return res;
  }

  async function json<T>(
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    callOpts: CallOptions | undefined,
    valid: (v: Record<string, unknown>) => boolean,
  ): Promise<T> {
    const attempt = startAttempt(callOpts?.timeoutMs ?? defaultTimeout, callOpts?.signal);
    try {
      const res = await send(method, path, body, callOpts, attempt);
      if (!String(res.headers['content-type'] ?? '').includes('json')) {
        await res.body.dump().catch(() => undefined);
        throw new UpstreamError('upstream_error', { status: res.statusCode });
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(await res.body.text());
      } catch {
        throw new UpstreamError('upstream_error', { status: res.statusCode });
      }
      if (!isObject(parsed) || !valid(parsed)) throw new UpstreamError('upstream_error', { status: res.statusCode });
      return parsed as T;
    } catch (err) {
      throw toUpstreamError(err, attempt, callOpts?.signal);
    } finally {
      attempt.done();
    }
  }

  return {
    name: opts.name ?? 'anthropic',

    async chatCompletion(req, callOpts) {
      const body = toAnthropicRequest({ ...req, stream: false }, maxTokens);
      const res = await json<AnthropicResponse>('POST', '/messages', body, callOpts, (v) => Array.isArray(v.content));
      return fromAnthropicResponse(res);
    },

    async chatCompletionStream(req, callOpts) {
      const body = { ...toAnthropicRequest(req, maxTokens), stream: true };
      const attempt = startAttempt(callOpts?.timeoutMs ?? defaultTimeout, callOpts?.signal);
      let res: Awaited<ReturnType<typeof send>>;
      try {
        res = await send('POST', '/messages', body, callOpts, attempt);
        if (!String(res.headers['content-type'] ?? '').includes('text/event-stream')) {
          await res.body.dump().catch(() => undefined);
          throw new UpstreamError('upstream_error', { status: res.statusCode });
        }
      } catch (err) {
        attempt.done();
        throw toUpstreamError(err, attempt, callOpts?.signal);
      }
      const translator = anthropicStreamTranslator(Math.floor(Date.now() / 1000));
      let usage: Usage | undefined;
      const stream = res.body;
      async function* chunks(): AsyncGenerator<ChatCompletionChunk> {
        try {
          attempt.arm();
          for await (const ev of sseEvents(stream, attempt.arm)) {
            let data: unknown;
            try {
              data = JSON.parse(ev.data);
            } catch {
              throw new UpstreamError('upstream_error', { status: res.statusCode });
            }
            if (!isObject(data)) throw new UpstreamError('upstream_error');
            const type = ev.event ?? String(data.type ?? '');
            // An error event mid-stream: its message is not kept.
            if (type === 'error') throw new UpstreamError('upstream_error');
            const out = translator.push(type, data);
            for (const c of out.chunks) {
              if (c.usage) usage = c.usage;
              yield c;
            }
            if (out.done) return;
          }
          throw new UpstreamError('upstream_error', { status: res.statusCode });
        } catch (err) {
          throw toUpstreamError(err, attempt, callOpts?.signal);
        } finally {
          attempt.done();
          if (!stream.destroyed) stream.destroy();
        }
      }
      return Object.assign(chunks(), { usage: () => usage }) satisfies ChatCompletionStream;
    },

    async listModels(callOpts) {
      const list = await json<{ data: { id?: unknown }[] }>('GET', '/models?limit=1000', null, callOpts, (v) =>
        Array.isArray(v.data),
      );
      return list.data.flatMap((m) => (typeof m.id === 'string' ? [m.id] : []));
    },

    async close() {
      await pool.close();
    },
  };
}
