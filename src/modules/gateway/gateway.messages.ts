import { randomBytes } from 'node:crypto';
import type { AppError } from '../../platform/errors.ts';
import type {
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatCompletionResponse,
  ChatContentPart,
  ChatMessage,
  ToolChoice,
  ToolDefinition,
  Usage,
} from './gateway.adapter.ts';
import {
  type AnthropicBlock,
  type AnthropicMessage,
  type AnthropicRequest,
  type AnthropicResponse,
  type AnthropicStopReason,
  type AnthropicToolChoice,
  assistantFromBlocks,
  stopReasonOf,
  textOf,
  usageToAnthropic,
} from './gateway.anthropic.ts';

/**
 * The inbound side of Anthropic's Messages API (`POST /v1/messages`): requests into the
 * canonical (OpenAI chat) form, canonical answers and stream chunks back into Anthropic's
 * message and event shapes, and errors in Anthropic's error object. The outbound side (the
 * Anthropic adapter's translation) is gateway.anthropic.ts.
 */

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
  return typeof content === 'string' ? { role: 'assistant', content } : assistantFromBlocks(content);
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
