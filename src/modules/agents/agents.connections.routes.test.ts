import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOAuthServer, startFakeOAuthServer } from '../../../test/fakes/oauth-server.ts';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { addMember } from '../../../test/helpers/connections.ts';
import { type GatewayWorkspace, gatewayWorkspace } from '../../../test/helpers/gateway.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { memoryCredits } from '../gateway/index.ts';
import type { ConnectionView, OAuthProviderView } from '../vault/index.ts';
import type { RunView, StepView } from './agents.runs.schemas.ts';

/**
 * Agents acting through OAuth connections: `{{connection.NAME}}` in a custom HTTP tool's
 * headers sends the access token of the run's user (their own connection, or one shared with
 * the workspace) to its provider's API hosts and nowhere else. Against a real authorization
 * server (oidc-provider) and a loopback server standing for the provider's API, which asks
 * the authorization server whose token it got (its userinfo endpoint).
 */

const REDIRECT = 'http://berth.test/api/oauth/callback';

let app: TestApp;
let oauth: FakeOAuthServer;
let fake: FakeOpenAi;
let gw: GatewayWorkspace;
let member: SignedInClient;
let carol: SignedInClient;
let api: Server;
let apiPort: number;
const credits = memoryCredits();
/** Every request the provider's API got: path, Host header and bearer token. */
const received: Array<{ path: string; host: string; token: string }> = [];
/** Every run these tests made: their steps and events must never carry a token. */
const runIds: string[] = [];
const connectionIds = new Map<string, string>();

const ws = () => `/api/workspaces/${gw.workspaceId}`;

/** The provider's API: `/whoami` answers whose token it got (asked of the authorization server), `/echo` shows the request's headers back. */
async function apiHandler(req: IncomingMessage, res: ServerResponse) {
  const path = (req.url ?? '').split('?')[0] ?? '';
  const auth = String(req.headers.authorization ?? '');
  const token = auth.replace(/^Bearer /, '');
  received.push({ path, host: String(req.headers.host ?? ''), token });
  res.setHeader('content-type', 'application/json');
  if (path === '/echo') {
    res.end(JSON.stringify({ authorization: auth }));
    return;
  }
  const me = await fetch(`${oauth.issuer}/me`, { headers: { authorization: `Bearer ${token}` } });
  const body = (await me.json().catch(() => ({}))) as { sub?: string };
  res.statusCode = me.status === 200 ? 200 : 401;
  res.end(JSON.stringify(me.status === 200 ? { sub: body.sub } : { error: 'invalid_token' }));
}

/** Connects `client`'s account `account` at the provider as the connection `gh`. */
async function connect(client: SignedInClient, account: string): Promise<ConnectionView> {
  const start = await client.post<{ authorizationUrl: string }>(`${ws()}/connections/acme/authorize`, { name: 'gh' });
  expect(start.status, start.text).toBe(200);
  const callback = await oauth.authorize(start.body.authorizationUrl, { account });
  const res = await client.get<ConnectionView>(`${callback.pathname}${callback.search}`);
  expect(res.status, res.text).toBe(200);
  connectionIds.set(client.userId, res.body.id);
  return res.body;
}

const httpTool = (name: string, url: string, headers: Record<string, string>) => ({
  type: 'http',
  name,
  description: `calls ${name}`,
  parameters: { type: 'object', properties: {} },
  request: { method: 'GET', url, headers },
});

async function importAgent(client: SignedInClient, body: Record<string, unknown>) {
  return client.post(`${ws()}/agents/import?publish=true`, {
    model: 'gpt-4o-mini',
    instructions: 'You act on the user’s code host account.',
    ...body,
  });
}

/** A sync run of `agent` by `client` in which the model calls `tool` once, then answers. */
async function runTool(client: SignedInClient, agent: string, tool: string): Promise<{ run: RunView; step: StepView }> {
  fake.next({ kind: 'reply', toolCalls: [{ name: tool, arguments: '{}' }] }, { kind: 'reply', content: 'done' });
  const res = await client.post<RunView>(`${ws()}/runs`, { agent, input: 'who am I?' });
  expect(res.status, res.text).toBe(200);
  runIds.push(res.body.id);
  return { run: res.body, step: await toolStep(client, res.body.id) };
}

async function toolStep(client: SignedInClient, runId: string): Promise<StepView> {
  const steps = await client.get<{ data: StepView[] }>(`${ws()}/runs/${runId}/steps`);
  expect(steps.status).toBe(200);
  const step = steps.body.data.find((s) => s.kind === 'tool');
  if (!step) throw new Error('the run made no tool call');
  return step;
}

const resultOf = (step: StepView) => (step.content as { result: string }).result;

beforeAll(async () => {
  oauth = await startFakeOAuthServer({ redirectUri: REDIRECT });
  fake = await startFakeOpenAi();
  api = createServer((req, res) => {
    apiHandler(req, res).catch(() => {
      res.statusCode = 500;
      res.end();
    });
  });
  await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
  apiPort = (api.address() as AddressInfo).port;
  app = await createTestApp({
    // Loopback stands for the provider's API: allow-listed, so plain http may carry the token there.
    config: { BERTH_EGRESS_ALLOW: '127.0.0.1,localhost', BERTH_GATEWAY_RETRIES: 0 },
    credits,
  });
  gw = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o-mini'] }] });
  credits.grant(gw.workspaceId, 1_000_000_000);
  member = await signUp(app);
  carol = await signUp(app);
  await addMember(app, gw.workspaceId, gw.owner.userId, member, 'member');
  await addMember(app, gw.workspaceId, gw.owner.userId, carol, 'member');
  const provider = await gw.owner.post<OAuthProviderView>(`${ws()}/oauth-providers`, {
    name: 'acme',
    authorizationUrl: oauth.authorizationUrl,
    tokenUrl: oauth.tokenUrl,
    revocationUrl: oauth.revocationUrl,
    clientId: oauth.clientId,
    clientSecret: oauth.clientSecret,
    scopes: ['openid', 'offline_access', 'email'],
    apiHosts: ['127.0.0.1'],
  });
  expect(provider.status, provider.text).toBe(201);
  expect(provider.body.apiHosts).toEqual(['127.0.0.1']);
  await connect(gw.owner, 'alice');
  await connect(member, 'bob');
  const agent = await importAgent(gw.owner, {
    name: 'coder',
    connections: ['gh'],
    tools: [
      httpTool('whoami', `http://127.0.0.1:${apiPort}/whoami`, { authorization: 'Bearer {{connection.gh}}' }),
      httpTool('echo', `http://127.0.0.1:${apiPort}/echo`, { authorization: 'Bearer {{connection.gh}}' }),
      // The same API server under a name the provider does not declare.
      httpTool('elsewhere', `http://localhost:${apiPort}/whoami`, { authorization: 'Bearer {{connection.gh}}' }),
    ],
  });
  expect(agent.status, agent.text).toBe(201);
});

afterEach(() => {
  oauth.failTokenEndpoint = null;
});

afterAll(async () => {
  await app?.close();
  await fake?.close();
  await oauth?.close();
  await new Promise<void>((resolve) => (api ? api.close(() => resolve()) : resolve()));
});

describe('happy', () => {
  it("sends the run's user's own token to the provider's API host", async () => {
    const before = received.length;
    const { run, step } = await runTool(gw.owner, 'coder', 'whoami');
    expect(run).toMatchObject({ status: 'completed', output: 'done' });
    expect(step).toMatchObject({ status: 'completed', toolName: 'whoami' });
    expect(JSON.parse(resultOf(step))).toEqual({ sub: 'alice' });
    expect(received.slice(before)).toMatchObject([{ path: '/whoami', host: `127.0.0.1:${apiPort}` }]);
  });

  it("another member's run uses their own connection, not the owner's", async () => {
    const before = received.length;
    const { step } = await runTool(member, 'coder', 'whoami');
    expect(JSON.parse(resultOf(step))).toEqual({ sub: 'bob' });
    const tokens = received.map((r) => r.token);
    expect(new Set(tokens.slice(0, before)).has(tokens[before] ?? '')).toBe(false);
  });

  it('a connection shared with the workspace serves members without their own', async () => {
    const def = { connections: ['gh'] };
    // Carol has no connection named gh, and none is shared yet.
    await expect(app.modules.agents.tools.checkConnections(gw.workspaceId, carol.userId, def)).rejects.toMatchObject({
      code: 'connection_required',
      extra: { details: [{ path: '/connections/0' }] },
    });
    const share = await gw.owner.patch(`${ws()}/connections/${connectionIds.get(gw.owner.userId)}`, { shared: true });
    expect(share.status, share.text).toBe(200);
    try {
      await app.modules.agents.tools.checkConnections(gw.workspaceId, carol.userId, def);
      const { step } = await runTool(carol, 'coder', 'whoami');
      expect(JSON.parse(resultOf(step))).toEqual({ sub: 'alice' });
      // A member with a connection of their own still acts as themselves.
      const own = await runTool(member, 'coder', 'whoami');
      expect(JSON.parse(resultOf(own.step))).toEqual({ sub: 'bob' });
    } finally {
      const unshare = await gw.owner.patch(`${ws()}/connections/${connectionIds.get(gw.owner.userId)}`, {
        shared: false,
      });
      expect(unshare.status, unshare.text).toBe(200);
    }
  });

  it('a token the API shows back reaches neither the model nor the run record', async () => {
    const before = received.length;
    const { step } = await runTool(gw.owner, 'coder', 'echo');
    const token = received[before]?.token ?? '';
    expect(token.length).toBeGreaterThan(10);
    expect(step.status).toBe('completed');
    expect(resultOf(step)).toBe(JSON.stringify({ authorization: 'Bearer [secret]' }));
    const sentToModel = JSON.stringify(fake.received.map((r) => r.body));
    expect(sentToModel).toContain('Bearer [secret]');
    expect(sentToModel).not.toContain(token);
  });
});

describe('security', () => {
  it("never sends a token to a host its provider's API hosts do not list", async () => {
    const before = received.length;
    const { run, step } = await runTool(gw.owner, 'coder', 'elsewhere');
    expect(run.status).toBe('completed');
    expect(step).toMatchObject({ status: 'failed', errorCode: 'connection_host_not_allowed' });
    expect(resultOf(step)).toContain('localhost');
    expect(received.length).toBe(before);

    // Once an admin declares the host, the same tool reaches it.
    const patch = await gw.owner.patch<OAuthProviderView>(`${ws()}/oauth-providers/acme`, {
      apiHosts: ['127.0.0.1', 'localhost'],
    });
    expect(patch.status, patch.text).toBe(200);
    try {
      const again = await runTool(gw.owner, 'coder', 'elsewhere');
      expect(JSON.parse(resultOf(again.step))).toEqual({ sub: 'alice' });
      expect(received.at(-1)?.host).toBe(`localhost:${apiPort}`);
    } finally {
      await gw.owner.patch(`${ws()}/oauth-providers/acme`, { apiHosts: ['127.0.0.1'] });
    }
    // Members may not change where tokens go.
    const byMember = await member.patch(`${ws()}/oauth-providers/acme`, { apiHosts: ['evil.example.com'] });
    expect(byMember.status).toBe(403);
  });

  it('refuses definitions that misuse connections, with a stable code and a path', async () => {
    const header = { authorization: 'Bearer {{connection.gh}}' };
    const undeclared = await importAgent(gw.owner, {
      name: 'undeclared',
      tools: [httpTool('t', `http://127.0.0.1:${apiPort}/whoami`, header)],
    });
    expect(undeclared.status).toBe(400);
    expect(undeclared.body).toMatchObject({
      code: 'connection_not_declared',
      errors: [{ path: '/tools/0/request/headers/authorization' }],
    });
    const inUrl = await importAgent(gw.owner, {
      name: 'in-url',
      connections: ['gh'],
      tools: [httpTool('t', `http://127.0.0.1:${apiPort}/whoami?t={{connection.gh}}`, {})],
    });
    expect(inUrl.status).toBe(400);
    expect(inUrl.body).toMatchObject({
      code: 'connection_placement_not_allowed',
      errors: [{ path: '/tools/0/request/url' }],
    });
    const plainHttp = await importAgent(gw.owner, {
      name: 'plain-http',
      connections: ['gh'],
      tools: [httpTool('t', 'http://api.example.com/whoami', header)],
    });
    expect(plainHttp.status).toBe(400);
    expect(plainHttp.body).toMatchObject({
      code: 'connection_placement_not_allowed',
      errors: [{ path: '/tools/0/request/url' }],
    });
  });
});

describe('errors', () => {
  it('a connection broken mid-run gives the model connection_unavailable, and the next run connection_required', async () => {
    fake.next({ kind: 'reply', toolCalls: [{ name: 'whoami', arguments: '{}' }] }, { kind: 'reply', content: 'sorry' });
    const res = await member.post<RunView>(`${ws()}/runs`, { agent: 'coder', input: 'who?', background: true });
    expect(res.status, res.text).toBe(202);
    runIds.push(res.body.id);
    // Before the worker runs it, the token expires and the provider refuses to renew it.
    const connectionId = connectionIds.get(member.userId) ?? '';
    const expired = new Date(app.clock.now().getTime() - 1000).toISOString();
    await app.db.system((tx) =>
      tx.execute(sql`update oauth_connections set expires_at = ${expired} where id = ${connectionId}`),
    );
    oauth.failTokenEndpoint = 'invalid_grant';
    const before = received.length;
    await app.jobs.drain();
    const done = await member.get<RunView>(`${ws()}/runs/${res.body.id}`);
    expect(done.body).toMatchObject({ status: 'completed', output: 'sorry', lastError: null });
    const step = await toolStep(member, res.body.id);
    expect(step).toMatchObject({ status: 'failed', errorCode: 'connection_unavailable' });
    expect(resultOf(step)).toContain('The connection gh cannot be used: it stopped working');
    expect(received.length).toBe(before);
    await expect(
      app.modules.agents.tools.checkConnections(gw.workspaceId, member.userId, { connections: ['gh'] }),
    ).rejects.toMatchObject({
      code: 'connection_required',
      status: 409,
      extra: { details: [{ path: '/connections/0' }] },
    });
  });

  it('a connection revoked mid-run gives the model connection_unavailable, and the next run connection_required', async () => {
    fake.next({ kind: 'reply', toolCalls: [{ name: 'whoami', arguments: '{}' }] }, { kind: 'reply', content: 'gone' });
    const res = await gw.owner.post<RunView>(`${ws()}/runs`, { agent: 'coder', input: 'who?', background: true });
    expect(res.status, res.text).toBe(202);
    runIds.push(res.body.id);
    const del = await gw.owner.delete(`${ws()}/connections/${connectionIds.get(gw.owner.userId)}`);
    expect(del.status, del.text).toBe(200);
    const before = received.length;
    await app.jobs.drain();
    const done = await gw.owner.get<RunView>(`${ws()}/runs/${res.body.id}`);
    expect(done.body).toMatchObject({ status: 'completed', output: 'gone' });
    const step = await toolStep(gw.owner, res.body.id);
    expect(step).toMatchObject({ status: 'failed', errorCode: 'connection_unavailable' });
    expect(resultOf(step)).toContain('The connection gh cannot be used: the user has no such connection');
    expect(received.length).toBe(before);
    await expect(
      app.modules.agents.tools.checkConnections(gw.workspaceId, gw.owner.userId, { connections: ['gh'] }),
    ).rejects.toMatchObject({ code: 'connection_required', status: 409 });
    // Over the API: the run is refused before it is created, naming the connection.
    const listed = await gw.owner.get<{ data: RunView[] }>(`${ws()}/runs?limit=200`);
    const refused = await gw.owner.post(`${ws()}/runs`, { agent: 'coder', input: 'who now?' });
    expect(refused.status).toBe(409);
    expect(refused.body).toMatchObject({ code: 'connection_required' });
    expect(String(refused.body.detail)).toContain('gh');
    const after = await gw.owner.get<{ data: RunView[] }>(`${ws()}/runs?limit=200`);
    expect(after.body.data.length).toBe(listed.body.data.length);
  });

  it('no token ever reached the logs, the steps or the events', async () => {
    const tokens = [...new Set(received.map((r) => r.token))].filter((t) => t.length > 0);
    expect(tokens.length).toBeGreaterThanOrEqual(2);
    const logs = app.logs.join('\n');
    const records: string[] = [];
    for (const id of runIds) {
      records.push((await gw.owner.get(`${ws()}/runs/${id}/steps`)).text);
      records.push((await gw.owner.get(`${ws()}/runs/${id}/events`)).text);
    }
    const runs = records.join('\n');
    for (const token of tokens) {
      expect(logs).not.toContain(token);
      expect(runs).not.toContain(token);
    }
    // The run records were read (not empty answers).
    expect(runs).toContain('"toolName":"whoami"');
  });
});
