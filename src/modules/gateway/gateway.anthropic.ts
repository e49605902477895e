import { randomBytes } from 'node:crypto';
import { AppError } from '../../platform/errors.ts';
import type {
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatCompletionResponse,
  ChatContentPart,
  ChatMessage,
  FinishReason,
  ToolCall,
  ToolChoice,
  ToolDefinition,
  Usage,
} from './gateway.adapter.ts';

/**
 * Translation between Anthropic's Messages API and the canonical (OpenAI chat) form, both
 * ways: outbound for the Anthropic adapter (`toAnthropicRequest`, `fromAnthropicResponse`,
 * `anthropicStreamToChunks`) and inbound for `/v1/messages` (`fromAnthropicRequest`,
 * `toAnthropicResponse`, `chunksToAnthropicEvents`). System prompts, images, tool
 * definitions, tool calls and results, streamed text and tool arguments, stop reasons and
 * usage (with cached and reasoning tokens) survive both directions.
 */

export type AnthropicTextBlock = { type: 'text'; text: string };
export type AnthropicImageBlock = {
  type: 'image';
  source: { type: 'base64'; media_type: string; data: string } | { type: 'url'; url: string };
};
export type AnthropicToolUseBlock = { type: 'tool_use'; id: string; name: string; input: unknown };
export type AnthropicToolResultBlock = {
  type: 'tool_result';
  tool_use_id: string;
  content?: string | Array<AnthropicTextBlock | AnthropicImageBlock>;
  is_error?: boolean;
};
export type AnthropicThinkingBlock = { type: 'thinking'; thinking: string; signature?: string };
export type AnthropicBlock =
  | AnthropicTextBlock
  | AnthropicImageBlock
  | AnthropicToolUseBlock
  | AnthropicToolResultBlock
  | AnthropicThinkingBlock;

export type AnthropicMessage = { role: 'user' | 'assistant'; content: string | AnthropicBlock[] };

export type AnthropicTool = { name: string; description?: string; input_schema: Record<string, unknown> };
export type AnthropicToolChoice =
  | { type: 'auto' | 'any' | 'none'; disable_parallel_tool_use?: boolean }
  | { type: 'tool'; name: string; disable_parallel_tool_use?: boolean };

export type AnthropicRequest = {
  model: string;
  messages: AnthropicMessage[];
  system?: string | AnthropicTextBlock[];
  max_tokens: number;
  stop_sequences?: string[];
  temperature?: number;
  top_p?: number;
  top_k?: number;
  stream?: boolean;
  tools?: AnthropicTool[];
  tool_choice?: AnthropicToolChoice;
  metadata?: { user_id?: string };
  thinking?: { type: 'enabled'; budget_tokens: number } | { type: 'disabled' };
};

export type AnthropicUsage = {
  input_tokens: number;
  output_tokens: number;
  cache_read_input_tokens?: number | null;
  cache_creation_input_tokens?: number | null;
};

export type AnthropicStopReason = 'end_turn' | 'max_tokens' | 'stop_sequence' | 'tool_use' | 'pause_turn' | 'refusal';

export type AnthropicResponse = {
  id: string;
  type: 'message';
  role: 'assistant';
  model: string;
  content: AnthropicBlock[];
  stop_reason: AnthropicStopReason | null;
  stop_sequence: string | null;
  usage: AnthropicUsage;
};

/** Output assumed when a canonical request names no maximum: Anthropic requires one. */
export const DEFAULT_ANTHROPIC_MAX_TOKENS = 4096;

const REASONING_BUDGET: Record<string, number> = { minimal: 1024, low: 2048, medium: 8192, high: 24_576 };

function textOf(content: ChatMessage['content']): string {
  if (typeof content === 'string') return content;
  if (!content) return '';
  return content.map((p) => (p.type === 'text' ? p.text : '')).join('');
}

function parseArguments(args: string): unknown {
  if (args.trim() === '') return {};
  try {
    return JSON.parse(args);
  } catch {
    throw new AppError('bad_request', 'A tool call in the conversation has arguments that are not valid JSON.');
  }
}

function imageBlock(part: Extract<ChatContentPart, { type: 'image_url' }>): AnthropicImageBlock {
  const url = part.image_url.url;
  const m = /^data:([^;,]+);base64,(.*)$/s.exec(url);
  if (m?.[1] && m[2] !== undefined) return { type: 'image', source: { type: 'base64', media_type: m[1], data: m[2] } };
  return { type: 'image', source: { type: 'url', url } };
}

function userBlocks(content: ChatMessage['content']): AnthropicBlock[] {
  if (typeof content === 'string') return content === '' ? [] : [{ type: 'text', text: content }];
  if (!content) return [];
  return content.flatMap((p): AnthropicBlock[] => {
    if (p.type === 'text') return [{ type: 'text', text: p.text }];
    if (p.type === 'image_url') return [imageBlock(p)];
    return [];
  });
}

/** Appends blocks to the conversation, merging with the previous message of the same role. */
function push(out: AnthropicMessage[], role: 'user' | 'assistant', blocks: AnthropicBlock[]) {
  if (blocks.length === 0) return;
  const prev = out[out.length - 1];
  if (prev && prev.role === role && Array.isArray(prev.content)) prev.content.push(...blocks);
  else out.push({ role, content: blocks });
}

function toAnthropicToolChoice(choice: ToolChoice | undefined, parallel: boolean | undefined) {
  const disable = parallel === false ? { disable_parallel_tool_use: true } : {};
  if (choice === undefined) return parallel === false ? ({ type: 'auto', ...disable } as const) : undefined;
  if (choice === 'auto') return { type: 'auto', ...disable } as const;
  if (choice === 'required') return { type: 'any', ...disable } as const;
  if (choice === 'none') return { type: 'none' } as const;
  return { type: 'tool', name: choice.function.name, ...disable } as const;
}

/** The canonical request as Anthropic's Messages API takes it. */
export function toAnthropicRequest(req: ChatCompletionRequest, defaultMaxTokens = DEFAULT_ANTHROPIC_MAX_TOKENS) {
  if ((req.n ?? 1) > 1) throw new AppError('bad_request', 'This provider does not support n > 1.');
  const system: string[] = [];
  const messages: AnthropicMessage[] = [];
  for (const m of req.messages) {
    if (m.role === 'system' || m.role === 'developer') {
      system.push(textOf(m.content));
    } else if (m.role === 'user') {
      push(messages, 'user', userBlocks(m.content));
    } else if (m.role === 'assistant') {
      const blocks: AnthropicBlock[] = [];
      if (m.reasoning_content) blocks.push({ type: 'thinking', thinking: m.reasoning_content });
      const text = textOf(m.content);
      if (text) blocks.push({ type: 'text', text });
      for (const call of m.tool_calls ?? []) {
        blocks.push({
          type: 'tool_use',
          id: call.id,
          name: call.function.name,
          input: parseArguments(call.function.arguments),
        });
      }
      push(messages, 'assistant', blocks);
    } else {
      push(messages, 'user', [{ type: 'tool_result', tool_use_id: m.tool_call_id ?? '', content: textOf(m.content) }]);
    }
  }
  const out: AnthropicRequest = {
    model: req.model,
    messages,
    max_tokens: req.max_completion_tokens ?? req.max_tokens ?? defaultMaxTokens,
  };
  if (system.length > 0) out.system = system.join('\n\n');
  if (req.stop !== undefined && req.stop !== null) out.stop_sequences = Array.isArray(req.stop) ? req.stop : [req.stop];
  // Anthropic's temperature runs from 0 to 1, OpenAI's to 2.
  if (typeof req.temperature === 'number') out.temperature = Math.min(1, req.temperature);
  if (typeof req.top_p === 'number') out.top_p = req.top_p;
  if (req.tools?.length) {
    out.tools = req.tools.map((t) => ({
      name: t.function.name,
      ...(t.function.description ? { description: t.function.description } : {}),
      input_schema: t.function.parameters ?? { type: 'object', properties: {} },
    }));
  }
  const choice = toAnthropicToolChoice(req.tool_choice, req.parallel_tool_calls);
  if (choice && req.tools?.length) out.tool_choice = choice;
  if (req.user) out.metadata = { user_id: req.user };
  const budget = req.reasoning_effort ? REASONING_BUDGET[req.reasoning_effort] : undefined;
  if (budget) {
    out.thinking = { type: 'enabled', budget_tokens: budget };
    if (out.max_tokens <= budget) out.max_tokens = budget + defaultMaxTokens;
  }
  return out;
}

export function finishReasonOf(stop: string | null | undefined): FinishReason {
  switch (stop) {
    case 'end_turn':
    case 'stop_sequence':
    case 'pause_turn':
      return 'stop';
    case 'max_tokens':
      return 'length';
    case 'tool_use':
      return 'tool_calls';
    case 'refusal':
      return 'content_filter';
    default:
      return stop ? 'stop' : null;
  }
}

export function stopReasonOf(finish: FinishReason | string | null | undefined): AnthropicStopReason {
  switch (finish) {
    case 'length':
      return 'max_tokens';
    case 'tool_calls':
    case 'function_call':
      return 'tool_use';
    case 'content_filter':
      return 'refusal';
    default:
      return 'end_turn';
  }
}

/** Anthropic usage as canonical usage: cache reads and writes are prompt tokens too. */
export function usageFromAnthropic(u: AnthropicUsage): Usage {
  const cachedRead = u.cache_read_input_tokens ?? 0;
  const prompt = u.input_tokens + cachedRead + (u.cache_creation_input_tokens ?? 0);
  return {
    prompt_tokens: prompt,
    completion_tokens: u.output_tokens,
    total_tokens: prompt + u.output_tokens,
    prompt_tokens_details: { cached_tokens: cachedRead },
  };
}

export function usageToAnthropic(u: Usage | undefined | null): AnthropicUsage {
  const cached = u?.prompt_tokens_details?.cached_tokens ?? 0;
  return {
    input_tokens: Math.max(0, (u?.prompt_tokens ?? 0) - cached),
    output_tokens: u?.completion_tokens ?? 0,
    cache_read_input_tokens: cached,
    cache_creation_input_tokens: 0,
  };
}

/** An Anthropic message as a canonical chat completion. */
export function fromAnthropicResponse(res: AnthropicResponse): ChatCompletionResponse {
  let text = '';
  let reasoning = '';
  const toolCalls: ToolCall[] = [];
  for (const b of res.content) {
    if (b.type === 'text') text += b.text;
    else if (b.type === 'thinking') reasoning += b.thinking;
    else if (b.type === 'tool_use') {
      toolCalls.push({
        id: b.id,
        type: 'function',
        function: { name: b.name, arguments: JSON.stringify(b.input ?? {}) },
      });
    }
  }
  const message: ChatMessage = { role: 'assistant', content: text === '' && toolCalls.length > 0 ? null : text };
  if (toolCalls.length > 0) message.tool_calls = toolCalls;
  if (reasoning) message.reasoning_content = reasoning;
  return {
    id: res.id,
    object: 'chat.completion',
    created: 0,
    model: res.model,
    choices: [{ index: 0, message, finish_reason: finishReasonOf(res.stop_reason) }],
    usage: usageFromAnthropic(res.usage),
  };
}

/** Folds Anthropic stream events into canonical chunks. One instance per stream. */
export function anthropicStreamTranslator(created: number) {
  let id = 'msg';
  let model = '';
  let input: AnthropicUsage = { input_tokens: 0, output_tokens: 0 };
  let output = 0;
  let toolIndex = -1;
  /** Anthropic content block index -> canonical tool call index. */
  const toolOf = new Map<number, number>();
  let finish: FinishReason = null;
  const chunk = (delta: ChatCompletionChunk['choices'][number]['delta'], finishReason: FinishReason = null) =>
    ({
      id,
      object: 'chat.completion.chunk',
      created,
      model,
      choices: [{ index: 0, delta, finish_reason: finishReason }],
    }) satisfies ChatCompletionChunk;

  return {
    /** Chunks for one event (type and parsed data); `done` after message_stop. */
    push(type: string, data: Record<string, unknown>): { chunks: ChatCompletionChunk[]; done: boolean } {
      switch (type) {
        case 'message_start': {
          const m = data.message as { id?: string; model?: string; usage?: AnthropicUsage } | undefined;
          id = m?.id ?? id;
          model = m?.model ?? model;
          if (m?.usage) input = m.usage;
          return { chunks: [chunk({ role: 'assistant', content: '' })], done: false };
        }
        case 'content_block_start': {
          const block = data.content_block as AnthropicBlock | undefined;
          const index = Number(data.index);
          if (block?.type === 'tool_use') {
            toolIndex += 1;
            toolOf.set(index, toolIndex);
            return {
              chunks: [
                chunk({
                  tool_calls: [
                    { index: toolIndex, id: block.id, type: 'function', function: { name: block.name, arguments: '' } },
                  ],
                }),
              ],
              done: false,
            };
          }
          if (block?.type === 'text' && block.text) return { chunks: [chunk({ content: block.text })], done: false };
          return { chunks: [], done: false };
        }
        case 'content_block_delta': {
          const d = data.delta as
            | { type: 'text_delta'; text: string }
            | { type: 'input_json_delta'; partial_json: string }
            | { type: 'thinking_delta'; thinking: string }
            | { type: string }
            | undefined;
          if (d?.type === 'text_delta' && 'text' in d) return { chunks: [chunk({ content: d.text })], done: false };
          if (d?.type === 'thinking_delta' && 'thinking' in d) {
            return { chunks: [chunk({ reasoning_content: d.thinking })], done: false };
          }
          if (d?.type === 'input_json_delta' && 'partial_json' in d) {
            const index = toolOf.get(Number(data.index)) ?? toolIndex;
            return {
              chunks: [chunk({ tool_calls: [{ index, function: { arguments: d.partial_json } }] })],
              done: false,
            };
          }
          return { chunks: [], done: false };
        }
        case 'message_delta': {
          const d = data.delta as { stop_reason?: string } | undefined;
          const u = data.usage as Partial<AnthropicUsage> | undefined;
          if (typeof u?.output_tokens === 'number') output = u.output_tokens;
          if (typeof u?.input_tokens === 'number') input = { ...input, input_tokens: u.input_tokens };
          if (typeof u?.cache_read_input_tokens === 'number')
            input = { ...input, cache_read_input_tokens: u.cache_read_input_tokens };
          if (typeof u?.cache_creation_input_tokens === 'number') {
            input = { ...input, cache_creation_input_tokens: u.cache_creation_input_tokens };
          }
          finish = finishReasonOf(d?.stop_reason ?? 'end_turn');
          return { chunks: [chunk({}, finish)], done: false };
        }
        case 'message_stop': {
          const usage = usageFromAnthropic({ ...input, output_tokens: output });
          return {
            chunks: [{ id, object: 'chat.completion.chunk', created, model, choices: [], usage }],
            done: true,
          };
        }
        default:
          return { chunks: [], done: false };
      }
    },
  };
}

// ---- inbound: /v1/messages

export type InboundMessagesRequest = AnthropicRequest;

function inboundUserMessages(content: AnthropicMessage['content']): ChatMessage[] {
  if (typeof content === 'string') return [{ role: 'user', content }];
  const out: ChatMessage[] = [];
  const parts: ChatContentPart[] = [];
  for (const b of content) {
    if (b.type === 'tool_result') {
      const text =
        typeof b.content === 'string'
          ? b.content
          : (b.content ?? []).map((c) => (c.type === 'text' ? c.text : '')).join('');
      out.push({ role: 'tool', tool_call_id: b.tool_use_id, content: b.is_error ? `Error: ${text}` : text });
    } else if (b.type === 'text') {
      parts.push({ type: 'text', text: b.text });
    } else if (b.type === 'image') {
      const url = b.source.type === 'base64' ? `data:${b.source.media_type};base64,${b.source.data}` : b.source.url;
      parts.push({ type: 'image_url', image_url: { url } });
    }
  }
  if (parts.length > 0) {
    const onlyText = parts.every((p) => p.type === 'text');
    out.push({
      role: 'user',
      content: onlyText ? parts.map((p) => (p.type === 'text' ? p.text : '')).join('') : parts,
    });
  }
  return out;
}

function inboundAssistantMessage(content: AnthropicMessage['content']): ChatMessage {
  if (typeof content === 'string') return { role: 'assistant', content };
  let text = '';
  let reasoning = '';
  const toolCalls: ToolCall[] = [];
  for (const b of content) {
    if (b.type === 'text') text += b.text;
    else if (b.type === 'thinking') reasoning += b.thinking;
    else if (b.type === 'tool_use') {
      toolCalls.push({
        id: b.id,
        type: 'function',
        function: { name: b.name, arguments: JSON.stringify(b.input ?? {}) },
      });
    }
  }
  const m: ChatMessage = { role: 'assistant', content: text === '' && toolCalls.length > 0 ? null : text };
  if (toolCalls.length > 0) m.tool_calls = toolCalls;
  if (reasoning) m.reasoning_content = reasoning;
  return m;
}

function fromAnthropicToolChoice(c: AnthropicToolChoice | undefined): {
  tool_choice?: ToolChoice;
  parallel_tool_calls?: boolean;
} {
  if (!c) return {};
  const parallel = c.type !== 'none' && c.disable_parallel_tool_use ? { parallel_tool_calls: false } : {};
  if (c.type === 'auto') return { tool_choice: 'auto', ...parallel };
  if (c.type === 'any') return { tool_choice: 'required', ...parallel };
  if (c.type === 'none') return { tool_choice: 'none' };
  if (c.type === 'tool') return { tool_choice: { type: 'function', function: { name: c.name } }, ...parallel };
  return {};
}

/** A `/v1/messages` request in canonical form. */
export function fromAnthropicRequest(req: InboundMessagesRequest): ChatCompletionRequest {
  const messages: ChatMessage[] = [];
  if (req.system) {
    const system = typeof req.system === 'string' ? req.system : req.system.map((b) => b.text).join('\n\n');
    if (system) messages.push({ role: 'system', content: system });
  }
  for (const m of req.messages) {
    if (m.role === 'user') messages.push(...inboundUserMessages(m.content));
    else messages.push(inboundAssistantMessage(m.content));
  }
  const out: ChatCompletionRequest = { model: req.model, messages, max_tokens: req.max_tokens };
  if (req.stream) out.stream = true;
  if (req.stop_sequences?.length) out.stop = req.stop_sequences;
  if (typeof req.temperature === 'number') out.temperature = req.temperature;
  if (typeof req.top_p === 'number') out.top_p = req.top_p;
  if (req.tools?.length) {
    out.tools = req.tools.map(
      (t): ToolDefinition => ({
        type: 'function',
        function: {
          name: t.name,
          ...(t.description ? { description: t.description } : {}),
          parameters: t.input_schema,
        },
      }),
    );
    Object.assign(out, fromAnthropicToolChoice(req.tool_choice));
  }
  if (req.metadata?.user_id) out.user = req.metadata.user_id;
  if (req.thinking?.type === 'enabled') {
    const b = req.thinking.budget_tokens;
    out.reasoning_effort = b <= 2048 ? 'low' : b <= 8192 ? 'medium' : 'high';
  }
  return out;
}

export function newMessageId(): string {
  return `msg_${randomBytes(12).toString('hex')}`;
}

/** A canonical chat completion as an Anthropic message (the answer of `/v1/messages`). */
export function toAnthropicResponse(res: ChatCompletionResponse): AnthropicResponse {
  const choice = res.choices[0];
  const content: AnthropicBlock[] = [];
  const msg = choice?.message;
  if (msg?.reasoning_content) content.push({ type: 'thinking', thinking: msg.reasoning_content, signature: '' });
  const text = textOf(msg?.content ?? null);
  if (text) content.push({ type: 'text', text });
  for (const call of msg?.tool_calls ?? []) {
    let input: unknown = {};
    try {
      input = call.function.arguments ? JSON.parse(call.function.arguments) : {};
    } catch {
      input = {};
    }
    content.push({ type: 'tool_use', id: call.id, name: call.function.name, input });
  }
  return {
    id: res.id.startsWith('msg_') ? res.id : newMessageId(),
    type: 'message',
    role: 'assistant',
    model: res.model,
    content,
    stop_reason: stopReasonOf(choice?.finish_reason ?? null),
    stop_sequence: null,
    usage: usageToAnthropic(res.usage),
  };
}

export type AnthropicEvent = { event: string; data: Record<string, unknown> };

/**
 * Turns canonical chunks into Anthropic's stream events: message_start, one content block
 * per text run and per tool call (start, deltas, stop), message_delta with the stop reason
 * and output tokens, message_stop. `finish(usage)` closes the stream.
 */
export function chunksToAnthropicEvents(model: string) {
  const id = newMessageId();
  let started = false;
  let block = -1;
  let open: 'text' | 'tool' | 'thinking' | null = null;
  let stop: AnthropicStopReason = 'end_turn';
  const toolBlocks = new Map<number, number>();
  const events: AnthropicEvent[] = [];

  function start(usage: Usage | undefined) {
    if (started) return;
    started = true;
    events.push({
      event: 'message_start',
      data: {
        type: 'message_start',
        message: {
          id,
          type: 'message',
          role: 'assistant',
          model,
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: { ...usageToAnthropic(usage), output_tokens: 0 },
        },
      },
    });
  }
  function close() {
    if (open === null) return;
    events.push({ event: 'content_block_stop', data: { type: 'content_block_stop', index: block } });
    open = null;
  }
  function openBlock(kind: 'text' | 'tool' | 'thinking', contentBlock: Record<string, unknown>) {
    close();
    block += 1;
    open = kind;
    events.push({
      event: 'content_block_start',
      data: { type: 'content_block_start', index: block, content_block: contentBlock },
    });
  }
  function delta(d: Record<string, unknown>) {
    events.push({ event: 'content_block_delta', data: { type: 'content_block_delta', index: block, delta: d } });
  }

  return {
    push(c: ChatCompletionChunk): AnthropicEvent[] {
      start(undefined);
      for (const choice of c.choices) {
        if (choice.index !== 0) continue;
        const d = choice.delta;
        if (d.reasoning_content) {
          if (open !== 'thinking') openBlock('thinking', { type: 'thinking', thinking: '' });
          delta({ type: 'thinking_delta', thinking: d.reasoning_content });
        }
        if (d.content) {
          if (open !== 'text') openBlock('text', { type: 'text', text: '' });
          delta({ type: 'text_delta', text: d.content });
        }
        for (const t of d.tool_calls ?? []) {
          if (!toolBlocks.has(t.index)) {
            openBlock('tool', {
              type: 'tool_use',
              id: t.id ?? `toolu_${randomBytes(8).toString('hex')}`,
              name: t.function?.name ?? '',
              input: {},
            });
            toolBlocks.set(t.index, block);
          }
          if (t.function?.arguments) delta({ type: 'input_json_delta', partial_json: t.function.arguments });
        }
        if (choice.finish_reason) stop = stopReasonOf(choice.finish_reason);
      }
      return events.splice(0);
    },
    finish(usage: Usage | undefined): AnthropicEvent[] {
      start(usage);
      close();
      events.push({
        event: 'message_delta',
        data: {
          type: 'message_delta',
          delta: { stop_reason: stop, stop_sequence: null },
          // The upstream's usage comes at the end of its stream, after message_start went out:
          // message_delta carries the whole count (Anthropic's SDKs take its input fields too).
          usage: usageToAnthropic(usage),
        },
      });
      events.push({ event: 'message_stop', data: { type: 'message_stop' } });
      return events.splice(0);
    },
  };
}

/** Anthropic's error object for an AppError (what the Anthropic SDKs read). */
export function anthropicError(err: AppError) {
  const type =
    err.status === 400
      ? 'invalid_request_error'
      : err.status === 401
        ? 'authentication_error'
        : err.status === 402
          ? 'billing_error'
          : err.status === 403
            ? 'permission_error'
            : err.status === 404
              ? 'not_found_error'
              : err.status === 413
                ? 'request_too_large'
                : err.status === 429
                  ? 'rate_limit_error'
                  : err.status === 503
                    ? 'overloaded_error'
                    : 'api_error';
  return { type: 'error', error: { type, message: err.message, code: err.code } };
}
