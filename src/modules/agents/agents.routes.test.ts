import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient, type TestResponse } from '../../../test/helpers/client.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import type { KeyWithSecret } from '../keys/index.ts';
import type { AgentDefinition, AgentSummary, AgentView, VersionSummary, VersionView } from './agents.schemas.ts';

/**
 * Agent definitions over HTTP: create, read, edit the draft, publish immutable versions,
 * export and import (exactly round-tripping), archive; bad input with stable codes;
 * tenancy, key scopes, audit, and definitions (content) kept out of logs and audit diffs.
 */

let app: TestApp;
let owner: SignedInClient;
let outsider: SignedInClient;
let ws: string;
let otherWs: string;

const CANARY = 'canary-instructions-7f3a9c';
const agentsUrl = (w = ws) => `/api/workspaces/${w}/agents`;
type Problem = { code: string; errors?: Array<{ path: string; message: string }> };

/** A complete definition, every field written out in the format's order (as export writes it). */
function fullDefinition(name: string): AgentDefinition {
  return {
    format: 'berth.agent/v1',
    name,
    description: 'Answers support questions',
    model: 'gpt-4o-mini',
    instructions: `You are a support agent. ${CANARY}`,
    params: { temperature: 0.2, top_p: 0.9, max_output_tokens: 800 },
    limits: { max_steps: 8, max_tokens: 50_000, timeout_seconds: 120 },
    tools: [
      {
        type: 'builtin',
        name: 'http_request',
        allowed_hosts: ['api.example.com', '*.example.org'],
        requires_approval: false,
      },
      { type: 'builtin', name: 'current_time', requires_approval: false },
      {
        type: 'http',
        name: 'lookup_order',
        description: 'Finds an order',
        // Keys deliberately not in alphabetical order: the author's order survives.
        parameters: {
          type: 'object',
          properties: { order_id: { type: 'string' }, customer: { type: 'string' }, amount: { type: 'integer' } },
          required: ['order_id'],
        },
        request: {
          method: 'GET',
          url: 'https://api.example.com/orders/{{order_id}}',
          headers: { Authorization: 'Bearer {{secret.ORDERS_TOKEN}}' },
        },
        limits: { timeout_ms: 5000, max_response_bytes: 100_000 },
        requires_approval: true,
      },
      { type: 'mcp', server: 'tickets', allow: ['create_ticket'], requires_approval: false },
    ],
    tool_approval: 'per_tool',
    knowledge_bases: ['handbook'],
    connections: ['github'],
    metadata: { team: 'support', zeta: '1', alpha: '2' },
  };
}

async function create(body: unknown, client: TestClient = owner, w = ws) {
  return client.post<AgentView & Problem>(agentsUrl(w), body);
}

async function created(name: string, extra: Record<string, unknown> = {}): Promise<AgentView> {
  const res = await create({ name, model: 'gpt-4o-mini', ...extra });
  if (res.status !== 201) throw new Error(`create agent: ${res.status} ${res.text}`);
  return res.body;
}

async function keyClient(scopes: string[]): Promise<TestClient> {
  const res = await owner.post<KeyWithSecret>(`/api/workspaces/${ws}/keys`, { name: 'agents key', scopes });
  if (res.status !== 201) throw new Error(`key: ${res.status} ${res.text}`);
  const c = new TestClient(app, { origin: null });
  c.headers = { authorization: `Bearer ${res.body.secret}` };
  return c;
}

async function auditOf(agentId: string): Promise<Array<{ action: string; diff: unknown }>> {
  const res = await app.db.system((tx) =>
    tx.execute(sql`select action, diff from audit_events where target_id = ${agentId} order by seq`),
  );
  return (res as unknown as { rows: Array<{ action: string; diff: unknown }> }).rows;
}

const expectCode = (res: TestResponse<Problem>, status: number, code: string) => {
  expect({ status: res.status, code: res.body.code }).toEqual({ status, code });
};

beforeAll(async () => {
  app = await createTestApp();
  owner = await signUp(app);
  outsider = await signUp(app);
  ws = (await owner.post<{ id: string }>('/api/workspaces', { name: 'Agents' })).body.id;
  otherWs = (await outsider.post<{ id: string }>('/api/workspaces', { name: 'Elsewhere' })).body.id;
});
afterAll(async () => {
  await app?.close();
});

describe('happy', () => {
  it('creates an agent with every default written out, and reads it by id and by name', async () => {
    const res = await create({ name: 'Helper', model: 'gpt-4o-mini' });
    expect(res.status).toBe(201);
    expect(res.body.id).toMatch(/^agt_/);
    expect(res.body.draft).toEqual({
      format: 'berth.agent/v1',
      name: 'Helper',
      description: '',
      model: 'gpt-4o-mini',
      instructions: '',
      params: {},
      limits: { max_steps: 10, max_tokens: 200_000, timeout_seconds: 300 },
      tools: [],
      tool_approval: 'per_tool',
      knowledge_bases: [],
      connections: [],
      metadata: {},
    });
    expect(res.body).toMatchObject({ latestVersion: null, unpublishedChanges: true, archivedAt: null });
    const byId = await owner.get<AgentView>(`${agentsUrl()}/${res.body.id}`);
    expect(byId.body).toEqual(res.body);
    // Names resolve case-insensitively, like their uniqueness.
    const byName = await owner.get<AgentView>(`${agentsUrl()}/helper`);
    expect(byName.body.id).toBe(res.body.id);
    expect(await auditOf(res.body.id)).toEqual([{ action: 'agent.created', diff: { name: 'Helper' } }]);
  });

  it('publishes immutable versions: publishing again changes nothing before it', async () => {
    const a = await created('versioned', { instructions: 'first' });
    const v1 = await owner.post<VersionView>(`${agentsUrl()}/${a.id}/publish`);
    expect(v1.status).toBe(201);
    expect(v1.body).toMatchObject({ agentId: a.id, version: 1, createdBy: owner.userId });
    expect(v1.body.definition.instructions).toBe('first');

    const same = await owner.post<Problem>(`${agentsUrl()}/${a.id}/publish`);
    expectCode(same, 409, 'agent_unchanged');

    const edited = await owner.put<AgentView>(`${agentsUrl()}/${a.id}`, { ...a.draft, instructions: 'second' });
    expect(edited.status).toBe(200);
    expect(edited.body).toMatchObject({ unpublishedChanges: true, latestVersion: { version: 1 } });
    const v2 = await owner.post<VersionView>(`${agentsUrl()}/versioned/publish`);
    expect(v2.body.version).toBe(2);
    expect(v2.body.definition.instructions).toBe('second');

    // Version 1 is what it was.
    const again = await owner.get<VersionView>(`${agentsUrl()}/${a.id}/versions/1`);
    expect(again.body).toEqual(v1.body);
    const list = await owner.get<{ data: VersionSummary[]; nextCursor: number | null }>(
      `${agentsUrl()}/${a.id}/versions`,
    );
    expect(list.body.data.map((v) => v.version)).toEqual([2, 1]);
    const got = await owner.get<AgentView>(`${agentsUrl()}/${a.id}`);
    expect(got.body).toMatchObject({ unpublishedChanges: false, latestVersion: { version: 2 } });
    expect(got.body.latestVersion?.definition.instructions).toBe('second');

    // Paged versions.
    const page1 = await owner.get<{ data: VersionSummary[]; nextCursor: number | null }>(
      `${agentsUrl()}/${a.id}/versions?limit=1`,
    );
    expect(page1.body).toMatchObject({ data: [{ version: 2 }], nextCursor: 2 });
    const page2 = await owner.get<{ data: VersionSummary[]; nextCursor: number | null }>(
      `${agentsUrl()}/${a.id}/versions?limit=1&cursor=2`,
    );
    expect(page2.body).toMatchObject({ data: [{ version: 1 }], nextCursor: null });

    expect((await auditOf(a.id)).map((e) => e.action)).toEqual([
      'agent.created',
      'agent.published',
      'agent.updated',
      'agent.published',
    ]);
  });

  it('the database refuses to change a published version', async () => {
    const a = await created('frozen');
    await owner.post(`${agentsUrl()}/${a.id}/publish`);
    await expect(
      app.db.system((tx) =>
        tx.execute(sql`update agent_versions set definition = '{"name":"tampered"}' where agent_id = ${a.id}`),
      ),
    ).rejects.toThrow();
    const v = await owner.get<VersionView>(`${agentsUrl()}/${a.id}/versions/1`);
    expect(v.body.definition.name).toBe('frozen');
  });

  it('export(import(x)) is x, byte for byte, for the draft and for versions', async () => {
    const x = fullDefinition('roundtrip');
    const imported = await owner.post<AgentView>(`${agentsUrl()}/import`, x);
    expect(imported.status).toBe(201);
    expect(imported.body).toMatchObject({ latestVersion: null, unpublishedChanges: true });
    const exported = await owner.get(`${agentsUrl()}/${imported.body.id}/export`);
    expect(exported.status).toBe(200);
    expect(exported.text).toBe(JSON.stringify(x));

    // Imported and published at once: version 1 exports the same.
    const y = fullDefinition('roundtrip-published');
    const both = await owner.post<AgentView>(`${agentsUrl()}/import?publish=true`, y);
    expect(both.body).toMatchObject({ latestVersion: { version: 1 }, unpublishedChanges: false });
    const v1 = await owner.get(`${agentsUrl()}/roundtrip-published/export?version=1`);
    expect(v1.text).toBe(JSON.stringify(y));
    expect(await auditOf(both.body.id)).toEqual([
      { action: 'agent.imported', diff: { name: 'roundtrip-published', version: 1 } },
    ]);

    // A minimal definition exports with its defaults; that export round-trips too.
    await created('minimal');
    const first = await owner.get<AgentDefinition>(`${agentsUrl()}/minimal/export`);
    await owner.delete(`${agentsUrl()}/minimal`);
    await owner.post(`${agentsUrl()}/import`, first.body);
    const second = await owner.get(`${agentsUrl()}/minimal/export`);
    expect(second.text).toBe(first.text);
  });

  it('lists agents newest first, a page at a time, archived ones only when asked', async () => {
    const w = (await owner.post<{ id: string }>('/api/workspaces', { name: 'Listing' })).body.id;
    const ids: string[] = [];
    for (const name of ['one', 'two', 'three']) {
      const res = await create({ name, model: 'm', description: `the ${name}` }, owner, w);
      ids.push(res.body.id);
    }
    await owner.post(`${agentsUrl(w)}/two/publish`);
    const page1 = await owner.get<{ data: AgentSummary[]; nextCursor: string | null }>(`${agentsUrl(w)}?limit=2`);
    expect(page1.body.data.map((a) => a.name)).toEqual(['three', 'two']);
    expect(page1.body.data[1]).toMatchObject({
      description: 'the two',
      model: 'm',
      latestVersion: 1,
      unpublishedChanges: false,
    });
    expect(page1.body.data[0]).toMatchObject({ latestVersion: null, unpublishedChanges: true });
    const page2 = await owner.get<{ data: AgentSummary[]; nextCursor: string | null }>(
      `${agentsUrl(w)}?limit=2&cursor=${page1.body.nextCursor}`,
    );
    expect(page2.body).toMatchObject({ data: [{ name: 'one' }], nextCursor: null });

    expect((await owner.delete(`${agentsUrl(w)}/one`)).status).toBe(204);
    const live = await owner.get<{ data: AgentSummary[] }>(agentsUrl(w));
    expect(live.body.data.map((a) => a.name)).toEqual(['three', 'two']);
    const all = await owner.get<{ data: AgentSummary[] }>(`${agentsUrl(w)}?archived=true`);
    expect(all.body.data.map((a) => a.name)).toEqual(['three', 'two', 'one']);
    expect(all.body.data[2]?.archivedAt).not.toBeNull();
  });

  it('archives: the agent stays readable by id, is no longer changeable, and its name is free', async () => {
    const a = await created('retiring');
    await owner.post(`${agentsUrl()}/${a.id}/publish`);
    expect((await owner.delete(`${agentsUrl()}/retiring`)).status).toBe(204);
    expectCode(await owner.get<Problem>(`${agentsUrl()}/retiring`), 404, 'not_found');
    const kept = await owner.get<AgentView>(`${agentsUrl()}/${a.id}`);
    expect(kept.body.archivedAt).not.toBeNull();
    expect((await owner.get(`${agentsUrl()}/${a.id}/versions/1`)).status).toBe(200);
    expect((await owner.get(`${agentsUrl()}/${a.id}/export?version=1`)).status).toBe(200);
    expectCode(await owner.put<Problem>(`${agentsUrl()}/${a.id}`, a.draft), 409, 'agent_archived');
    expectCode(await owner.post<Problem>(`${agentsUrl()}/${a.id}/publish`), 409, 'agent_archived');
    expectCode(await owner.delete<Problem>(`${agentsUrl()}/${a.id}`), 409, 'agent_archived');
    const reused = await create({ name: 'retiring', model: 'm' });
    expect(reused.status).toBe(201);
    expect(reused.body.id).not.toBe(a.id);
    expect((await auditOf(a.id)).map((e) => e.action)).toEqual(['agent.created', 'agent.published', 'agent.archived']);
  });

  it('renames through the draft, refusing a name another live agent has', async () => {
    const a = await created('old-name');
    await created('Taken');
    expectCode(
      await owner.put<Problem>(`${agentsUrl()}/${a.id}`, { ...a.draft, name: 'taken' }),
      409,
      'agent_name_taken',
    );
    const renamed = await owner.put<AgentView>(`${agentsUrl()}/${a.id}`, { ...a.draft, name: 'new-name' });
    expect(renamed.body.name).toBe('new-name');
    expect((await owner.get<AgentView>(`${agentsUrl()}/new-name`)).body.id).toBe(a.id);
    expect((await auditOf(a.id)).at(-1)).toEqual({
      action: 'agent.updated',
      diff: { name: { from: 'old-name', to: 'new-name' } },
    });
  });
});

describe('errors', () => {
  const base = { name: 'bad', model: 'gpt-4o-mini' };

  it('refuses unknown tool types and built-in names (validation_failed, naming the field)', async () => {
    const type = await create({ ...base, tools: [{ type: 'shell', name: 'rm' }] });
    expectCode(type, 400, 'validation_failed');
    expect(type.body.errors?.[0]?.path).toMatch(/^\/tools\/0/);
    expectCode(await create({ ...base, tools: [{ type: 'builtin', name: 'teleport' }] }), 400, 'validation_failed');
    expectCode(
      await create({ ...base, tools: [{ type: 'builtin', name: 'calculator', allowed_hosts: ['a.example'] }] }),
      400,
      'validation_failed',
    );
    expectCode(await create({ ...base, surprise: true }), 400, 'validation_failed');
  });

  it('refuses custom HTTP tool parameters that are not a usable JSON Schema object (invalid_tool_schema)', async () => {
    const tool = (parameters: unknown) => ({
      type: 'http',
      name: 't',
      description: 'd',
      parameters,
      request: { method: 'GET', url: 'https://api.example.com/x' },
    });
    for (const parameters of [
      { type: 'object', properties: { a: { type: 'nope' } } },
      { type: 'object', required: 'a' },
      { type: 'object', properties: { a: { $ref: '#/definitions/missing' } } },
      { type: 'string' },
      {},
    ]) {
      const res = await create({ ...base, tools: [tool(parameters)] });
      expectCode(res, 400, 'invalid_tool_schema');
      expect(res.body.errors?.[0]?.path).toBe('/tools/0/parameters');
    }
    // A valid one passes.
    const ok = await create({
      ...base,
      name: 'schema-ok',
      tools: [tool({ type: 'object', properties: { a: { type: 'string', format: 'email', examples: ['x'] } } })],
    });
    expect(ok.status).toBe(201);
  });

  it('refuses two tools with one name (duplicate_tool_name)', async () => {
    const http = {
      type: 'http',
      name: 'calculator',
      description: 'd',
      parameters: { type: 'object' },
      request: { method: 'POST', url: 'https://api.example.com/x' },
    };
    const res = await create({ ...base, tools: [{ type: 'builtin', name: 'calculator' }, http] });
    expectCode(res, 400, 'duplicate_tool_name');
    expect(res.body.errors?.[0]?.path).toBe('/tools/1');
    expectCode(
      await create({
        ...base,
        tools: [
          { type: 'mcp', server: 's' },
          { type: 'mcp', server: 's', allow: ['x'] },
        ],
      }),
      400,
      'duplicate_tool_name',
    );
  });

  it('refuses limits out of range, naming the field', async () => {
    for (const [limits, path] of [
      [{ max_steps: 0 }, '/limits/max_steps'],
      [{ max_steps: 101 }, '/limits/max_steps'],
      [{ timeout_seconds: 0 }, '/limits/timeout_seconds'],
      [{ timeout_seconds: 3601 }, '/limits/timeout_seconds'],
      [{ max_tokens: 0 }, '/limits/max_tokens'],
      [{ max_steps: 2.5 }, '/limits/max_steps'],
    ] as const) {
      const res = await create({ ...base, limits });
      expectCode(res, 400, 'validation_failed');
      expect(res.body.errors?.map((e) => e.path)).toContain(path);
    }
    expect(
      (await create({ ...base, name: 'edges', limits: { max_steps: 100, timeout_seconds: 3600, max_tokens: 1 } }))
        .status,
    ).toBe(201);
  });

  it('refuses an unknown format, on create and on import', async () => {
    expectCode(await create({ ...base, format: 'berth.agent/v2' }), 400, 'unsupported_agent_format');
    expectCode(
      await owner.post<Problem>(`${agentsUrl()}/import`, { ...fullDefinition('future'), format: 'other/v1' }),
      400,
      'unsupported_agent_format',
    );
  });

  it('refuses names that collide (case-insensitively) or look like ids', async () => {
    await created('Unique');
    expectCode(await create({ ...base, name: 'unique' }), 409, 'agent_name_taken');
    expectCode(await owner.post<Problem>(`${agentsUrl()}/import`, fullDefinition('UNIQUE')), 409, 'agent_name_taken');
    expectCode(await create({ ...base, name: 'agt_0123' }), 400, 'validation_failed');
    expectCode(await create({ ...base, name: 'has space' }), 400, 'validation_failed');
  });

  it('concurrent publishes and creates: one wins, the other gets its 409, nothing is duplicated', async () => {
    const a = await created('raced');
    const publishes = await Promise.all([1, 2].map(() => owner.post<Problem>(`${agentsUrl()}/${a.id}/publish`)));
    expect(publishes.map((r) => r.status).sort()).toEqual([201, 409]);
    expect(publishes.find((r) => r.status === 409)?.body.code).toBe('agent_unchanged');
    const versions = await owner.get<{ data: VersionSummary[] }>(`${agentsUrl()}/${a.id}/versions`);
    expect(versions.body.data.map((v) => v.version)).toEqual([1]);

    const creates = await Promise.all([1, 2].map(() => create({ name: 'twin', model: 'm' })));
    expect(creates.map((r) => r.status).sort()).toEqual([201, 409]);
    expect(creates.find((r) => r.status === 409)?.body.code).toBe('agent_name_taken');
  });

  it('answers 404 for unknown agents and versions, 400 for a malformed version', async () => {
    const a = await created('no-versions');
    expectCode(await owner.get<Problem>(`${agentsUrl()}/agt_00000000000000000000000000`), 404, 'not_found');
    expectCode(await owner.get<Problem>(`${agentsUrl()}/${a.id}/versions/1`), 404, 'not_found');
    expectCode(await owner.get<Problem>(`${agentsUrl()}/${a.id}/export?version=3`), 404, 'not_found');
    expectCode(await owner.get<Problem>(`${agentsUrl()}/${a.id}/versions/first`), 400, 'validation_failed');
    expectCode(await owner.post<Problem>(`${agentsUrl()}/nobody/publish`), 404, 'not_found');
  });
});

describe('security', () => {
  it("another workspace's agent answers 404, by id and by name, to every route", async () => {
    const a = await created('private-agent');
    const theirs = `/api/workspaces/${otherWs}/agents`;
    // Through the outsider's own workspace: the id is not theirs.
    for (const res of [
      await outsider.get<Problem>(`${theirs}/${a.id}`),
      await outsider.get<Problem>(`${theirs}/private-agent`),
      await outsider.put<Problem>(`${theirs}/${a.id}`, a.draft),
      await outsider.post<Problem>(`${theirs}/${a.id}/publish`),
      await outsider.get<Problem>(`${theirs}/${a.id}/export`),
      await outsider.get<Problem>(`${theirs}/${a.id}/versions`),
      await outsider.delete<Problem>(`${theirs}/${a.id}`),
    ]) {
      expectCode(res, 404, 'not_found');
    }
    // Through ours: not a member.
    expectCode(await outsider.get<Problem>(`${agentsUrl()}/${a.id}`), 404, 'not_found');
    expect((await owner.get<AgentView>(`${agentsUrl()}/${a.id}`)).body.archivedAt).toBeNull();
  });

  it('a key without agents:write reads but is refused every change (403 insufficient_scope)', async () => {
    const a = await created('scoped');
    const reader = await keyClient(['agents:read']);
    expect((await reader.get(agentsUrl())).status).toBe(200);
    expect((await reader.get(`${agentsUrl()}/${a.id}`)).status).toBe(200);
    expect((await reader.get(`${agentsUrl()}/${a.id}/export`)).status).toBe(200);
    for (const res of [
      await reader.post<Problem>(agentsUrl(), { name: 'by-key', model: 'm' }),
      await reader.post<Problem>(`${agentsUrl()}/import`, fullDefinition('by-key')),
      await reader.put<Problem>(`${agentsUrl()}/${a.id}`, a.draft),
      await reader.post<Problem>(`${agentsUrl()}/${a.id}/publish`),
      await reader.delete<Problem>(`${agentsUrl()}/${a.id}`),
    ]) {
      expectCode(res, 403, 'insufficient_scope');
    }
    const runner = await keyClient(['agents:run']);
    expectCode(await runner.get<Problem>(agentsUrl()), 403, 'insufficient_scope');

    const writer = await keyClient(['agents:read', 'agents:write']);
    const made = await writer.post<AgentView>(agentsUrl(), { name: 'by-key', model: 'm' });
    expect(made.status).toBe(201);
    const published = await writer.post<VersionView>(`${agentsUrl()}/by-key/publish`);
    expect(published.body.createdBy).toBe(owner.userId);
  });

  it('keeps instructions and tool templates out of logs and audit diffs', async () => {
    const a = await owner.post<AgentView>(`${agentsUrl()}/import?publish=true`, fullDefinition('secretive'));
    await owner.put(`${agentsUrl()}/${a.body.id}`, { ...fullDefinition('secretive'), instructions: `v2 ${CANARY}` });
    await owner.post(`${agentsUrl()}/${a.body.id}/publish`);
    await owner.delete(`${agentsUrl()}/${a.body.id}`);
    const diffs = JSON.stringify(await auditOf(a.body.id));
    expect(diffs).not.toContain(CANARY);
    expect(diffs).not.toContain('secret.ORDERS_TOKEN');
    expect(app.logs.join('\n')).not.toContain(CANARY);
    expect(app.logs.join('\n')).not.toContain('ORDERS_TOKEN');
  });
});
