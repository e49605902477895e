import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HASH_EMBEDDING_DIMS, hashEmbedding } from './hash-embeddings.ts';

/**
 * An upstream LLM provider speaking OpenAI's HTTP API on loopback: chat completions (JSON
 * and SSE, tool calls, `stream_options.include_usage`), embeddings and the model list. Its
 * answers are deterministic: the reply is `echo: <last user text>`; a request with tools
 * and a user turn last gets one call of the first tool per `parallel` count; an embedding is
 * `hashEmbedding` of the input (texts sharing words are close), of `dimensions` or HASH_EMBEDDING_DIMS.
 *
 * `next(...)` queues how the following requests misbehave (status with a body echoing the
 * prompt, hang, garbage, truncated stream, wrong content type, no usage), so tests can walk
 * every failure path against a real HTTP peer.
 */
export type UpstreamBehaviour =
  | { kind: 'ok' }
  | { kind: 'status'; status: number; retryAfter?: string }
  | { kind: 'hang' }
  | { kind: 'garbage' }
  | { kind: 'truncate' }
  | { kind: 'html' }
  | { kind: 'no_usage' }
  | { kind: 'slow_stream'; delayMs: number }
  /** The next whole (not streamed) answer, as given: text and/or tool calls (what an agent's model would say). */
  | { kind: 'reply'; content?: string | null; toolCalls?: Array<{ name: string; arguments: string }>; finish?: string };

export type ReceivedRequest = {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: Record<string, unknown> | null;
};

type Message = { role: string; content?: unknown; tool_calls?: unknown[] };

export type FakeOpenAi = {
  url: string;
  /** Base URL with the /v1 path, as a provider is configured. */
  baseUrl: string;
  received: ReceivedRequest[];
  next(...behaviours: UpstreamBehaviour[]): void;
  /** Models the /v1/models list answers with. */
  models: string[];
  /** TCP connections accepted so far: a gateway that keeps its upstream connections alive opens few. */
  connections(): number;
  /** Streams still being sent (a gateway that stops reading closes them). */
  openStreams(): number;
  /** Requests held open by `hang` whose client has not gone away (a caller that aborts closes them). */
  hanging(): number;
  close(): Promise<void>;
};

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((p) => (p && typeof p === 'object' && 'text' in p && typeof p.text === 'string' ? p.text : ''))
      .join('');
  }
  return '';
}

/** Whitespace-separated words: the fake's token count. */
export function fakeTokens(text: string): number {
  const t = text.trim();
  return t === '' ? 0 : t.split(/\s+/).length;
}

function promptTokens(messages: Message[]): number {
  return messages.reduce((n, m) => n + fakeTokens(textOf(m.content)) + 1, 0);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of req) parts.push(chunk as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

function json(res: ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

export async function startFakeOpenAi(): Promise<FakeOpenAi> {
  const queue: UpstreamBehaviour[] = [];
  const received: ReceivedRequest[] = [];
  const open = new Set<ServerResponse>();
  const hung = new Set<ServerResponse>();
  let seq = 0;
  const fake = { models: ['gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small'] } as FakeOpenAi;

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const raw = req.method === 'POST' ? await readBody(req) : '';
    let body: Record<string, unknown> | null = null;
    try {
      body = raw ? (JSON.parse(raw) as Record<string, unknown>) : null;
    } catch {
      return json(res, 400, { error: { message: 'invalid json', type: 'invalid_request_error' } });
    }
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    received.push({ method: req.method ?? 'GET', path, headers: req.headers, body });
    const behaviour = queue.shift() ?? { kind: 'ok' };

    if (behaviour.kind === 'hang') {
      // Never answers; the socket stays open until the client gives up.
      hung.add(res);
      res.on('close', () => hung.delete(res));
      return;
    }
    if (behaviour.kind === 'status') {
      // Real providers often quote the prompt back in their error messages.
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (behaviour.retryAfter) headers['retry-after'] = behaviour.retryAfter;
      res.writeHead(behaviour.status, headers);
      return res.end(JSON.stringify({ error: { message: `refused: ${raw}`, type: 'upstream_error' } }));
    }
    if (behaviour.kind === 'garbage') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end('{"choices": [ this is not json');
    }
    if (behaviour.kind === 'html') {
      res.writeHead(200, { 'content-type': 'text/html' });
      return res.end('<html><body>gateway error</body></html>');
    }

    if (req.method === 'GET' && path.endsWith('/models')) {
      return json(res, 200, {
        object: 'list',
        data: fake.models.map((id) => ({ id, object: 'model', created: 1700000000, owned_by: 'fake' })),
      });
    }
    if (req.method === 'POST' && path.endsWith('/embeddings') && body) {
      const inputs = Array.isArray(body.input) ? body.input : [body.input];
      const dims = typeof body.dimensions === 'number' ? body.dimensions : HASH_EMBEDDING_DIMS;
      return json(res, 200, {
        object: 'list',
        model: body.model,
        data: inputs.map((input, index) => ({
          object: 'embedding',
          index,
          embedding: hashEmbedding(String(input), dims),
        })),
        usage: {
          prompt_tokens: inputs.reduce((n: number, i) => n + fakeTokens(String(i)), 0),
          total_tokens: inputs.reduce((n: number, i) => n + fakeTokens(String(i)), 0),
        },
      });
    }
    if (req.method === 'POST' && path.endsWith('/chat/completions') && body) {
      return chat(body, behaviour, res);
    }
    json(res, 404, { error: { message: 'not found', type: 'invalid_request_error' } });
  }

  function chat(body: Record<string, unknown>, behaviour: UpstreamBehaviour, res: ServerResponse) {
    const messages = (Array.isArray(body.messages) ? body.messages : []) as Message[];
    const last = messages[messages.length - 1];
    const tools = Array.isArray(body.tools) ? (body.tools as { function: { name: string } }[]) : [];
    const callTools = tools.length > 0 && last?.role === 'user' && body.tool_choice !== 'none';
    const n = typeof body.n === 'number' ? body.n : 1;
    const text = `echo: ${textOf(last?.content)}`;
    const maxTokens = (body.max_completion_tokens ?? body.max_tokens) as number | undefined;
    const words = text.split(' ');
    const reply = maxTokens !== undefined && words.length > maxTokens ? words.slice(0, maxTokens).join(' ') : text;
    const finish = callTools ? 'tool_calls' : reply === text ? 'stop' : 'length';
    if (behaviour.kind === 'reply' && body.stream !== true) {
      const calls = behaviour.toolCalls?.map((c) => ({
        id: `call_${++seq}`,
        type: 'function' as const,
        function: { name: c.name, arguments: c.arguments },
      }));
      const content = behaviour.content ?? null;
      const out = fakeTokens(content ?? '') + (calls?.length ?? 0) * 5;
      const inTokens = promptTokens(messages);
      return json(res, 200, {
        id: `chatcmpl-${++seq}`,
        object: 'chat.completion',
        created: Math.floor(Date.now() / 1000),
        model: String(body.model),
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content, ...(calls?.length ? { tool_calls: calls } : {}) },
            finish_reason: behaviour.finish ?? (calls?.length ? 'tool_calls' : 'stop'),
            logprobs: null,
          },
        ],
        usage: { prompt_tokens: inTokens, completion_tokens: out, total_tokens: inTokens + out },
      });
    }
    const toolCalls = callTools
      ? Array.from({ length: body.parallel_tool_calls === false ? 1 : Math.min(2, tools.length) }, (_, i) => ({
          id: `call_${++seq}`,
          type: 'function' as const,
          function: {
            name: tools[i]?.function.name ?? 'tool',
            arguments: JSON.stringify({ q: textOf(last?.content) }),
          },
        }))
      : undefined;
    const prompt = promptTokens(messages);
    const completion = callTools ? 5 : fakeTokens(reply);
    const usage = {
      prompt_tokens: prompt,
      completion_tokens: completion * n,
      total_tokens: prompt + completion * n,
      prompt_tokens_details: { cached_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0 },
    };
    const id = `chatcmpl-${++seq}`;
    const created = Math.floor(Date.now() / 1000);
    const model = String(body.model);

    if (body.stream !== true) {
      return json(res, 200, {
        id,
        object: 'chat.completion',
        created,
        model,
        system_fingerprint: 'fp_fake',
        choices: Array.from({ length: n }, (_, index) => ({
          index,
          message: {
            role: 'assistant',
            content: callTools ? null : reply,
            ...(toolCalls ? { tool_calls: toolCalls } : {}),
          },
          finish_reason: finish,
          logprobs: null,
        })),
        ...(behaviour.kind === 'no_usage' ? {} : { usage }),
      });
    }

    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    open.add(res);
    res.on('close', () => open.delete(res));
    const frames: unknown[] = [];
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => ({
      id,
      object: 'chat.completion.chunk',
      created,
      model,
      choices,
      ...extra,
    });
    for (let index = 0; index < n; index++) {
      frames.push(chunk([{ index, delta: { role: 'assistant', content: '' }, finish_reason: null }]));
      if (toolCalls) {
        toolCalls.forEach((call, i) => {
          frames.push(
            chunk([
              {
                index,
                delta: {
                  tool_calls: [
                    { index: i, id: call.id, type: 'function', function: { name: call.function.name, arguments: '' } },
                  ],
                },
                finish_reason: null,
              },
            ]),
          );
          const args = call.function.arguments;
          const mid = Math.floor(args.length / 2);
          for (const part of [args.slice(0, mid), args.slice(mid)]) {
            frames.push(
              chunk([
                { index, delta: { tool_calls: [{ index: i, function: { arguments: part } }] }, finish_reason: null },
              ]),
            );
          }
        });
      } else {
        reply.split(' ').forEach((w, i) => {
          frames.push(chunk([{ index, delta: { content: i === 0 ? w : ` ${w}` }, finish_reason: null }]));
        });
      }
      frames.push(chunk([{ index, delta: {}, finish_reason: finish }]));
    }
    const includeUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;
    if (includeUsage && behaviour.kind !== 'no_usage') frames.push(chunk([], { usage }));

    const delay = behaviour.kind === 'slow_stream' ? behaviour.delayMs : 0;
    const cut = behaviour.kind === 'truncate' ? Math.max(1, Math.floor(frames.length / 2)) : frames.length;
    let i = 0;
    const send = () => {
      if (res.destroyed) return;
      if (i < cut) {
        res.write(`data: ${JSON.stringify(frames[i++])}\n\n`);
        if (delay) setTimeout(send, delay);
        else setImmediate(send);
        return;
      }
      if (behaviour.kind === 'truncate') return res.destroy();
      res.end('data: [DONE]\n\n');
    };
    send();
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) json(res, 500, { error: { message: 'fake failed' } });
    });
  });
  let connections = 0;
  server.on('connection', () => {
    connections += 1;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  fake.connections = () => connections;
  fake.openStreams = () => open.size;
  fake.hanging = () => hung.size;
  const { port } = server.address() as AddressInfo;
  fake.url = `http://127.0.0.1:${port}`;
  fake.baseUrl = `${fake.url}/v1`;
  fake.received = received;
  fake.next = (...b) => queue.push(...b);
  fake.close = async () => {
    for (const res of open) res.destroy();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return fake;
}
