import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeMcpServer, startFakeMcpServer } from '../../../test/fakes/mcp-server.ts';
import { manualClock } from '../../platform/clock.ts';
import { egressGuard } from '../../platform/http/egress.ts';
import { evaluate, formatNumber } from './agents.tools.builtin.ts';
import { compilerFootprint, ToolFailure } from './agents.tools.core.ts';
import type { ToolSecret } from './agents.tools.http.ts';
import { type McpTarget, mcpToolName } from './agents.tools.mcp.ts';
import { plainHttpPolicy } from './agents.tools.policy.ts';
import type { ToolDefInput } from './agents.tools.schemas.ts';
import { ToolDef } from './agents.tools.schemas.ts';
import { guardedTransport, type Tool, type ToolResult, toolsService } from './agents.tools.ts';

/** Tools without a database: built-ins, custom HTTP tools and MCP against real loopback peers. */

const WS = 'ws_01JD6F3Q4N8ZK5R2W7XH9YB0C1';
const ctx = (signal: AbortSignal = new AbortController().signal) => ({
  workspaceId: WS,
  userId: 'usr_1',
  runId: 'run_1',
  signal,
});
const SECRET = 'sk-live-canary-7f3a9b1c2d';

type Seen = { method: string; url: string; headers: IncomingMessage['headers']; body: string };

/** A loopback HTTP service: /json echoes the request, /big streams 10 MB, /hang never answers, /status/N. */
async function startUpstream() {
  const seen: Seen[] = [];
  let cutOff = 0;
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.on('data', (c) => {
      body += c;
    });
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      res.on('close', () => {
        if (!res.writableFinished) cutOff++;
      });
      const path = (req.url ?? '').split('?')[0] ?? '';
      if (path === '/big') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        const chunk = Buffer.alloc(64 * 1024, 120);
        let sent = 0;
        const pump = () => {
          while (sent < 10 * 1024 * 1024) {
            sent += chunk.length;
            if (!res.write(chunk)) return void res.once('drain', pump);
          }
          res.end();
        };
        pump();
        return;
      }
      if (path === '/hang') return;
      const status = /^\/status\/(\d{3})$/.exec(path);
      if (status) {
        res.writeHead(Number(status[1]), { 'content-type': 'text/plain' });
        res.end('error body');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ method: req.method, url: req.url, auth: req.headers.authorization ?? null, body }));
    });
  });
  const sockets = new Set<import('node:net').Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    port,
    seen,
    cutOff: () => cutOff,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

let upstream: Awaited<ReturnType<typeof startUpstream>>;
let mcp: FakeMcpServer;
const clock = manualClock('2026-03-29T00:30:00.000Z');
const secrets = new Map<string, ToolSecret>([
  ['API_TOKEN', { value: SECRET, allowedHosts: ['127.0.0.1'], allowedHeaders: ['authorization', 'x-key'] }],
  [
    'ELSEWHERE',
    { value: 'other-secret-value', allowedHosts: ['api.example.com'], allowedHeaders: ['authorization', 'x-key'] },
  ],
]);
const mcpServers = new Map<string, McpTarget>();

function service(
  opts: {
    allow?: string;
    timeoutMs?: number;
    maxBytes?: number;
    stdio?: boolean;
    listTimeoutMs?: number;
    maxResultBytes?: number;
  } = {},
) {
  return toolsService({
    clock,
    http: guardedTransport(egressGuard(opts.allow ?? '127.0.0.1')),
    secrets: async (_ws, names) => new Map([...secrets].filter(([n]) => names.includes(n))),
    mcpTarget: async (_ws, name) => {
      const t = mcpServers.get(name);
      if (!t) throw new ToolFailure('mcp_server_not_found', `No MCP server ${name}.`);
      return t;
    },
    stdioAllowed: opts.stdio ?? false,
    plainHttpAllowed: plainHttpPolicy(opts.allow ?? '127.0.0.1'),
    limits: {
      timeoutMs: opts.timeoutMs ?? 2_000,
      maxResponseBytes: opts.maxBytes ?? 64 * 1024,
      ...(opts.listTimeoutMs ? { mcpListTimeoutMs: opts.listTimeoutMs } : {}),
      ...(opts.maxResultBytes ? { maxResultBytes: opts.maxResultBytes } : {}),
    },
  });
}

async function one(def: ToolDefInput, opts: Parameters<typeof service>[0] = {}): Promise<Tool> {
  const [tool] = await service(opts).resolve(WS, [ToolDef.parse(def)]);
  if (!tool) throw new Error('no tool');
  return tool;
}

function errorCode(r: ToolResult): string {
  return r.ok ? 'ok' : r.error.code;
}

beforeAll(async () => {
  upstream = await startUpstream();
  mcp = await startFakeMcpServer();
  mcpServers.set('fake', { transport: 'http', url: mcp.url, headers: {}, secrets: [] });
  mcpServers.set('authed', {
    transport: 'http',
    url: mcp.url,
    headers: { authorization: `Bearer ${SECRET}` },
    secrets: [{ value: SECRET, allowedHosts: ['127.0.0.1'], allowedHeaders: ['authorization'] }],
  });
  mcpServers.set('local', { transport: 'stdio', command: 'node', args: ['--version'] });
});
afterAll(async () => {
  await upstream.close();
  await mcp.close();
});

describe('happy', () => {
  it('calculator evaluates arithmetic with precedence, associativity and functions', () => {
    const cases: Array<[string, string]> = [
      ['1 + 2 * 3', '7'],
      ['(1 + 2) * 3', '9'],
      ['2 ^ 3 ^ 2', '512'],
      ['-2 ^ 2', '-4'],
      ['2 ^ -1', '0.5'],
      ['--3', '3'],
      ['10 % 4', '2'],
      ['0.1 + 0.2', '0.3'],
      ['sqrt(16) + abs(-3)', '7'],
      ['round(2.345, 2)', '2.35'],
      ['round(2.5)', '3'],
      ['min(3, 1, 2) + max(4, 9)', '10'],
      ['floor(-1.5) + ceil(1.2)', '0'],
      ['2 * pi', formatNumber(2 * Math.PI)],
      ['1e3 / 8', '125'],
      ['  7  ', '7'],
    ];
    for (const [expr, want] of cases) expect(formatNumber(evaluate(expr)), expr).toBe(want);
  });

  it('calculator tool answers as a tool result', async () => {
    const tool = await one({ type: 'builtin', name: 'calculator' });
    expect(await tool.execute({ expression: '(2 + 3) * 4' }, ctx())).toEqual({ ok: true, content: '20' });
    expect(tool.requiresApproval).toBe(false);
    expect(tool.parameters).toMatchObject({ required: ['expression'] });
  });

  it('current_time reads the injected clock, in UTC or an IANA time zone', async () => {
    const tool = await one({ type: 'builtin', name: 'current_time' });
    const utc = await tool.execute({}, ctx());
    expect(utc.ok && JSON.parse(utc.content)).toMatchObject({
      utc: '2026-03-29T00:30:00.000Z',
      timezone: 'UTC',
      local: '2026-03-29T00:30:00',
      utc_offset: '+00:00',
      weekday: 'Sunday',
    });
    // The night Paris moves to summer time: still +01:00 at 00:30 UTC, +02:00 after 01:00 UTC.
    const paris = await tool.execute({ timezone: 'Europe/Paris' }, ctx());
    expect(paris.ok && JSON.parse(paris.content)).toMatchObject({ local: '2026-03-29T01:30:00', utc_offset: '+01:00' });
    clock.advance(60 * 60_000);
    const later = await tool.execute({ timezone: 'Europe/Paris' }, ctx());
    expect(later.ok && JSON.parse(later.content)).toMatchObject({ local: '2026-03-29T03:30:00', utc_offset: '+02:00' });
    clock.set('2026-03-29T00:30:00.000Z');
  });

  it('http_request calls an allowed host and returns status and body', async () => {
    const tool = await one({ type: 'builtin', name: 'http_request', allowed_hosts: ['127.0.0.1'] });
    const res = await tool.execute(
      { method: 'POST', url: `${upstream.origin}/json?q=1`, headers: { 'X-Test': 'yes' }, body: 'hello' },
      ctx(),
    );
    expect(res.ok).toBe(true);
    const parsed = res.ok ? JSON.parse(res.content) : null;
    expect(parsed.status).toBe(200);
    expect(JSON.parse(parsed.body)).toMatchObject({ method: 'POST', url: '/json?q=1', body: 'hello' });
    expect(upstream.seen.at(-1)?.headers['x-test']).toBe('yes');
  });

  it('knowledge_search without the knowledge module wired in answers knowledge_unavailable', async () => {
    const tool = await one({ type: 'builtin', name: 'knowledge_search' });
    expect(errorCode(await tool.execute({ query: 'refund policy' }, ctx()))).toBe('knowledge_unavailable');
  });

  it('a custom HTTP tool fills arguments (URL-encoded in the URL, JSON in the body) and secrets', async () => {
    const tool = await one({
      type: 'http',
      name: 'create_ticket',
      description: 'Creates a ticket',
      parameters: {
        type: 'object',
        properties: { project: { type: 'string' }, title: { type: 'string' }, priority: { type: 'integer' } },
        required: ['project', 'title'],
      },
      request: {
        method: 'POST',
        url: `${upstream.origin}/json/{{project}}?title={{title}}`,
        headers: { Authorization: 'Bearer {{secret.API_TOKEN}}' },
        body: { ticket: { title: '{{title}}', priority: '{{priority}}', label: 'p{{priority}}' } },
      },
    });
    const res = await tool.execute({ project: 'a/b c', title: 'x&y=z', priority: 2 }, ctx());
    expect(res.ok).toBe(true);
    const seen = upstream.seen.at(-1);
    expect(seen?.url).toBe('/json/a%2Fb%20c?title=x%26y%3Dz');
    // The upstream got the secret...
    expect(seen?.headers.authorization).toBe(`Bearer ${SECRET}`);
    expect(JSON.parse(seen?.body ?? '')).toEqual({ ticket: { title: 'x&y=z', priority: 2, label: 'p2' } });
    expect(seen?.headers['content-type']).toBe('application/json');
    // ...and echoed it back, but the result the model gets does not carry it.
    expect(res.ok && res.content).not.toContain(SECRET);
    expect(res.ok && res.content).toContain('[secret]');
  });

  it('lists and calls MCP tools, filtered by allow, named <server>__<tool>', async () => {
    const all = await service().resolve(WS, [ToolDef.parse({ type: 'mcp', server: 'fake' })]);
    expect(all.map((t) => t.name).sort()).toEqual(
      ['add', 'big', 'echo', 'fail', 'hang', 'whoami'].map((n) => mcpToolName('fake', n)),
    );
    const tools = await service().resolve(WS, [
      ToolDef.parse({ type: 'mcp', server: 'fake', allow: ['add', 'echo'], requires_approval: true }),
    ]);
    expect(tools.map((t) => t.name).sort()).toEqual(['fake__add', 'fake__echo']);
    const add = tools.find((t) => t.name === 'fake__add');
    expect(add?.requiresApproval).toBe(true);
    expect(add?.parameters).toMatchObject({ properties: { a: { type: 'number' } } });
    expect(await add?.execute({ a: 2, b: 40 }, ctx())).toEqual({ ok: true, content: '42' });
    expect(mcp.calls.at(-1)).toBe('add');
  });

  it('MCP headers reach the server; the secret in them never reaches the result', async () => {
    const [whoami] = await service().resolve(WS, [ToolDef.parse({ type: 'mcp', server: 'authed', allow: ['whoami'] })]);
    const res = await whoami?.execute({}, ctx());
    expect(mcp.requests.at(-1)?.authorization).toBe(`Bearer ${SECRET}`);
    expect(res).toEqual({ ok: true, content: 'authorization: Bearer [secret]' });
  });
});

describe('errors', () => {
  it('calculator edge cases answer results with stable codes, never throw', async () => {
    const tool = await one({ type: 'builtin', name: 'calculator' });
    const cases: Array<[string, string]> = [
      ['1 / 0', 'division_by_zero'],
      ['5 % 0', 'division_by_zero'],
      ['0 / (2 - 2)', 'division_by_zero'],
      ['sqrt(-1)', 'math_error'],
      ['10 ^ 400', 'math_error'],
      ['1e999', 'math_error'],
      ['2 +', 'invalid_expression'],
      ['(1 + 2', 'invalid_expression'],
      ['1 + 2)', 'invalid_expression'],
      ['1 2', 'invalid_expression'],
      ['foo(1)', 'invalid_expression'],
      ['sqrt(1, 2)', 'invalid_expression'],
      ['round(1.5, 99)', 'invalid_expression'],
      ['process.exit(1)', 'invalid_expression'],
      ['1; 2', 'invalid_expression'],
      ['"a"', 'invalid_expression'],
      [`${'('.repeat(200)}1${')'.repeat(200)}`, 'invalid_expression'],
      [`${'-'.repeat(500)}1`, 'invalid_expression'],
    ];
    for (const [expression, code] of cases) {
      expect(errorCode(await tool.execute({ expression }, ctx())), expression).toBe(code);
    }
    expect(errorCode(await tool.execute({ expression: '1'.repeat(1001) }, ctx()))).toBe('invalid_arguments');
  });

  it('arguments are validated against the parameters schema', async () => {
    const tool = await one({ type: 'builtin', name: 'calculator' });
    expect(errorCode(await tool.execute({}, ctx()))).toBe('invalid_arguments');
    expect(errorCode(await tool.execute({ expression: 3 }, ctx()))).toBe('invalid_arguments');
    expect(errorCode(await tool.execute({ expression: '1', extra: true }, ctx()))).toBe('invalid_arguments');
    expect(errorCode(await tool.execute('1 + 1', ctx()))).toBe('invalid_arguments');
    expect(errorCode(await tool.execute([1], ctx()))).toBe('invalid_arguments');
    const [add] = await service().resolve(WS, [ToolDef.parse({ type: 'mcp', server: 'fake', allow: ['add'] })]);
    const before = mcp.calls.length;
    expect(errorCode((await add?.execute({ a: 'two', b: 1 }, ctx())) as ToolResult)).toBe('invalid_arguments');
    expect(mcp.calls.length).toBe(before);
  });

  it('current_time refuses an unknown time zone', async () => {
    const tool = await one({ type: 'builtin', name: 'current_time' });
    expect(errorCode(await tool.execute({ timezone: 'Mars/Olympus' }, ctx()))).toBe('invalid_arguments');
  });

  it('upstream HTTP errors are results', async () => {
    const tool = await one({ type: 'builtin', name: 'http_request', allowed_hosts: ['127.0.0.1'] });
    const res = await tool.execute({ method: 'GET', url: `${upstream.origin}/status/503` }, ctx());
    expect(res).toEqual({ ok: false, error: { code: 'upstream_error', message: '127.0.0.1 answered HTTP 503.' } });
    const custom = await one({
      type: 'http',
      name: 'lookup',
      description: 'x',
      parameters: { type: 'object' },
      request: { method: 'GET', url: `${upstream.origin}/status/404` },
    });
    expect(errorCode(await custom.execute({}, ctx()))).toBe('upstream_error');
    const closed = await one({
      type: 'http',
      name: 'closed',
      description: 'x',
      parameters: { type: 'object' },
      // Port 9 (discard) on loopback: nothing listens there.
      request: { method: 'GET', url: 'http://127.0.0.1:9/' },
    });
    expect(errorCode(await closed.execute({}, ctx()))).toBe('upstream_error');
  });

  it('a referenced secret the workspace does not have answers secret_not_found', async () => {
    const tool = await one({
      type: 'http',
      name: 't',
      description: 'x',
      parameters: { type: 'object' },
      request: { method: 'GET', url: `${upstream.origin}/json`, headers: { 'X-Key': '{{secret.MISSING}}' } },
    });
    expect(errorCode(await tool.execute({}, ctx()))).toBe('secret_not_found');
  });

  it('a response over the size limit stops being read at the limit', async () => {
    const tool = await one(
      { type: 'builtin', name: 'http_request', allowed_hosts: ['127.0.0.1'] },
      { maxBytes: 100_000 },
    );
    const before = upstream.cutOff();
    const res = await tool.execute({ method: 'GET', url: `${upstream.origin}/big` }, ctx());
    expect(errorCode(res)).toBe('response_too_large');
    // The 10 MB answer was cut off, not read to its end.
    await expect.poll(() => upstream.cutOff()).toBeGreaterThan(before);
    const custom = await one({
      type: 'http',
      name: 'big',
      description: 'x',
      parameters: { type: 'object' },
      request: { method: 'GET', url: `${upstream.origin}/big` },
      limits: { max_response_bytes: 1000 },
    });
    expect(errorCode(await custom.execute({}, ctx()))).toBe('response_too_large');
  });

  it('a hanging service answers timeout; a cancelled run answers aborted', async () => {
    const custom = await one({
      type: 'http',
      name: 'slow',
      description: 'x',
      parameters: { type: 'object' },
      request: { method: 'GET', url: `${upstream.origin}/hang` },
      limits: { timeout_ms: 200 },
    });
    expect(errorCode(await custom.execute({}, ctx()))).toBe('timeout');
    const builtin = await one(
      { type: 'builtin', name: 'http_request', allowed_hosts: ['127.0.0.1'] },
      { timeoutMs: 200 },
    );
    expect(errorCode(await builtin.execute({ method: 'GET', url: `${upstream.origin}/hang` }, ctx()))).toBe('timeout');
    const cancel = new AbortController();
    const pending = builtin.execute({ method: 'GET', url: `${upstream.origin}/hang` }, ctx(cancel.signal));
    setTimeout(() => cancel.abort(), 50);
    expect(errorCode(await pending)).toBe('aborted');
  });

  it('MCP: a 10 MB result and a hanging tool end within the limits', async () => {
    const tools = await service({ timeoutMs: 1_000, maxBytes: 100_000 }).resolve(WS, [
      ToolDef.parse({ type: 'mcp', server: 'fake', allow: ['big', 'hang', 'fail'] }),
    ]);
    const byName = (n: string) => tools.find((t) => t.name === `fake__${n}`) as Tool;
    expect(errorCode(await byName('big').execute({}, ctx()))).toBe('response_too_large');
    expect(errorCode(await byName('hang').execute({}, ctx()))).toBe('timeout');
    expect(await byName('fail').execute({}, ctx())).toEqual({
      ok: false,
      error: { code: 'tool_error', message: 'boom' },
    });
  });

  it('an unknown MCP server fails resolve with mcp_server_not_found; stdio is refused unless enabled', async () => {
    await expect(service().resolve(WS, [ToolDef.parse({ type: 'mcp', server: 'nope' })])).rejects.toMatchObject({
      code: 'mcp_server_not_found',
    });
    await expect(service().resolve(WS, [ToolDef.parse({ type: 'mcp', server: 'local' })])).rejects.toMatchObject({
      code: 'mcp_stdio_disabled',
    });
  });

  it('an MCP server that is down or slow gives the run an unavailable tool, not a failed start', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    mcpServers.set('down', { transport: 'http', url: `http://127.0.0.1:${port}/mcp`, headers: {}, secrets: [] });
    mcpServers.set('slow', { transport: 'http', url: `${upstream.origin}/hang`, headers: {}, secrets: [] });
    const tools = await service({ listTimeoutMs: 300 }).resolve(WS, [
      ToolDef.parse({ type: 'builtin', name: 'calculator' }),
      ToolDef.parse({ type: 'mcp', server: 'down' }),
      ToolDef.parse({ type: 'mcp', server: 'slow' }),
      ToolDef.parse({ type: 'mcp', server: 'fake', allow: ['add'] }),
    ]);
    expect(tools.map((t) => t.name)).toEqual(['calculator', 'down__unavailable', 'slow__unavailable', 'fake__add']);
    for (const name of ['down__unavailable', 'slow__unavailable']) {
      const r = await tools.find((t) => t.name === name)?.execute({}, ctx());
      expect(r && errorCode(r)).toBe('mcp_unavailable');
    }
    expect(await tools[3]?.execute({ a: 1, b: 2 }, ctx())).toEqual({ ok: true, content: '3' });
  });

  it("a result is cut at the tool's content limit, with a marker, separately from the response limit", async () => {
    const long = 'é'.repeat(3_000);
    const def = {
      type: 'http' as const,
      name: 'long',
      description: 'x',
      parameters: { type: 'object' },
      request: { method: 'POST' as const, url: `${upstream.origin}/json`, body: { text: long } },
    };
    const whole = await one(def);
    const full = await whole.execute({}, ctx());
    expect(full.ok && full.content).toContain(long);
    const own = await one({ ...def, limits: { max_result_bytes: 1_000 } });
    const cut = await own.execute({}, ctx());
    expect(cut.ok).toBe(true);
    const text = cut.ok ? cut.content : '';
    const [kept, marker] = text.split('\n[truncated: ');
    expect(Buffer.byteLength(kept ?? '', 'utf8')).toBeLessThanOrEqual(1_000);
    expect(kept).not.toContain('\uFFFD');
    expect(marker).toMatch(/^the result was \d+ bytes; only the first 1000 are shown\]$/);
    const serviceWide = await one(def, { maxResultBytes: 2_000 });
    const capped = await serviceWide.execute({}, ctx());
    expect(capped.ok && capped.content).toContain('[truncated: ');
    expect(serviceWide.maxResultBytes).toBe(2_000);
  });

  it('two tools with one name fail resolve', async () => {
    await expect(
      service().resolve(WS, [
        ToolDef.parse({ type: 'builtin', name: 'calculator' }),
        ToolDef.parse({
          type: 'http',
          name: 'calculator',
          description: 'x',
          parameters: { type: 'object' },
          request: { method: 'GET', url: 'https://example.com' },
        }),
      ]),
    ).rejects.toMatchObject({ code: 'duplicate_tool_name' });
  });
});

describe('security', () => {
  it('http_request reaches only the allowed hosts (none by default)', async () => {
    const none = await one({ type: 'builtin', name: 'http_request' });
    expect(errorCode(await none.execute({ method: 'GET', url: `${upstream.origin}/json` }, ctx()))).toBe(
      'host_not_allowed',
    );
    const some = await one({ type: 'builtin', name: 'http_request', allowed_hosts: ['*.example.com'] });
    expect(errorCode(await some.execute({ method: 'GET', url: `${upstream.origin}/json` }, ctx()))).toBe(
      'host_not_allowed',
    );
    expect(errorCode(await some.execute({ method: 'GET', url: 'https://example.com/' }, ctx()))).toBe(
      'host_not_allowed',
    );
    expect(errorCode(await some.execute({ method: 'GET', url: 'file:///etc/passwd' }, ctx()))).toBe(
      'invalid_arguments',
    );
    expect(
      errorCode(await some.execute({ method: 'GET', url: 'https://a.example.com/', headers: { Host: 'x' } }, ctx())),
    ).toBe('invalid_arguments');
  });

  it('the SSRF guard refuses private addresses, literal or resolved, even for allowed hosts', async () => {
    const count = upstream.seen.length;
    const literal = await one({ type: 'builtin', name: 'http_request', allowed_hosts: ['127.0.0.1'] }, { allow: '' });
    expect(errorCode(await literal.execute({ method: 'GET', url: `${upstream.origin}/json` }, ctx()))).toBe(
      'egress_denied',
    );
    // A name that resolves to loopback is refused when the socket connects.
    const named = await one({ type: 'builtin', name: 'http_request', allowed_hosts: ['localhost'] }, { allow: '' });
    expect(
      errorCode(await named.execute({ method: 'GET', url: `http://localhost:${upstream.port}/json` }, ctx())),
    ).toBe('egress_denied');
    const custom = await one(
      {
        type: 'http',
        name: 'meta',
        description: 'x',
        parameters: { type: 'object' },
        request: { method: 'GET', url: 'http://169.254.169.254/latest/meta-data/' },
      },
      { allow: '' },
    );
    expect(errorCode(await custom.execute({}, ctx()))).toBe('egress_denied');
    const mcpTools = service({ allow: '' }).resolve(WS, [ToolDef.parse({ type: 'mcp', server: 'fake' })]);
    await expect(mcpTools).rejects.toMatchObject({ code: 'egress_denied' });
    expect(upstream.seen.length).toBe(count);
  });

  it('a secret is only sent to its allowed hosts, whatever the template or arguments say', async () => {
    const count = upstream.seen.length;
    const fixed = await one({
      type: 'http',
      name: 'exfiltrate',
      description: 'x',
      parameters: { type: 'object' },
      request: { method: 'GET', url: `${upstream.origin}/json`, headers: { 'X-Key': '{{secret.ELSEWHERE}}' } },
    });
    const res = await fixed.execute({}, ctx());
    expect(errorCode(res)).toBe('secret_host_not_allowed');
    expect(JSON.stringify(res)).not.toContain('other-secret-value');
    // The host comes from an argument: the secret's own host cannot be smuggled in with @, /, # or :.
    const templated = await one({
      type: 'http',
      name: 'exfiltrate_host',
      description: 'x',
      parameters: { type: 'object', properties: { h: { type: 'string' } } },
      request: {
        method: 'GET',
        url: `http://{{h}}:${upstream.port}/json`,
        headers: { 'X-Key': '{{secret.ELSEWHERE}}' },
      },
    });
    for (const h of [
      '127.0.0.1',
      'api.example.com@127.0.0.1',
      `api.example.com:1@127.0.0.1:${upstream.port}/`,
      'api.example.com/@127.0.0.1',
      'api.example.com#@127.0.0.1',
      '127.0.0.1/?x=api.example.com',
    ]) {
      const r = await templated.execute({ h }, ctx());
      expect(r.ok, h).toBe(false);
      expect(['secret_host_not_allowed', 'invalid_arguments'], h).toContain(errorCode(r));
      expect(JSON.stringify(r)).not.toContain('other-secret-value');
    }
    expect(upstream.seen.length).toBe(count);
  });

  it('a secret goes only in the headers declared for it, over https unless allow-listed', async () => {
    const count = upstream.seen.length;
    const base = { type: 'http' as const, description: 'x', parameters: { type: 'object' } };
    const inUrl = await one({
      ...base,
      name: 'in_url',
      request: { method: 'GET', url: `${upstream.origin}/json?k={{secret.API_TOKEN}}` },
    });
    const inBody = await one({
      ...base,
      name: 'in_body',
      request: { method: 'POST', url: `${upstream.origin}/json`, body: { note: '{{secret.API_TOKEN}}' } },
    });
    const wrongHeader = await one({
      ...base,
      name: 'wrong_header',
      request: { method: 'GET', url: `${upstream.origin}/json`, headers: { 'X-Echo': '{{secret.API_TOKEN}}' } },
    });
    for (const tool of [inUrl, inBody, wrongHeader]) {
      const r = await tool.execute({}, ctx());
      expect(errorCode(r), tool.name).toBe('secret_placement_not_allowed');
      expect(JSON.stringify(r)).not.toContain(SECRET);
    }
    // Plain http to a host the operator did not allow-list: refused before anything is sent.
    const plain = await one(
      {
        ...base,
        name: 'plain',
        request: { method: 'GET', url: `${upstream.origin}/json`, headers: { Authorization: '{{secret.API_TOKEN}}' } },
      },
      { allow: '' },
    );
    expect(errorCode(await plain.execute({}, ctx()))).toBe('secret_placement_not_allowed');
    expect(upstream.seen.length).toBe(count);
  });

  it('a parameters schema carrying $id resolves every time; the compiler stays bounded', async () => {
    const def = {
      type: 'http' as const,
      name: 'with_id',
      description: 'x',
      parameters: {
        $id: 'https://example.com/schemas/args',
        type: 'object',
        properties: { n: { $id: 'https://example.com/schemas/n', type: 'integer' } },
        required: ['n'],
      },
      request: { method: 'GET' as const, url: `${upstream.origin}/json` },
    };
    const first = await one(def);
    const second = await one(def);
    expect(errorCode(await second.execute({ n: 'x' }, ctx()))).toBe('invalid_arguments');
    expect(errorCode(await first.execute({}, ctx()))).toBe('invalid_arguments');
    for (let i = 0; i < 3000; i++) {
      await one({ ...def, parameters: { ...def.parameters, description: `v${i}` } });
    }
    const { cached, registered } = compilerFootprint();
    expect(cached).toBeLessThanOrEqual(256);
    expect(registered).toBeLessThan(1100);
    expect(errorCode(await (await one(def)).execute({ n: 1.5 }, ctx()))).toBe('invalid_arguments');
  }, 60_000);

  it('arguments cannot change the path, query or host of a templated URL', async () => {
    const tool = await one({
      type: 'http',
      name: 'get_user',
      description: 'x',
      parameters: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] },
      request: {
        method: 'GET',
        url: `${upstream.origin}/json/users/{{id}}`,
        headers: { 'X-Key': '{{secret.API_TOKEN}}' },
      },
    });
    await tool.execute({ id: '../admin?x=1#@evil.example' }, ctx());
    expect(upstream.seen.at(-1)?.url).toBe('/json/users/..%2Fadmin%3Fx%3D1%23%40evil.example');
  });

  it('a tool resolved for one workspace does not run for another', async () => {
    const tool = await one({ type: 'builtin', name: 'calculator' });
    const res = await tool.execute({ expression: '1' }, { ...ctx(), workspaceId: 'ws_other' });
    expect(errorCode(res)).toBe('tool_failed');
  });
});
