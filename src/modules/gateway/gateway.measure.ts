import type { ChatCompletionRequest, ChatCompletionResponse } from './gateway.adapter.ts';

/** A rough token count (4 characters a token) for when a provider reports none. */
export function estimateTokens(text: string): number {
  return estimateFromChars(text.length);
}

export function estimateFromChars(chars: number): number {
  return Math.ceil(chars / 4);
}

/** The input tokens a chat request is reserved for: its characters, and 4 tokens of framing per message. */
export function inputEstimateOf(messages: ChatCompletionRequest['messages']): number {
  return estimateFromChars(contentLength(messages)) + 4 * messages.length;
}

/** The characters a request's messages carry (an image counts 1000): what input estimates are made of. */
export function contentLength(messages: ChatCompletionRequest['messages']): number {
  let n = 0;
  for (const m of messages) {
    if (typeof m.content === 'string') n += m.content.length;
    else if (Array.isArray(m.content)) for (const p of m.content) n += p.type === 'text' ? p.text.length : 1000;
    if (m.tool_calls) for (const t of m.tool_calls) n += t.function.arguments.length + t.function.name.length;
  }
  return n;
}

/** The characters of a whole answer's text and tool arguments: the output estimate when a provider reports no usage. */
export function outputChars(res: ChatCompletionResponse): number {
  let n = 0;
  for (const ch of res.choices) {
    if (typeof ch.message.content === 'string') n += ch.message.content.length;
    for (const t of ch.message.tool_calls ?? []) n += t.function.arguments.length;
  }
  return n;
}
