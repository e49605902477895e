import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  FAKE_MCP_SERVER_FILE,
  type FakeMcpServer,
  STDIO_FLAG,
  startFakeMcpServer,
} from '../../../test/fakes/mcp-server.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import type { Database } from '../../platform/db/db.ts';
import type { McpServerView } from './agents.mcp.schemas.ts';
import { ToolDef } from './agents.tools.schemas.ts';

/**
 * MCP servers over HTTP: connect one (headers stored encrypted, secrets referenced by name),
 * list its tools from the real server, turn it off and on, remove it; what agents resolve
 * from it; stdio only where the operator enabled it.
 */

let app: TestApp;
let fake: FakeMcpServer;
let owner: SignedInClient;
let ws: string;

const TOKEN = 'mcp-canary-token-5c2e8f1a';
const url = (path = '') => `/api/workspaces/${ws}/mcp-servers${path}`;
type Problem = { code: string };
type ToolList = { data: Array<{ name: string; agentToolName: string; description: string; inputSchema: object }> };
const ctx = () => ({ workspaceId: ws, userId: owner.userId, runId: 'run_1', signal: new AbortController().signal });

async function rows(query: ReturnType<typeof sql>) {
  return app.db.system(async (tx: Database) => {
    const res = (await tx.execute(query)) as unknown as { rows: Array<Record<string, unknown>> };
    return res.rows;
  });
}

async function addServer(body: Record<string, unknown>) {
  return owner.post<McpServerView & Problem>(url(), body);
}

beforeAll(async () => {
  fake = await startFakeMcpServer();
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1' } });
  owner = await signUp(app);
  ws = (await owner.post<{ id: string }>('/api/workspaces', { name: 'MCP' })).body.id;
  await owner.put(`/api/workspaces/${ws}/secrets/MCP_TOKEN`, { value: TOKEN, allowedHosts: ['127.0.0.1'] });
});

afterAll(async () => {
  await app?.close();
  await fake?.close();
});

describe('happy', () => {
  it('connects a server, lists its tools with the secret header, and agents call them', async () => {
    const created = await addServer({
      name: 'fake',
      url: fake.url,
      headers: { Authorization: 'Bearer {{secret.MCP_TOKEN}}', 'X-Team': 'blue' },
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      name: 'fake',
      transport: 'http',
      url: fake.url,
      headerNames: ['Authorization', 'X-Team'],
      enabled: true,
    });
    expect(created.text).not.toContain('blue');

    const list = await owner.get<{ data: McpServerView[] }>(url());
    expect(list.body.data.map((s) => s.name)).toEqual(['fake']);
    expect((await owner.get<McpServerView>(url(`/${created.body.id}`))).body.name).toBe('fake');

    const tools = await owner.get<ToolList>(url(`/${created.body.id}/tools`));
    expect(tools.status).toBe(200);
    expect(tools.body.data.map((t) => t.name).sort()).toEqual(['add', 'big', 'echo', 'fail', 'hang', 'whoami']);
    expect(tools.body.data.find((t) => t.name === 'add')).toMatchObject({
      agentToolName: 'fake__add',
      description: 'Adds two numbers',
    });
    expect(fake.requests.at(-1)?.authorization).toBe(`Bearer ${TOKEN}`);
    expect(fake.requests.at(-1)?.['x-team']).toBe('blue');

    const resolved = await app.modules.agents.tools.tools.resolve(ws, [
      ToolDef.parse({ type: 'mcp', server: 'fake', allow: ['echo', 'whoami'] }),
    ]);
    expect(resolved.map((t) => t.name).sort()).toEqual(['fake__echo', 'fake__whoami']);
    const echo = resolved.find((t) => t.name === 'fake__echo');
    expect(await echo?.execute({ text: 'hi' }, ctx())).toEqual({ ok: true, content: 'hi' });
    const whoami = resolved.find((t) => t.name === 'fake__whoami');
    expect(await whoami?.execute({}, ctx())).toEqual({ ok: true, content: 'authorization: Bearer [secret]' });
  });

  it('a disabled server is refused until enabled again; a removed one is gone', async () => {
    const s = (await addServer({ name: 'toggle', url: fake.url })).body;
    const off = await owner.patch<McpServerView>(url(`/${s.id}`), { enabled: false });
    expect(off.body.enabled).toBe(false);
    const tools = await owner.get<Problem>(url(`/${s.id}/tools`));
    expect(tools.status).toBe(409);
    expect(tools.body.code).toBe('mcp_server_disabled');
    await expect(
      app.modules.agents.tools.tools.resolve(ws, [ToolDef.parse({ type: 'mcp', server: 'toggle' })]),
    ).rejects.toMatchObject({ code: 'mcp_server_disabled' });

    await owner.patch(url(`/${s.id}`), { enabled: true });
    const [echo] = await app.modules.agents.tools.tools.resolve(ws, [
      ToolDef.parse({ type: 'mcp', server: 'toggle', allow: ['echo'] }),
    ]);
    // Turned off after the run resolved its tools: the next call is refused as a result.
    await owner.patch(url(`/${s.id}`), { enabled: false });
    expect(await echo?.execute({ text: 'x' }, ctx())).toMatchObject({
      ok: false,
      error: { code: 'mcp_server_disabled' },
    });

    expect((await owner.delete(url(`/${s.id}`))).status).toBe(204);
    expect((await owner.get(url(`/${s.id}`))).status).toBe(404);
    await expect(
      app.modules.agents.tools.tools.resolve(ws, [ToolDef.parse({ type: 'mcp', server: 'toggle' })]),
    ).rejects.toMatchObject({ code: 'mcp_server_not_found', status: 404 });
    const audit = await rows(
      sql`select action from audit_events where workspace_id = ${ws} and target_id = ${s.id} order by seq`,
    );
    expect(audit.map((r) => r.action)).toEqual([
      'mcp_server.added',
      'mcp_server.updated',
      'mcp_server.updated',
      'mcp_server.updated',
      'mcp_server.removed',
    ]);
  });

  it('headers can be replaced and removed', async () => {
    const s = (await addServer({ name: 'headers', url: fake.url, headers: { 'X-A': '1' } })).body;
    const replaced = await owner.patch<McpServerView>(url(`/${s.id}`), { headers: { 'X-B': '2' } });
    expect(replaced.body.headerNames).toEqual(['X-B']);
    const cleared = await owner.patch<McpServerView>(url(`/${s.id}`), { headers: null });
    expect(cleared.body.headerNames).toEqual([]);
    const [row] = await rows(sql`select headers_ciphertext from agent_mcp_servers where id = ${s.id}`);
    expect(row?.headers_ciphertext).toBeNull();
  });

  it('stdio servers work where the operator enabled them', async () => {
    const enabled = await createTestApp({ config: { BERTH_MCP_STDIO: '1' } });
    try {
      const admin = await signUp(enabled);
      const w = (await admin.post<{ id: string }>('/api/workspaces', { name: 'Stdio' })).body.id;
      const created = await admin.post<McpServerView>(`/api/workspaces/${w}/mcp-servers`, {
        name: 'local',
        command: process.execPath,
        args: ['--import', 'tsx', FAKE_MCP_SERVER_FILE, STDIO_FLAG],
      });
      expect(created.status).toBe(201);
      expect(created.body).toMatchObject({ transport: 'stdio', url: null, command: process.execPath });
      const [add] = await enabled.modules.agents.tools.tools.resolve(w, [
        ToolDef.parse({ type: 'mcp', server: 'local', allow: ['add'] }),
      ]);
      expect(
        await add?.execute(
          { a: 20, b: 22 },
          { workspaceId: w, userId: admin.userId, runId: 'r', signal: new AbortController().signal },
        ),
      ).toEqual({ ok: true, content: '42' });
    } finally {
      await enabled.close();
    }
  });
});

describe('errors', () => {
  it('bad servers are refused with stable codes', async () => {
    const cases: Array<[Record<string, unknown>, number, string]> = [
      [{ name: 'Bad Name', url: fake.url }, 400, 'validation_failed'],
      [{ name: 'neither' }, 400, 'validation_failed'],
      [{ name: 'both', url: fake.url, command: 'node' }, 400, 'validation_failed'],
      [{ name: 'notaurl', url: 'not a url at all' }, 400, 'validation_failed'],
      [{ name: 'creds', url: 'https://user:pw@mcp.example.com/mcp' }, 400, 'validation_failed'],
      [{ name: 'keyed', url: 'https://mcp.example.com/mcp?api_key=sk-123' }, 400, 'credential_in_definition'],
      [{ name: 'signed', url: 'https://mcp.example.com/mcp?X-Amz-Signature=ab' }, 400, 'credential_in_definition'],
      [{ name: 'ftp', url: 'ftp://mcp.example.com/mcp' }, 400, 'egress_denied'],
      [{ name: 'private', url: 'http://10.1.2.3/mcp' }, 400, 'egress_denied'],
      [{ name: 'stdio', command: 'node' }, 403, 'mcp_stdio_disabled'],
      [{ name: 'args', url: fake.url, args: ['x'] }, 400, 'validation_failed'],
      [{ name: 'hdr', url: fake.url, headers: { 'X-A': 'a\nb' } }, 400, 'validation_failed'],
      [{ name: 'fake', url: fake.url }, 409, 'conflict'],
    ];
    for (const [body, status, code] of cases) {
      const res = await addServer(body);
      expect([res.status, res.body.code], JSON.stringify(body)).toEqual([status, code]);
    }
  });

  it('headers naming a missing secret, or one not allowed for the host, are refused when used', async () => {
    const missing = (await addServer({ name: 'missing', url: fake.url, headers: { 'X-K': '{{secret.NOPE}}' } })).body;
    const res = await owner.get<Problem>(url(`/${missing.id}/tools`));
    expect([res.status, res.body.code]).toEqual([404, 'secret_not_found']);
    await owner.put(`/api/workspaces/${ws}/secrets/ELSEWHERE`, { value: 'x-value', allowedHosts: ['api.example.com'] });
    const count = fake.requests.length;
    const wrong = (await addServer({ name: 'wrong', url: fake.url, headers: { 'X-K': '{{secret.ELSEWHERE}}' } })).body;
    const refused = await owner.get<Problem>(url(`/${wrong.id}/tools`));
    expect([refused.status, refused.body.code]).toEqual([400, 'egress_denied']);
    // A secret in a header it was not declared for is never sent either.
    await owner.put(`/api/workspaces/${ws}/secrets/HERE`, { value: 'h-value', allowedHosts: ['127.0.0.1'] });
    const undeclared = (await addServer({ name: 'undeclared', url: fake.url, headers: { 'X-K': '{{secret.HERE}}' } }))
      .body;
    const placed = await owner.get<Problem>(url(`/${undeclared.id}/tools`));
    expect([placed.status, placed.body.code]).toEqual([400, 'secret_placement_not_allowed']);
    expect(fake.requests.length).toBe(count);
  });

  it('an unreachable server answers 502 upstream_error; unknown ids 404', async () => {
    const gone = (await addServer({ name: 'gone', url: 'http://127.0.0.1:9/mcp' })).body;
    const res = await owner.get<Problem>(url(`/${gone.id}/tools`));
    expect([res.status, res.body.code]).toEqual([502, 'upstream_error']);
    expect((await owner.get(url('/mcp_01JD6F3Q4N8ZK5R2W7XH9YB0C1'))).status).toBe(404);
    expect((await owner.patch(url('/nope'), { enabled: true })).status).toBe(404);
  });
});

describe('security', () => {
  it('header values are vault ciphertext, never in responses, logs or the audit log', async () => {
    const stored = await rows(sql`select headers_ciphertext from agent_mcp_servers where workspace_id = ${ws}`);
    for (const r of stored) {
      if (r.headers_ciphertext)
        expect(Buffer.from(r.headers_ciphertext as Uint8Array).includes(Buffer.from('blue'))).toBe(false);
    }
    const audit = await rows(sql`select diff from audit_events where workspace_id = ${ws}`);
    expect(JSON.stringify(audit)).not.toContain(TOKEN);
    expect(JSON.stringify(audit)).not.toContain('blue');
    expect(app.logs.join('\n')).not.toContain(TOKEN);
  });
});
