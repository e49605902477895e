import type { LookupFunction } from 'node:net';
import type {
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatCompletionResponse,
  ChatCompletionStream,
  EmbeddingsResponse,
  ProviderAdapter,
} from '../gateway.adapter.ts';
import { UpstreamError } from '../gateway.adapter.ts';
import { isObject, type SseEvent, upstreamClient } from './http.ts';

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
  const map: ParamMap = { ...openAiCompatibleParams, ...opts.params };
  const client = upstreamClient({
    baseUrl: opts.baseUrl,
    timeoutMs: opts.timeoutMs ?? 60_000,
    connections: opts.connections,
    lookup: opts.lookup,
    headers: {
      'content-type': 'application/json',
      ...opts.headers,
      ...(opts.apiKey ? { authorization: `Bearer ${opts.apiKey}` } : {}),
    },
  });

  return {
    name: opts.name ?? 'openai-compatible',

    chatCompletion(req, callOpts) {
      const body = mapParams({ ...req, stream: false, stream_options: undefined }, map);
      return client.json<ChatCompletionResponse>('POST', '/chat/completions', body, callOpts, (v) =>
        Array.isArray(v.choices),
      );
    },

    embeddings(req, callOpts) {
      return client.json<EmbeddingsResponse>('POST', '/embeddings', { ...req }, callOpts, (v) => Array.isArray(v.data));
    },

    async listModels(callOpts) {
      const list = await client.json<{ data: { id?: unknown }[] }>('GET', '/models', null, callOpts, (v) =>
        Array.isArray(v.data),
      );
      return list.data.flatMap((m) => (typeof m.id === 'string' ? [m.id] : []));
    },

    async chatCompletionStream(req, callOpts) {
      // Usage is asked for on every stream: metering needs the provider's own count.
      const body = mapParams({ ...req, stream: true, stream_options: { include_usage: true } }, map);
      const { events, status } = await client.stream('/chat/completions', body, callOpts, isDone);
      async function* chunks(): AsyncGenerator<ChatCompletionChunk[]> {
        for await (const batch of events) {
          const out: ChatCompletionChunk[] = [];
          for (const ev of batch) {
            const chunk = parseSseData(ev.data);
            if (chunk === 'done') {
              if (out.length > 0) yield out;
              return;
            }
            if (chunk !== undefined) out.push(chunk);
          }
          if (out.length > 0) yield out;
        }
        // The upstream closed without [DONE]: a truncated stream.
        throw new UpstreamError('upstream_error', { status });
      }
      return chunks() satisfies ChatCompletionStream;
    },

    close: () => client.close(),
  };
}

const isDone = (ev: SseEvent) => ev.data.trim() === '[DONE]';

/** One SSE event's data: a chunk, 'done' for `[DONE]`, or undefined for an empty event (keep-alive). */
export function parseSseData(raw: string): ChatCompletionChunk | 'done' | undefined {
  const data = raw.trim();
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
