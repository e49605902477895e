import { describe, expect, it } from 'vitest';
import { ChatCompletionBody, isPlainChatBody } from './gateway.schemas.ts';

/**
 * The chat route's quick check must never accept a body the schema refuses, and what it
 * accepts must be what the schema would return. Bodies are generated from a fixed seed:
 * each field drawn from values the schema takes, values it refuses, and edge cases.
 */

function prng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ABSENT = Symbol('absent');
const message = (extra: Record<string, unknown>) => ({ role: 'user', content: 'hi', ...extra });
const POOLS: Record<string, unknown[]> = {
  model: ['gpt-4o-mini', ' gpt-4o', 'gpt-4o ', '', 'a'.repeat(200), 'a'.repeat(201), 'x\u0007y', 'mødel', 42, null],
  messages: [
    [message({})],
    [],
    [message({ role: 'system' }), message({})],
    [message({ role: 'robot' })],
    [message({ content: null })],
    [message({ content: [{ type: 'text', text: 'hi' }] })],
    [message({ name: 'ann' })],
    [message({ name: 7 })],
    [message({ tool_call_id: 'c1', role: 'tool' })],
    [{ content: 'no role' }],
    ['hi'],
    [message({ constructor: 'x' })],
    'hi',
  ],
  stream: [true, false, null, 'yes', 1],
  stream_options: [{ include_usage: true }, { include_usage: 'yes' }, {}, { other: 1 }, null, [], 'x'],
  temperature: [0, 1.5, 2, 2.01, -0.1, null, '1'],
  top_p: [0, 0.5, 1, 1.1, null],
  max_tokens: [1, 256, 0, -1, 1.5, 2 ** 53, null, '5'],
  max_completion_tokens: [1, 0, 4096, null],
  n: [1, 16, 17, 0, 2.5, null],
  seed: [0, -5, 2 ** 53, 1.5, null],
  presence_penalty: [-2, 2, 2.5, null],
  frequency_penalty: [0, -2.1, null],
  user: ['u', 'a'.repeat(256), 'a'.repeat(257), null, 3],
  tools: [[{ type: 'function', function: { name: 'f' } }]],
  constructor: ['x'],
  toString: [1],
  extra_field: ['kept'],
};

function generate(rand: () => number): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  for (const [field, pool] of Object.entries(POOLS)) {
    const required = field === 'model' || field === 'messages';
    // Required fields are usually there; others usually not, so plain bodies come up often.
    const absent = rand() < (required ? 0.05 : 0.85);
    // The first value of a pool is the usual one: drawn half the time.
    const value = absent ? ABSENT : rand() < 0.5 ? pool[0] : pool[Math.floor(rand() * pool.length)];
    if (value !== ABSENT) body[field] = structuredClone(value);
  }
  return body;
}

describe('the chat body quick check', () => {
  it('accepts only bodies the schema accepts, unchanged', () => {
    const rand = prng(20261204);
    let quick = 0;
    let full = 0;
    for (let i = 0; i < 20_000; i++) {
      const body = generate(rand);
      const parsed = ChatCompletionBody.safeParse(body);
      if (parsed.success) full++;
      if (!isPlainChatBody(body)) continue;
      quick++;
      expect(parsed.success, JSON.stringify(body)).toBe(true);
      expect(parsed.data).toEqual(body);
    }
    // Both sides were exercised: plenty of quick accepts, and bodies only the schema takes.
    expect(quick).toBeGreaterThan(2000);
    expect(full).toBeGreaterThan(quick);
  });

  it('takes the body an SDK sends for a plain chat, streamed or not', () => {
    const body = {
      model: 'gpt-4o-mini',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hello' },
      ],
      max_tokens: 256,
      temperature: 0.2,
      stream: true,
      stream_options: { include_usage: true },
    };
    expect(isPlainChatBody(body)).toBe(true);
    expect(isPlainChatBody({ ...body, tools: [] })).toBe(false);
    expect(isPlainChatBody({ ...body, model: ' gpt-4o-mini' })).toBe(false);
  });
});
