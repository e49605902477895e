// The one typed interface every upstream vendor implements. OpenAI's chat completions wire shape is the
// canonical internal form: inbound APIs translate into it, adapters translate out of it.

export type ChatRole = 'system' | 'developer' | 'user' | 'assistant' | 'tool';

export type ChatContentPart =
  | { type: 'text'; text: string }
  | { type: 'image_url'; image_url: { url: string; detail?: 'auto' | 'low' | 'high' } };

export type ToolCall = {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
};

export type ChatMessage = {
  role: ChatRole;
  content?: string | ChatContentPart[] | null;
  name?: string;
  tool_calls?: ToolCall[];
  tool_call_id?: string;
  reasoning_content?: string;
};

export type ToolDefinition = {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean };
};

export type ToolChoice = 'none' | 'auto' | 'required' | { type: 'function'; function: { name: string } };

export type ChatCompletionRequest = {
  model: string;
  messages: ChatMessage[];
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
  tools?: ToolDefinition[];
  tool_choice?: ToolChoice;
  parallel_tool_calls?: boolean;
  response_format?: Record<string, unknown>;
  temperature?: number;
  top_p?: number;
  max_tokens?: number;
  max_completion_tokens?: number;
  n?: number;
  stop?: string | string[];
  seed?: number;
  logprobs?: boolean;
  top_logprobs?: number;
  presence_penalty?: number;
  frequency_penalty?: number;
  logit_bias?: Record<string, number>;
  user?: string;
  reasoning_effort?: string;
  reasoning?: Record<string, unknown>;
};

export type Usage = {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens?: number };
  completion_tokens_details?: { reasoning_tokens?: number };
};

export type FinishReason = 'stop' | 'length' | 'tool_calls' | 'content_filter' | 'function_call' | null;

export type ChatCompletionResponse = {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: { index: number; message: ChatMessage; finish_reason: FinishReason; logprobs?: unknown }[];
  usage?: Usage;
  system_fingerprint?: string;
};

export type ToolCallDelta = {
  index: number;
  id?: string;
  type?: 'function';
  function?: { name?: string; arguments?: string };
};

export type ChatCompletionChunk = {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: {
    index: number;
    delta: { role?: ChatRole; content?: string | null; tool_calls?: ToolCallDelta[]; reasoning_content?: string };
    finish_reason: FinishReason;
    logprobs?: unknown;
  }[];
  usage?: Usage | null;
};

/**
 * A stream of chunks, in batches (the chunks one network read brought: a stream costs one
 * step per read, not per chunk); the provider's own usage, when it sends one, is on the
 * last chunk (`usage`).
 */
export type ChatCompletionStream = AsyncIterable<ChatCompletionChunk[]>;

export type CallOptions = {
  signal?: AbortSignal;
  /** Per-attempt timeout in milliseconds; overrides the adapter's default. */
  timeoutMs?: number;
};

export type EmbeddingsRequest = {
  model: string;
  input: string | string[] | number[] | number[][];
  encoding_format?: 'float' | 'base64';
  dimensions?: number;
  user?: string;
};

export type EmbeddingsResponse = {
  object: 'list';
  model: string;
  data: { object: 'embedding'; index: number; embedding: number[] | string }[];
  usage: { prompt_tokens: number; total_tokens: number };
};

export interface ProviderAdapter {
  readonly name: string;
  chatCompletion(req: ChatCompletionRequest, opts?: CallOptions): Promise<ChatCompletionResponse>;
  chatCompletionStream(req: ChatCompletionRequest, opts?: CallOptions): Promise<ChatCompletionStream>;
  /** Absent for providers without an embeddings API. */
  embeddings?(req: EmbeddingsRequest, opts?: CallOptions): Promise<EmbeddingsResponse>;
  /** The models the provider says it serves (discovery). */
  listModels(opts?: CallOptions): Promise<string[]>;
  close(): Promise<void>;
}

export type UpstreamErrorCode =
  | 'upstream_timeout'
  | 'upstream_rate_limited'
  | 'upstream_error'
  | 'upstream_bad_request'
  | 'upstream_aborted';

const messages: Record<UpstreamErrorCode, string> = {
  upstream_timeout: 'The upstream provider did not answer in time.',
  upstream_rate_limited: 'The upstream provider is rate limiting requests.',
  upstream_error: 'The upstream provider failed.',
  upstream_bad_request: 'The upstream provider rejected the request.',
  upstream_aborted: 'The request was aborted.',
};

/**
 * An upstream failure. It carries the status and a fixed message, never the upstream body: upstream errors
 * often echo the prompt back, and prompts must not reach logs or clients through an error.
 */
export class UpstreamError extends Error {
  readonly code: UpstreamErrorCode;
  readonly status: number | undefined;
  readonly retryAfterSeconds: number | undefined;

  constructor(code: UpstreamErrorCode, opts: { status?: number; retryAfterSeconds?: number } = {}) {
    super(opts.status === undefined ? messages[code] : `${messages[code]} (status ${opts.status})`);
    this.name = 'UpstreamError';
    this.code = code;
    this.status = opts.status;
    this.retryAfterSeconds = opts.retryAfterSeconds;
  }

  /** Whether a fallback to another upstream may help. */
  get retryable(): boolean {
    return this.code === 'upstream_timeout' || this.code === 'upstream_rate_limited' || this.code === 'upstream_error';
  }
}

export function upstreamErrorForStatus(status: number, retryAfterSeconds?: number): UpstreamError {
  if (status === 429) return new UpstreamError('upstream_rate_limited', { status, retryAfterSeconds });
  if (status === 408) return new UpstreamError('upstream_timeout', { status });
  if (status >= 400 && status < 500) return new UpstreamError('upstream_bad_request', { status });
  return new UpstreamError('upstream_error', { status });
}
