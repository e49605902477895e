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

export function textOf(content: ChatMessage['content']): string {
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

/** An assistant turn's blocks as one canonical assistant message (text, tool calls, reasoning). */
export function assistantFromBlocks(blocks: AnthropicBlock[]): ChatMessage {
  let text = '';
  let reasoning = '';
  const toolCalls: ToolCall[] = [];
  for (const b of blocks) {
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
  return message;
}

/** An Anthropic message as a canonical chat completion. */
export function fromAnthropicResponse(res: AnthropicResponse): ChatCompletionResponse {
  return {
    id: res.id,
    object: 'chat.completion',
    created: 0,
    model: res.model,
    choices: [{ index: 0, message: assistantFromBlocks(res.content), finish_reason: finishReasonOf(res.stop_reason) }],
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
