import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { egressGuard } from '../../platform/http/egress.ts';
import { ToolFailure, type ToolResult } from './agents.tools.core.ts';
import { type ConnectionSource, type ConnectionToken, httpTool } from './agents.tools.http.ts';
import { plainHttpPolicy } from './agents.tools.policy.ts';
import { ToolDef } from './agents.tools.schemas.ts';
import { guardedTransport } from './agents.tools.ts';

/**
 * `{{connection.NAME}}` in a custom HTTP tool, without a database: which user's token is
 * asked for, where it may go (the provider's API hosts, https or allow-listed http), and that
 * a refused call sends nothing and never quotes the token.
 */

const TOKEN = 'gho_canary-access-token-1c9e';
const ctx = (userId = 'usr_a') => ({
  workspaceId: 'ws_1',
  userId,
  runId: 'run_1',
  signal: new AbortController().signal,
});

let server: Server;
let port: number;
const seen: Array<{ host: string; auth: string }> = [];
const asked: Array<{ userId: string; name: string }> = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    seen.push({ host: String(req.headers.host), auth: String(req.headers.authorization ?? '') });
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ got: req.headers.authorization ?? null }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  await new Promise<void>((r) => server.close(() => r()));
});

function tool(url: string, opts: { token?: ConnectionToken | Error; allow?: string; source?: boolean } = {}) {
  const allow = opts.allow ?? '127.0.0.1';
  const source: ConnectionSource = async (_ws, userId, name) => {
    asked.push({ userId, name });
    if (opts.token instanceof Error) throw opts.token;
    return opts.token ?? { value: TOKEN, apiHosts: ['127.0.0.1'] };
  };
  const def = ToolDef.parse({
    type: 'http',
    name: 'call',
    description: 'calls the API',
    parameters: { type: 'object', properties: {} },
    request: { method: 'GET', url, headers: { authorization: 'Bearer {{connection.gh}}' } },
  });
  if (def.type !== 'http') throw new Error('not an http tool');
  return httpTool(def, {
    transport: guardedTransport(egressGuard(allow)),
    secrets: async () => new Map(),
    ...(opts.source === false ? {} : { connections: source }),
    plainHttpAllowed: plainHttpPolicy(allow),
  });
}

const errorOf = (r: ToolResult) => (r.ok ? null : r.error);

describe('happy', () => {
  it("asks for the run's user's token and sends it to a declared API host", async () => {
    asked.length = 0;
    const before = seen.length;
    const r = await tool(`http://127.0.0.1:${port}/me`).execute({}, ctx('usr_b'));
    expect(asked).toEqual([{ userId: 'usr_b', name: 'gh' }]);
    expect(seen.slice(before)).toEqual([{ host: `127.0.0.1:${port}`, auth: `Bearer ${TOKEN}` }]);
    // The API showed the token back: the model gets it redacted.
    expect(r).toEqual({ ok: true, content: JSON.stringify({ got: 'Bearer [secret]' }) });
  });
});

describe('security', () => {
  it("refuses a host the provider's API hosts do not list, sending nothing", async () => {
    const before = seen.length;
    const r = await tool(`http://127.0.0.1:${port}/me`, {
      token: { value: TOKEN, apiHosts: ['api.example.com', '*.example.org'] },
    }).execute({}, ctx());
    expect(errorOf(r)?.code).toBe('connection_host_not_allowed');
    expect(errorOf(r)?.message).not.toContain(TOKEN);
    const none = await tool(`http://127.0.0.1:${port}/me`, { token: { value: TOKEN, apiHosts: [] } }).execute(
      {},
      ctx(),
    );
    expect(errorOf(none)).toMatchObject({ code: 'connection_host_not_allowed' });
    expect(errorOf(none)?.message).toContain('declares no API hosts');
    expect(seen.length).toBe(before);
  });

  it('refuses plain http to a host not allow-listed before asking for a token', async () => {
    asked.length = 0;
    const r = await tool('http://api.example.com/me', {
      token: { value: TOKEN, apiHosts: ['api.example.com'] },
    }).execute({}, ctx());
    expect(errorOf(r)?.code).toBe('connection_placement_not_allowed');
    expect(asked).toEqual([]);
  });

  it('a connection that cannot be used is a tool error, not a crash', async () => {
    const gone = await tool(`http://127.0.0.1:${port}/me`, {
      token: new ToolFailure('connection_unavailable', 'The connection gh cannot be used: disconnected.'),
    }).execute({}, ctx());
    expect(errorOf(gone)).toEqual({
      code: 'connection_unavailable',
      message: 'The connection gh cannot be used: disconnected.',
    });
    const without = await tool(`http://127.0.0.1:${port}/me`, { source: false }).execute({}, ctx());
    expect(errorOf(without)?.code).toBe('connection_unavailable');
  });
});
