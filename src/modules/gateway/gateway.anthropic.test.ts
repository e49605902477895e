import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ChatCompletionChunk, ChatCompletionRequest } from './gateway.adapter.ts';
import { anthropicStreamTranslator, fromAnthropicResponse, toAnthropicRequest } from './gateway.anthropic.ts';
import { chunksToAnthropicEvents, fromAnthropicRequest, toAnthropicResponse } from './gateway.messages.ts';

const word = fc.stringMatching(/^[a-z]{1,8}$/);
const text = fc.array(word, { minLength: 1, maxLength: 6 }).map((w) => w.join(' '));

/** A conversation: system, then user/assistant turns, assistant turns may call tools answered by tool results. */
const conversation = fc
  .record({
    system: fc.option(text, { nil: undefined }),
    turns: fc.array(
      fc.record({
        user: text,
        reply: text,
        calls: fc.array(fc.record({ name: fc.stringMatching(/^[a-z_]{1,10}$/), arg: word }), { maxLength: 2 }),
      }),
      { minLength: 1, maxLength: 4 },
    ),
  })
  .map(({ system, turns }) => {
    const messages: ChatCompletionRequest['messages'] = [];
    if (system) messages.push({ role: 'system', content: system });
    let n = 0;
    for (const t of turns) {
      messages.push({ role: 'user', content: t.user });
      const calls = t.calls.map((c) => ({
        id: `call_${++n}`,
        type: 'function' as const,
        function: { name: c.name, arguments: JSON.stringify({ a: c.arg }) },
      }));
      messages.push({ role: 'assistant', content: t.reply, ...(calls.length ? { tool_calls: calls } : {}) });
      for (const c of calls) messages.push({ role: 'tool', tool_call_id: c.id, content: `result of ${c.id}` });
    }
    messages.push({ role: 'user', content: 'last' });
    return messages;
  });

describe('happy', () => {
  it('a conversation survives the trip to Anthropic and back (system, turns, tool calls, results)', () => {
    fc.assert(
      fc.property(conversation, (messages) => {
        const out = toAnthropicRequest({ model: 'm', messages, max_tokens: 50 });
        const back = fromAnthropicRequest({ ...out, messages: out.messages });
        expect(back.messages).toEqual(messages);
        expect(back.max_tokens).toBe(50);
      }),
    );
  });

  it('a streamed answer survives canonical -> Anthropic events -> canonical (text and tool arguments)', () => {
    fc.assert(
      fc.property(
        fc.array(word, { minLength: 1, maxLength: 8 }),
        fc.array(fc.record({ name: word, pieces: fc.array(word, { minLength: 1, maxLength: 3 }) }), { maxLength: 3 }),
        (words, tools) => {
          const base = { id: 'c', object: 'chat.completion.chunk' as const, created: 0, model: 'm' };
          const chunks: ChatCompletionChunk[] = [
            { ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] },
            ...words.map((w) => ({ ...base, choices: [{ index: 0, delta: { content: w }, finish_reason: null }] })),
          ];
          tools.forEach((t, i) => {
            chunks.push({
              ...base,
              choices: [
                {
                  index: 0,
                  delta: {
                    tool_calls: [
                      { index: i, id: `t${i}`, type: 'function', function: { name: t.name, arguments: '' } },
                    ],
                  },
                  finish_reason: null,
                },
              ],
            });
            for (const p of t.pieces) {
              chunks.push({
                ...base,
                choices: [
                  { index: 0, delta: { tool_calls: [{ index: i, function: { arguments: p } }] }, finish_reason: null },
                ],
              });
            }
          });
          const finish = tools.length ? 'tool_calls' : 'stop';
          chunks.push({ ...base, choices: [{ index: 0, delta: {}, finish_reason: finish }] });
          const usage = {
            prompt_tokens: 7,
            completion_tokens: 3,
            total_tokens: 10,
            prompt_tokens_details: { cached_tokens: 2 },
          };

          const events = chunksToAnthropicEvents('m');
          const all = [...chunks.flatMap((c) => events.push(c)), ...events.finish(usage)];
          const back = anthropicStreamTranslator(0);
          const got: ChatCompletionChunk[] = [];
          let done = false;
          for (const e of all) {
            const r = back.push(e.event, e.data);
            got.push(...r.chunks);
            done = r.done;
          }
          expect(done).toBe(true);
          const textBack = got.map((c) => c.choices[0]?.delta.content ?? '').join('');
          expect(textBack).toBe(words.join(''));
          const args = new Map<number, string>();
          const names = new Map<number, string>();
          for (const c of got) {
            for (const t of c.choices[0]?.delta.tool_calls ?? []) {
              if (t.function?.name) names.set(t.index, t.function.name);
              args.set(t.index, (args.get(t.index) ?? '') + (t.function?.arguments ?? ''));
            }
          }
          expect([...names.values()]).toEqual(tools.map((t) => t.name));
          expect([...args.values()]).toEqual(tools.map((t) => t.pieces.join('')));
          expect(got.find((c) => c.choices[0]?.finish_reason)?.choices[0]?.finish_reason).toBe(finish);
          expect(got.at(-1)?.usage).toMatchObject({
            prompt_tokens: 7,
            completion_tokens: 3,
            prompt_tokens_details: { cached_tokens: 2 },
          });
        },
      ),
    );
  });

  it('maps stop reasons and usage both ways', () => {
    const res = fromAnthropicResponse({
      id: 'msg_1',
      type: 'message',
      role: 'assistant',
      model: 'claude',
      content: [
        { type: 'text', text: 'hi' },
        { type: 'tool_use', id: 'tu', name: 'f', input: { x: 1 } },
      ],
      stop_reason: 'tool_use',
      stop_sequence: null,
      usage: { input_tokens: 5, output_tokens: 2, cache_read_input_tokens: 3, cache_creation_input_tokens: 1 },
    });
    expect(res.choices[0]?.finish_reason).toBe('tool_calls');
    expect(res.usage).toMatchObject({
      prompt_tokens: 9,
      completion_tokens: 2,
      prompt_tokens_details: { cached_tokens: 3 },
    });
    const again = toAnthropicResponse(res);
    expect(again.stop_reason).toBe('tool_use');
    expect(again.content).toEqual([
      { type: 'text', text: 'hi' },
      { type: 'tool_use', id: 'tu', name: 'f', input: { x: 1 } },
    ]);
    expect(again.usage).toMatchObject({ input_tokens: 6, output_tokens: 2, cache_read_input_tokens: 3 });
  });
});

describe('errors', () => {
  it('refuses n > 1 and tool arguments that are not JSON, for a provider that cannot take them', () => {
    expect(() => toAnthropicRequest({ model: 'm', messages: [{ role: 'user', content: 'x' }], n: 2 })).toThrow(/n > 1/);
    expect(() =>
      toAnthropicRequest({
        model: 'm',
        messages: [
          { role: 'user', content: 'x' },
          {
            role: 'assistant',
            content: null,
            tool_calls: [{ id: 'a', type: 'function', function: { name: 'f', arguments: '{oops' } }],
          },
        ],
      }),
    ).toThrow(/not valid JSON/);
  });
});
