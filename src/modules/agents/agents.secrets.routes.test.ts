import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import type { Database } from '../../platform/db/db.ts';
import type { SecretView } from './agents.secrets.schemas.ts';
import { ToolDef } from './agents.tools.schemas.ts';

/**
 * Workspace secrets over HTTP (set, list, delete; values go in and never come out) and
 * their one use: filled into a custom HTTP tool's request, which the upstream receives,
 * while the tool's result, the logs, the audit log and the database never hold the value.
 */

let app: TestApp;
let owner: SignedInClient;
let member: SignedInClient;
let ws: string;
let upstream: Server;
let origin: string;
const received: IncomingMessage['headers'][] = [];

const VALUE = 'sk-canary-secret-4b7e91d2a0';
const url = (name = '') => `/api/workspaces/${ws}/secrets${name ? `/${name}` : ''}`;
const ctx = () => ({ workspaceId: ws, userId: owner.userId, runId: 'run_1', signal: new AbortController().signal });

beforeAll(async () => {
  upstream = createServer((req, res) => {
    received.push(req.headers);
    res.writeHead(200, { 'content-type': 'application/json' });
    // A careless service echoing the credential it was sent.
    res.end(JSON.stringify({ ok: true, you_sent: req.headers.authorization ?? null }));
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  origin = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1' } });
  owner = await signUp(app);
  member = await signUp(app);
  ws = (await owner.post<{ id: string }>('/api/workspaces', { name: 'Secrets' })).body.id;
  const scope = { workspaceId: ws, actor: { type: 'user' as const, userId: owner.userId }, role: 'owner' as const };
  const { token } = await app.modules.workspaces.service.invite({ scope, email: member.email, role: 'member' });
  await app.modules.workspaces.service.acceptInvitation({ token, userId: member.userId });
});

afterAll(async () => {
  await app?.close();
  await new Promise<void>((r) => upstream.close(() => r()));
});

async function rows(query: ReturnType<typeof sql>) {
  return app.db.system(async (tx: Database) => {
    const res = (await tx.execute(query)) as unknown as { rows: Array<Record<string, unknown>> };
    return res.rows;
  });
}

describe('happy', () => {
  it('sets, lists, replaces and deletes a secret; the value never comes back', async () => {
    const set = await owner.put<SecretView>(url('ORDERS_TOKEN'), { value: VALUE, allowedHosts: ['127.0.0.1'] });
    expect(set.status).toBe(200);
    expect(set.body).toMatchObject({ name: 'ORDERS_TOKEN', allowedHosts: ['127.0.0.1'], createdBy: owner.userId });
    expect(set.text).not.toContain(VALUE);

    const list = await owner.get<{ data: SecretView[] }>(url());
    expect(list.body.data.map((s) => s.name)).toEqual(['ORDERS_TOKEN']);
    expect(list.text).not.toContain(VALUE);
    expect(list.body.data[0]?.allowedHeaders).toEqual(['authorization']);
    expect(Object.keys(list.body.data[0] ?? {}).sort()).toEqual([
      'allowedHeaders',
      'allowedHosts',
      'createdAt',
      'createdBy',
      'name',
      'updatedAt',
    ]);

    const replaced = await owner.put<SecretView>(url('ORDERS_TOKEN'), {
      value: `${VALUE}-v2`,
      allowedHosts: ['127.0.0.1', 'api.example.com'],
    });
    expect(replaced.status).toBe(200);
    expect(replaced.body.allowedHosts).toEqual(['127.0.0.1', 'api.example.com']);
    expect((await owner.get<{ data: SecretView[] }>(url())).body.data).toHaveLength(1);
    const values = await app.modules.agents.tools.secrets.source(ws, ['ORDERS_TOKEN']);
    expect(values.get('ORDERS_TOKEN')?.value).toBe(`${VALUE}-v2`);

    expect((await owner.delete(url('ORDERS_TOKEN'))).status).toBe(204);
    expect((await owner.get<{ data: SecretView[] }>(url())).body.data).toEqual([]);
    const actions = await rows(
      sql`select action, diff from audit_events where workspace_id = ${ws} and target_type = 'secret' order by seq`,
    );
    expect(actions.map((r) => r.action)).toEqual(['secret.set', 'secret.set', 'secret.deleted']);
    expect(JSON.stringify(actions)).not.toContain(VALUE);
  });

  it('a custom HTTP tool sends the secret upstream; the result and logs never hold it', async () => {
    await owner.put(url('API_TOKEN'), { value: VALUE, allowedHosts: ['127.0.0.1'] });
    const [tool] = await app.modules.agents.tools.tools.resolve(ws, [
      ToolDef.parse({
        type: 'http',
        name: 'orders',
        description: 'Lists orders',
        parameters: { type: 'object', properties: { q: { type: 'string' } } },
        request: {
          method: 'GET',
          url: `${origin}/orders?q={{q}}`,
          headers: { Authorization: 'Bearer {{secret.API_TOKEN}}' },
        },
      }),
    ]);
    const res = await tool?.execute({ q: 'open' }, ctx());
    expect(received.at(-1)?.authorization).toBe(`Bearer ${VALUE}`);
    expect(res).toEqual({ ok: true, content: JSON.stringify({ ok: true, you_sent: 'Bearer [secret]' }) });
    expect(app.logs.join('\n')).not.toContain(VALUE);
  });
});

describe('errors', () => {
  it('bad names, hosts and values are 400 validation_failed', async () => {
    for (const [name, body] of [
      ['1BAD', { value: 'v', allowedHosts: ['a.example.com'] }],
      ['bad-name', { value: 'v', allowedHosts: ['a.example.com'] }],
      ['GOOD', { value: 'v', allowedHosts: [] }],
      ['GOOD', { value: 'v', allowedHosts: ['https://a.example.com'] }],
      ['GOOD', { value: 'line\nbreak', allowedHosts: ['a.example.com'] }],
      ['GOOD', { value: '', allowedHosts: ['a.example.com'] }],
      ['GOOD', { allowedHosts: ['a.example.com'] }],
      ['GOOD', { value: 'v', allowedHosts: ['a.example.com'], extra: 1 }],
    ] as const) {
      const res = await owner.put<{ code: string }>(url(name), body);
      expect(res.status, `${name} ${JSON.stringify(body)}`).toBe(400);
      expect(res.body.code).toBe('validation_failed');
    }
  });

  it('deleting a secret that does not exist is 404', async () => {
    const res = await owner.delete<{ code: string }>(url('NEVER_SET'));
    expect(res.status).toBe(404);
    expect(res.body.code).toBe('not_found');
  });
});

describe('security', () => {
  it('members can neither read nor set secrets', async () => {
    expect((await member.get(url())).status).toBe(403);
    expect((await member.put(url('MINE'), { value: 'v', allowedHosts: ['a.example.com'] })).status).toBe(403);
  });

  it('the value is vault ciphertext bound to its row: moved to another secret it does not decrypt', async () => {
    await owner.put(url('BOUND_A'), { value: VALUE, allowedHosts: ['127.0.0.1'] });
    await owner.put(url('BOUND_B'), { value: 'another-value', allowedHosts: ['127.0.0.1'] });
    const stored = await rows(sql`select name, value_ciphertext from agent_secrets where workspace_id = ${ws}`);
    for (const r of stored) {
      expect(Buffer.from(r.value_ciphertext as Uint8Array).includes(Buffer.from(VALUE))).toBe(false);
    }
    await rows(
      sql`update agent_secrets set value_ciphertext = (select value_ciphertext from agent_secrets where workspace_id = ${ws} and name = 'BOUND_A') where workspace_id = ${ws} and name = 'BOUND_B'`,
    );
    await expect(app.modules.agents.tools.secrets.source(ws, ['BOUND_B'])).rejects.toThrow();
    const [tool] = await app.modules.agents.tools.tools.resolve(ws, [
      ToolDef.parse({
        type: 'http',
        name: 'moved',
        description: 'x',
        parameters: { type: 'object' },
        request: { method: 'GET', url: `${origin}/x`, headers: { 'X-Key': '{{secret.BOUND_B}}' } },
      }),
    ]);
    const before = received.length;
    expect(await tool?.execute({}, ctx())).toEqual({
      ok: false,
      error: { code: 'tool_failed', message: 'The tool failed.' },
    });
    expect(received.length).toBe(before);
  });

  it("another workspace's tools never see this workspace's secrets", async () => {
    await owner.put(url('SHARED_NAME'), { value: VALUE, allowedHosts: ['127.0.0.1'] });
    const other = (await owner.post<{ id: string }>('/api/workspaces', { name: 'Other' })).body.id;
    const [tool] = await app.modules.agents.tools.tools.resolve(other, [
      ToolDef.parse({
        type: 'http',
        name: 'steal',
        description: 'x',
        parameters: { type: 'object' },
        request: { method: 'GET', url: `${origin}/x`, headers: { 'X-Key': '{{secret.SHARED_NAME}}' } },
      }),
    ]);
    const res = await tool?.execute({}, { ...ctx(), workspaceId: other });
    expect(res).toMatchObject({ ok: false, error: { code: 'secret_not_found' } });
  });

  it('a member cannot place a secret where it could read it back; literal credentials are refused', async () => {
    await owner.put(url('WRITE_TOKEN'), {
      value: VALUE,
      allowedHosts: ['127.0.0.1', 'api.example.com'],
      allowedHeaders: ['Authorization', 'X-Key'],
    });
    const agents = `/api/workspaces/${ws}/agents`;
    const tool = (request: Record<string, unknown>) => ({
      name: 'exfil',
      model: 'm',
      tools: [{ type: 'http', name: 't', description: 'x', parameters: { type: 'object' }, request }],
    });
    const cases: Array<[Record<string, unknown>, string]> = [
      [
        { method: 'POST', url: 'https://api.example.com/notes?text={{secret.WRITE_TOKEN}}' },
        'secret_placement_not_allowed',
      ],
      [
        { method: 'POST', url: 'https://api.example.com/notes', body: { text: 'k={{secret.WRITE_TOKEN}}' } },
        'secret_placement_not_allowed',
      ],
      [
        { method: 'POST', url: 'https://api.example.com/notes', headers: { 'X-Note': '{{secret.WRITE_TOKEN}}' } },
        'secret_placement_not_allowed',
      ],
      [
        { method: 'GET', url: 'http://api.example.com/x', headers: { Authorization: 'Bearer {{secret.WRITE_TOKEN}}' } },
        'secret_placement_not_allowed',
      ],
      [{ method: 'GET', url: 'https://{{h}}/x', headers: { Authorization: 'Bearer {{secret.WRITE_TOKEN}}' } }, 'ok'],
      [
        { method: 'GET', url: 'https://api.example.com/x', headers: { Authorization: 'Bearer sk-live-1234' } },
        'credential_in_definition',
      ],
      [
        { method: 'GET', url: 'https://api.example.com/x', headers: { 'X-Api-Key': 'abc123' } },
        'credential_in_definition',
      ],
      [{ method: 'GET', url: 'https://api.example.com/x?api_key=abc123' }, 'credential_in_definition'],
      [{ method: 'GET', url: 'https://user:pass@api.example.com/x' }, 'credential_in_definition'],
    ];
    for (const [request, code] of cases) {
      const res = await member.post<{ code: string }>(agents, tool(request));
      expect([res.status, res.body.code], JSON.stringify(request)).toEqual(
        code === 'ok' ? [201, undefined] : [400, code],
      );
    }
    // Allowed: a declared header, over https or to a host the operator allow-listed for plain http.
    for (const [name, u] of [
      ['ok_https', 'https://api.example.com/x?page={{p}}'],
      ['ok_local', `${origin}/x`],
    ] as const) {
      const res = await member.post(agents, {
        ...tool({ method: 'GET', url: u, headers: { 'x-key': '{{secret.WRITE_TOKEN}}' } }),
        name,
      });
      expect(res.status, u).toBe(201);
    }
    // The same refusals come back on update.
    const updated = await member.put<{ code: string }>(`${agents}/ok_https`, {
      ...tool({ method: 'GET', url: 'https://api.example.com/x', headers: { Cookie: '{{secret.WRITE_TOKEN}}' } }),
      name: 'ok_https',
    });
    expect([updated.status, updated.body.code]).toEqual([400, 'secret_placement_not_allowed']);
  });

  it('the secret value never reaches the logs', () => {
    expect(app.logs.join('\n')).not.toContain(VALUE);
  });
});
