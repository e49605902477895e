import type { LookupFunction } from 'node:net';
import { Pool } from 'undici';
import type {
  CallOptions,
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatCompletionResponse,
  ChatCompletionStream,
  EmbeddingsResponse,
  ProviderAdapter,
  Usage,
} from '../gateway.adapter.ts';
import { UpstreamError, upstreamErrorForStatus } from '../gateway.adapter.ts';
import { type Attempt, isObject, retryAfter, startAttempt, toUpstreamError } from './http.ts';

/** What happens to one request field on the way out: sent as is, dropped, or sent under another name. */
export type ParamRule = 'pass' | 'drop' | { rename: string };
export type ParamMap = Record<keyof ChatCompletionRequest, ParamRule>;

/** The OpenAI chat completions fields; OpenAI-compatible servers take all of them. */
export const openAiCompatibleParams: ParamMap = {
  model: 'pass',
  messages: 'pass',
  stream: 'pass',
  stream_options: 'pass',
  tools: 'pass',
  tool_choice: 'pass',
  parallel_tool_calls: 'pass',
  response_format: 'pass',
  temperature: 'pass',
  top_p: 'pass',
  max_tokens: 'pass',
  max_completion_tokens: 'pass',
  n: 'pass',
  stop: 'pass',
  seed: 'pass',
  logprobs: 'pass',
  top_logprobs: 'pass',
  presence_penalty: 'pass',
  frequency_penalty: 'pass',
  logit_bias: 'pass',
  user: 'pass',
  reasoning_effort: 'pass',
  reasoning: 'pass',
};

export type OpenAiCompatibleOptions = {
  name?: string;
  baseUrl: string;
  apiKey?: string;
  headers?: Record<string, string>;
  /** Overrides of the parameter map, e.g. `{ user: 'drop' }` for a server that refuses the field. */
  params?: Partial<ParamMap>;
  /** Per-attempt timeout: until the full response (non-streaming), or until headers and between chunks (streaming). */
  timeoutMs?: number;
  connections?: number;
  /** The socket's DNS lookup: the egress guard, which refuses private addresses. */
  lookup?: LookupFunction;
};

export function mapParams(req: ChatCompletionRequest, map: ParamMap): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(req)) {
    if (value === undefined) continue;
    const rule = map[key as keyof ChatCompletionRequest];
    if (rule === undefined || rule === 'drop') continue;
    out[rule === 'pass' ? key : rule.rename] = value;
  }
  return out;
}

export function createOpenAiCompatibleAdapter(opts: OpenAiCompatibleOptions): ProviderAdapter {
  const url = new URL(opts.baseUrl);
  const basePath = url.pathname.replace(/\/+$/, '');
  const pool = new Pool(url.origin, {
    connections: opts.connections ?? 64,
    pipelining: 1,
    ...(opts.lookup ? { connect: { lookup: opts.lookup } } : {}),
  });
  const map: ParamMap = { ...openAiCompatibleParams, ...opts.params };
  const defaultTimeout = opts.timeoutMs ?? 60_000;
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    ...opts.headers,
    ...(opts.apiKey ? { authorization: `Bearer ${opts.apiKey}` } : {}),
  };

  async function send(
    method: 'GET' | 'POST',
    path: string,
    body: Record<string, unknown> | null,
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
      // The body is discarded unread: it may echo the prompt.
      await res.body.dump().catch(() => undefined);
      throw upstreamErrorForStatus(res.statusCode, retryAfter(res.headers));
    }
    return res;
  }

  /** One JSON request and its parsed JSON answer, checked by `valid`. */
  async function call<T>(
    method: 'GET' | 'POST',
    path: string,
    body: Record<string, unknown> | null,
    callOpts: CallOptions | undefined,
    valid: (v: Record<string, unknown>) => boolean,
  ): Promise<T> {
    const attempt = startAttempt(callOpts?.timeoutMs ?? defaultTimeout, callOpts?.signal);
    try {
      const res = await send(method, path, body, callOpts, attempt);
      const type = String(res.headers['content-type'] ?? '');
      if (!type.includes('json')) {
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
    name: opts.name ?? 'openai-compatible',

    chatCompletion(req, callOpts) {
      const body = mapParams({ ...req, stream: false, stream_options: undefined }, map);
      return call<ChatCompletionResponse>('POST', '/chat/completions', body, callOpts, (v) => Array.isArray(v.choices));
    },

    embeddings(req, callOpts) {
      return call<EmbeddingsResponse>('POST', '/embeddings', { ...req }, callOpts, (v) => Array.isArray(v.data));
    },

    async listModels(callOpts) {
      const list = await call<{ data: { id?: unknown }[] }>('GET', '/models', null, callOpts, (v) =>
        Array.isArray(v.data),
      );
      return list.data.flatMap((m) => (typeof m.id === 'string' ? [m.id] : []));
    },

    async chatCompletionStream(req, callOpts) {
      const attempt = startAttempt(callOpts?.timeoutMs ?? defaultTimeout, callOpts?.signal);
      let res: Awaited<ReturnType<typeof send>>;
      try {
        // Usage is asked for on every stream: metering needs the provider's own count.
        const body = mapParams({ ...req, stream: true, stream_options: { include_usage: true } }, map);
        res = await send('POST', '/chat/completions', body, callOpts, attempt);
        if (!String(res.headers['content-type'] ?? '').includes('text/event-stream')) {
          await res.body.dump().catch(() => undefined);
          throw new UpstreamError('upstream_error', { status: res.statusCode });
        }
      } catch (err) {
        attempt.done();
        throw toUpstreamError(err, attempt, callOpts?.signal);
      }
      let usage: Usage | undefined;
      const body = res.body;
      async function* chunks(): AsyncGenerator<ChatCompletionChunk> {
        let buffer = '';
        let finished = false;
        try {
          attempt.arm();
          for await (const piece of body) {
            attempt.arm();
            buffer += typeof piece === 'string' ? piece : Buffer.from(piece).toString('utf8');
            let newline = buffer.indexOf('\n');
            while (newline !== -1) {
              const line = buffer.slice(0, newline).replace(/\r$/, '');
              buffer = buffer.slice(newline + 1);
              newline = buffer.indexOf('\n');
              const chunk = parseSseLine(line);
              if (chunk === 'done') {
                finished = true;
                return;
              }
              if (chunk === undefined) continue;
              if (chunk.usage) usage = chunk.usage;
              yield chunk;
            }
          }
          // The upstream closed without [DONE]: a truncated stream.
          throw new UpstreamError('upstream_error', { status: res.statusCode });
        } catch (err) {
          throw toUpstreamError(err, attempt, callOpts?.signal);
        } finally {
          attempt.done();
          if (!finished || !body.destroyed) body.destroy();
        }
      }
      const iterable = chunks();
      return Object.assign(iterable, { usage: () => usage }) satisfies ChatCompletionStream;
    },

    async close() {
      await pool.close();
    },
  };
}

/** One SSE line: a chunk, 'done' for `[DONE]`, or undefined for comments, blank lines and other fields. */
export function parseSseLine(line: string): ChatCompletionChunk | 'done' | undefined {
  if (!line.startsWith('data:')) return undefined;
  const data = line.slice(5).trim();
  if (data === '') return undefined;
  if (data === '[DONE]') return 'done';
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    throw new UpstreamError('upstream_error');
  }
  if (!isObject(parsed)) throw new UpstreamError('upstream_error');
  // Some servers send an error object mid-stream; its content is not kept.
  if (parsed.error !== undefined) throw new UpstreamError('upstream_error');
  if (!Array.isArray(parsed.choices)) throw new UpstreamError('upstream_error');
  return parsed as ChatCompletionChunk;
}
