import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fakeTokens, type ReceivedRequest } from './openai-upstream.ts';

/**
 * An upstream speaking Anthropic's Messages API on loopback: `POST /v1/messages` (JSON and
 * the SSE event sequence message_start, content_block_start/delta/stop, message_delta,
 * message_stop), `GET /v1/models`, the `x-api-key` and `anthropic-version` headers
 * required. The reply is `echo: <last user text>`; with tools and a user turn last it
 * calls the first tool (arguments streamed as input_json_delta pieces). Requests with
 * `thinking` get a thinking block first. Cache reads are reported for prompts over 20
 * words, so cached-token accounting is exercised.
 */
export type FakeAnthropic = {
  url: string;
  baseUrl: string;
  received: ReceivedRequest[];
  /** Status codes for the next requests (529 = overloaded), with a body that echoes the prompt. */
  failNext(...statuses: number[]): void;
  close(): Promise<void>;
};

type Block = { type: string; text?: string; content?: unknown };
type Msg = { role: string; content: string | Block[] };

function lastUserText(messages: Msg[]): string {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m?.role !== 'user') continue;
    if (typeof m.content === 'string') return m.content;
    return m.content.map((b) => (b.type === 'text' ? (b.text ?? '') : '')).join('');
  }
  return '';
}

function endsWithToolResult(messages: Msg[]): boolean {
  const last = messages[messages.length - 1];
  return !!last && Array.isArray(last.content) && last.content.some((b) => b.type === 'tool_result');
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

export async function startFakeAnthropic(opts: { apiKey?: string } = {}): Promise<FakeAnthropic> {
  const received: ReceivedRequest[] = [];
  const failures: number[] = [];
  let seq = 0;

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const raw = req.method === 'POST' ? await readBody(req) : '';
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    let body: Record<string, unknown> | null = null;
    try {
      body = raw ? (JSON.parse(raw) as Record<string, unknown>) : null;
    } catch {
      return json(res, 400, { type: 'error', error: { type: 'invalid_request_error', message: 'invalid json' } });
    }
    received.push({ method: req.method ?? 'GET', path, headers: req.headers, body });
    if (opts.apiKey && req.headers['x-api-key'] !== opts.apiKey) {
      return json(res, 401, { type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key' } });
    }
    if (!req.headers['anthropic-version']) {
      return json(res, 400, {
        type: 'error',
        error: { type: 'invalid_request_error', message: 'anthropic-version required' },
      });
    }
    const failure = failures.shift();
    if (failure) {
      return json(res, failure, { type: 'error', error: { type: 'api_error', message: `refused: ${raw}` } });
    }
    if (req.method === 'GET' && path === '/v1/models') {
      return json(res, 200, {
        data: ['claude-sonnet-4-5', 'claude-haiku-4-5'].map((id) => ({ type: 'model', id, display_name: id })),
        has_more: false,
      });
    }
    if (req.method !== 'POST' || path !== '/v1/messages' || !body) {
      return json(res, 404, { type: 'error', error: { type: 'not_found_error', message: 'not found' } });
    }
    if (typeof body.max_tokens !== 'number') {
      return json(res, 400, {
        type: 'error',
        error: { type: 'invalid_request_error', message: 'max_tokens: Field required' },
      });
    }
    const messages = (body.messages ?? []) as Msg[];
    const tools = (Array.isArray(body.tools) ? body.tools : []) as { name: string }[];
    const text = `echo: ${lastUserText(messages)}`;
    const callTool =
      tools.length > 0 && !endsWithToolResult(messages) && (body.tool_choice as { type?: string })?.type !== 'none';
    const thinking = (body.thinking as { type?: string } | undefined)?.type === 'enabled';
    const promptWords = fakeTokens(JSON.stringify(messages.map((m) => m.content)).replace(/[^\w\s]/g, ' '));
    const cached = promptWords > 20 ? 10 : 0;
    const usage = {
      input_tokens: promptWords - cached,
      output_tokens: callTool ? 5 : fakeTokens(text),
      cache_read_input_tokens: cached,
      cache_creation_input_tokens: 0,
    };
    const id = `msg_fake${++seq}`;
    const toolUse = callTool
      ? { type: 'tool_use', id: `toolu_${seq}`, name: tools[0]?.name ?? 'tool', input: { q: lastUserText(messages) } }
      : null;
    const content = [
      ...(thinking ? [{ type: 'thinking', thinking: 'considering', signature: 'sig' }] : []),
      ...(toolUse ? [toolUse] : [{ type: 'text', text }]),
    ];
    const stopReason = toolUse ? 'tool_use' : 'end_turn';
    if (body.stream !== true) {
      return json(res, 200, {
        id,
        type: 'message',
        role: 'assistant',
        model: body.model,
        content,
        stop_reason: stopReason,
        stop_sequence: null,
        usage,
      });
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const send = (event: string, data: Record<string, unknown>) =>
      res.write(`event: ${event}\ndata: ${JSON.stringify({ type: event, ...data })}\n\n`);
    send('message_start', {
      message: {
        id,
        type: 'message',
        role: 'assistant',
        model: body.model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { ...usage, output_tokens: 1 },
      },
    });
    send('ping', {});
    content.forEach((block, index) => {
      if (block.type === 'thinking') {
        send('content_block_start', { index, content_block: { type: 'thinking', thinking: '' } });
        send('content_block_delta', { index, delta: { type: 'thinking_delta', thinking: 'considering' } });
        send('content_block_delta', { index, delta: { type: 'signature_delta', signature: 'sig' } });
      } else if (block.type === 'tool_use' && toolUse) {
        send('content_block_start', { index, content_block: { ...toolUse, input: {} } });
        const args = JSON.stringify(toolUse.input);
        const mid = Math.floor(args.length / 2);
        for (const part of [args.slice(0, mid), args.slice(mid)]) {
          send('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: part } });
        }
      } else {
        send('content_block_start', { index, content_block: { type: 'text', text: '' } });
        text.split(' ').forEach((w, i) => {
          send('content_block_delta', { index, delta: { type: 'text_delta', text: i === 0 ? w : ` ${w}` } });
        });
      }
      send('content_block_stop', { index });
    });
    send('message_delta', {
      delta: { stop_reason: stopReason, stop_sequence: null },
      usage: { output_tokens: usage.output_tokens },
    });
    send('message_stop', {});
    res.end();
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) json(res, 500, { type: 'error', error: { type: 'api_error', message: 'fake failed' } });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    baseUrl: `${url}/v1`,
    received,
    failNext: (...s) => failures.push(...s),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
