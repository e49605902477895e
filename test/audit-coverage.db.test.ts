import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAuditSigningKey } from '../src/modules/audit/index.ts';
import { seedConnection } from '../src/modules/vault/vault.connections.matrix.ts';
import { type FakeOpenAi, startFakeOpenAi } from './fakes/openai-upstream.ts';
import { type FakeStripe, startFakeStripe } from './fakes/stripe.ts';
import { createTestApp, type TestApp } from './helpers/app.ts';
import { TestClient, type TestResponse } from './helpers/client.ts';
import { logIn, makeOperator, type SignedInClient, signUp, testEmail, testPassword } from './helpers/identity.ts';

/**
 * Invariant 4, derived from the route table: every state-changing route (POST, PUT, PATCH,
 * DELETE) the app registers either writes exactly the audit events its fixture names (one,
 * except first-run setup) when it succeeds, or declares `config: { audit: { exempt } }`
 * with a reason. A new route with neither fails here, so none slips through.
 *
 * The routes come from the audit module's onRoute hook (every route registered after it,
 * which is all of them), not from a list kept here.
 */

type Vars = Record<string, string>;
type Fixture = {
  /** The audit actions the call writes (sorted comparison). */
  actions: string[];
  /** Prepares what the call needs; its own events are not counted. */
  prepare?: () => Promise<Vars>;
  call: (v: Vars) => Promise<TestResponse>;
  /** A call of the same route that fails inside its use case (after the checks at the door): it must write nothing. */
  fail?: (v: Vars) => Promise<TestResponse>;
};

let app: TestApp;
let stripe: FakeStripe;
let llm: FakeOpenAi;
let operator: SignedInClient;
/** What first-run setup wrote (filled by the route walk). */
let setupEvents: Written[] = [];
const clients = new Map<string, SignedInClient>();

async function user(label: string): Promise<SignedInClient> {
  const c = await signUp(app, { email: testEmail(label) });
  clients.set(c.userId, c);
  return c;
}

function client(v: Vars, key: string): SignedInClient {
  const c = clients.get(v[key] ?? '');
  if (!c) throw new Error(`no client for ${key}`);
  return c;
}

async function workspace(): Promise<Vars> {
  const owner = await user('owner');
  const res = await owner.post<{ id: string }>('/api/workspaces', { name: 'Covered' });
  return { owner: owner.userId, ws: res.body.id };
}

async function withMember(role: 'admin' | 'member' = 'member'): Promise<Vars> {
  const v = await workspace();
  const member = await user('member');
  const scope = {
    workspaceId: v.ws ?? '',
    actor: { type: 'user' as const, userId: v.owner ?? '' },
    role: 'owner' as const,
  };
  const { token } = await app.modules.workspaces.service.invite({ scope, email: member.email, role });
  await app.modules.workspaces.service.acceptInvitation({ token, userId: member.userId });
  return { ...v, member: member.userId };
}

async function invitation(): Promise<Vars> {
  const v = await workspace();
  const email = testEmail('invitee');
  const scope = {
    workspaceId: v.ws ?? '',
    actor: { type: 'user' as const, userId: v.owner ?? '' },
    role: 'owner' as const,
  };
  const { invitation: inv, token } = await app.modules.workspaces.service.invite({ scope, email, role: 'viewer' });
  return { ...v, email, invitationId: inv.id, token };
}

async function key(): Promise<Vars> {
  const v = await workspace();
  const res = await client(v, 'owner').post<{ key: { id: string } }>(`/api/workspaces/${v.ws}/keys`, {
    name: 'ci',
    scopes: ['models:read'],
  });
  if (res.status !== 201) throw new Error(`key fixture: ${res.status} ${res.text}`);
  return { ...v, keyId: res.body.key.id };
}

const ws = (v: Vars) => `/api/workspaces/${v.ws}`;

/** A provider with an explicit model list: nothing is called upstream. */
const providerBody = {
  name: 'covered',
  adapter: 'openai-compatible',
  baseUrl: 'https://llm.example.com/v1',
  models: ['m1'],
};

async function provider(): Promise<Vars> {
  const v = await workspace();
  const res = await client(v, 'owner').post<{ id: string }>(`${ws(v)}/providers`, providerBody);
  if (res.status !== 201) throw new Error(`provider fixture: ${res.status} ${res.text}`);
  return { ...v, providerId: res.body.id };
}

/** An OAuth provider (no revocation endpoint: disconnecting calls nothing) of a new workspace. */
const oauthProviderBody = {
  name: 'covered',
  authorizationUrl: 'https://auth.example.com/authorize',
  tokenUrl: 'https://auth.example.com/token',
  clientId: 'client',
  clientSecret: 'secret',
};

async function oauthProvider(): Promise<Vars> {
  const v = await workspace();
  const res = await client(v, 'owner').post<{ id: string }>(`${ws(v)}/oauth-providers`, oauthProviderBody);
  if (res.status !== 201) throw new Error(`oauth provider fixture: ${res.status} ${res.text}`);
  return { ...v, oauthProviderId: res.body.id };
}

/** The owner's connection, shared with the workspace. */
async function connection(): Promise<Vars> {
  const v = await oauthProvider();
  const connectionId = await seedConnection(app, {
    workspaceId: v.ws ?? '',
    userId: v.owner ?? '',
    providerId: v.oauthProviderId ?? '',
    shared: true,
  });
  return { ...v, connectionId };
}

async function price(): Promise<Vars> {
  const v = await workspace();
  const res = await client(v, 'owner').put(`${ws(v)}/model-prices`, {
    model: 'm1',
    inputMicrosPerMtok: 1,
    outputMicrosPerMtok: 2,
  });
  if (res.status !== 200) throw new Error(`price fixture: ${res.status} ${res.text}`);
  return v;
}

/** A sub-processor starting `days` from now (30 is the shortest notice). */
function subprocessorBody(days: number) {
  return {
    name: 'Covered Mail',
    purpose: 'Delivers email',
    dataCategories: ['account'],
    region: 'EU',
    effectiveAt: new Date(app.clock.now().getTime() + days * 86_400_000).toISOString(),
  };
}

async function subprocessor(): Promise<Vars> {
  const res = await operator.post<{ id: string }>('/api/operator/subprocessors', subprocessorBody(31));
  if (res.status !== 201) throw new Error(`sub-processor fixture: ${res.status} ${res.text}`);
  return { subprocessorId: res.body.id };
}

/** A breach the operator became aware of `minutesAgo` minutes ago (negative: in the future, refused). */
function breachBody(minutesAgo: number) {
  return {
    description: 'Covered incident',
    dataCategories: ['account'],
    awareAt: new Date(app.clock.now().getTime() - minutesAgo * 60_000).toISOString(),
  };
}

/** An agent of a new workspace (its draft only, nothing published). */
async function agent(): Promise<Vars> {
  const v = await workspace();
  const res = await client(v, 'owner').post<{ id: string }>(`${ws(v)}/agents`, { name: 'covered', model: 'm1' });
  if (res.status !== 201) throw new Error(`agent fixture: ${res.status} ${res.text}`);
  return { ...v, agentId: res.body.id };
}

/** A run of a new workspace's agent waiting for a tool call's approval (the fake upstream asks for the call). */
async function waitingRun(): Promise<Vars> {
  const v = await workspace();
  const owner = client(v, 'owner');
  const provider = await owner.post(`${ws(v)}/providers`, {
    name: 'fake',
    adapter: 'openai-compatible',
    baseUrl: llm.baseUrl,
    models: ['gpt-4o-mini'],
  });
  if (provider.status !== 201) throw new Error(`run fixture provider: ${provider.status} ${provider.text}`);
  const agent = await owner.post(`${ws(v)}/agents/import?publish=true`, {
    name: 'careful',
    model: 'gpt-4o-mini',
    tools: [{ type: 'builtin', name: 'calculator', requires_approval: true }],
  });
  if (agent.status !== 201) throw new Error(`run fixture agent: ${agent.status} ${agent.text}`);
  llm.next({ kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"1+1"}' }] });
  const run = await owner.post<{ id: string; status: string }>(`${ws(v)}/runs`, { agent: 'careful', input: 'add' });
  if (run.body.status !== 'requires_action') throw new Error(`run fixture: ${run.status} ${run.text}`);
  return { ...v, runId: run.body.id };
}

/** A secret of a new workspace (agent tools). */
async function secret(): Promise<Vars> {
  const v = await workspace();
  const res = await client(v, 'owner').put(`${ws(v)}/secrets/COVERED`, {
    value: 'v',
    allowedHosts: ['api.example.com'],
  });
  if (res.status !== 200) throw new Error(`secret fixture: ${res.status} ${res.text}`);
  return v;
}

/** An MCP server of a new workspace (nothing is contacted). */
async function mcpServer(): Promise<Vars> {
  const v = await workspace();
  const res = await client(v, 'owner').post<{ id: string }>(`${ws(v)}/mcp-servers`, {
    name: 'covered',
    url: 'https://mcp.example.com/mcp',
  });
  if (res.status !== 201) throw new Error(`mcp server fixture: ${res.status} ${res.text}`);
  return { ...v, serverId: res.body.id };
}

/** A knowledge base of a new workspace. */
async function knowledgeBase(): Promise<Vars> {
  const v = await workspace();
  const res = await client(v, 'owner').post<{ id: string }>(`${ws(v)}/knowledge`, { name: 'covered' });
  if (res.status !== 201) throw new Error(`knowledge base fixture: ${res.status} ${res.text}`);
  return { ...v, kbId: res.body.id };
}

/** A multipart upload of one small text file to the fixture's knowledge base. */
function uploadDocument(v: Vars, text: string) {
  const boundary = '----coveredboundary';
  const body =
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="covered.txt"\r\n` +
    `Content-Type: text/plain\r\n\r\n${text}\r\n--${boundary}--\r\n`;
  return client(v, 'owner').request('POST', `${ws(v)}/knowledge/${v.kbId}/documents`, body, {
    'content-type': `multipart/form-data; boundary=${boundary}`,
  });
}

/** A document (queued: no worker runs here) in a knowledge base of a new workspace. */
async function knowledgeDocument(): Promise<Vars> {
  const v = await knowledgeBase();
  const res = await uploadDocument(v, 'covered text');
  const documentId = (res.body as { data?: Array<{ document: { id: string } }> }).data?.[0]?.document.id;
  if (res.status !== 202 || !documentId) throw new Error(`document fixture: ${res.status} ${res.text}`);
  return { ...v, documentId };
}

const FIXTURES: Record<string, Fixture> = {
  'POST /api/setup': {
    // First-run setup does three things, each recorded where it belongs: the platform chain
    // records the setup, the new workspace's chain its creation and its first API key.
    actions: ['key.created', 'platform.setup', 'workspace.created'],
    prepare: async () => ({ token: (await app.modules.setup.service.setupHint('http://berth.test'))?.token ?? '' }),
    fail: (v) =>
      new TestClient(app).post('/api/setup', {
        token: v.token,
        email: 'first-operator@example.test',
        password: 'short',
        workspaceName: 'Operators',
      }),
    call: (v) =>
      new TestClient(app).post('/api/setup', {
        token: v.token,
        email: 'first-operator@example.test',
        password: 'first operator passphrase',
        workspaceName: 'Operators',
      }),
  },
  'POST /api/workspaces': {
    actions: ['workspace.created'],
    prepare: async () => ({ owner: (await user('creator')).userId }),
    call: (v) => client(v, 'owner').post('/api/workspaces', { name: 'New one' }),
  },
  'PATCH /api/workspaces/:workspaceId': {
    actions: ['workspace.renamed'],
    prepare: workspace,
    call: (v) => client(v, 'owner').patch(ws(v), { name: 'Renamed' }),
  },
  'DELETE /api/workspaces/:workspaceId': {
    actions: ['workspace.deleted'],
    prepare: workspace,
    fail: (v) => client(v, 'owner').delete(ws(v), { confirmName: 'Not the name' }),
    call: (v) => client(v, 'owner').delete(ws(v), { confirmName: 'Covered' }),
  },
  'PUT /api/workspaces/:workspaceId/security': {
    actions: ['workspace.security_changed'],
    prepare: workspace,
    call: (v) => client(v, 'owner').put(`${ws(v)}/security`, { requireMfa: false }),
  },
  'PATCH /api/workspaces/:workspaceId/members/:userId': {
    actions: ['member.role_changed'],
    prepare: () => withMember(),
    fail: (v) => client(v, 'owner').patch(`${ws(v)}/members/${v.owner}`, { role: 'admin' }),
    call: (v) => client(v, 'owner').patch(`${ws(v)}/members/${v.member}`, { role: 'admin' }),
  },
  'DELETE /api/workspaces/:workspaceId/members/:userId': {
    actions: ['member.removed'],
    prepare: () => withMember(),
    call: (v) => client(v, 'owner').delete(`${ws(v)}/members/${v.member}`),
  },
  'POST /api/workspaces/:workspaceId/leave': {
    actions: ['member.left'],
    prepare: () => withMember(),
    call: (v) => client(v, 'member').post(`${ws(v)}/leave`),
  },
  'POST /api/workspaces/:workspaceId/transfer-ownership': {
    actions: ['ownership.transferred'],
    prepare: () => withMember('admin'),
    fail: (v) => client(v, 'member').post(`${ws(v)}/transfer-ownership`, { userId: v.owner }),
    call: (v) => client(v, 'owner').post(`${ws(v)}/transfer-ownership`, { userId: v.member }),
  },
  'POST /api/workspaces/:workspaceId/invitations': {
    actions: ['invitation.created'],
    prepare: workspace,
    call: (v) => client(v, 'owner').post(`${ws(v)}/invitations`, { email: testEmail('invited'), role: 'member' }),
  },
  'DELETE /api/workspaces/:workspaceId/invitations/:invitationId': {
    actions: ['invitation.revoked'],
    prepare: invitation,
    call: (v) => client(v, 'owner').delete(`${ws(v)}/invitations/${v.invitationId}`),
  },
  'POST /api/invitations/accept': {
    actions: ['member.added'],
    prepare: async () => {
      const v = await invitation();
      const invitee = await signUp(app, { email: v.email });
      clients.set(invitee.userId, invitee);
      return { ...v, invitee: invitee.userId };
    },
    call: (v) => client(v, 'invitee').post('/api/invitations/accept', { token: v.token }),
  },
  'POST /api/invitations/decline': {
    actions: ['invitation.declined'],
    prepare: invitation,
    call: (v) => new TestClient(app).post('/api/invitations/decline', { token: v.token }),
  },
  'POST /api/workspaces/:workspaceId/keys': {
    actions: ['key.created'],
    prepare: workspace,
    call: (v) => client(v, 'owner').post(`${ws(v)}/keys`, { name: 'k', scopes: ['models:read'] }),
  },
  'PATCH /api/workspaces/:workspaceId/keys/:keyId': {
    actions: ['key.updated'],
    prepare: key,
    call: (v) => client(v, 'owner').patch(`${ws(v)}/keys/${v.keyId}`, { name: 'renamed' }),
  },
  'POST /api/workspaces/:workspaceId/keys/:keyId/revoke': {
    actions: ['key.revoked'],
    prepare: key,
    call: (v) => client(v, 'owner').post(`${ws(v)}/keys/${v.keyId}/revoke`),
  },
  'POST /api/workspaces/:workspaceId/keys/:keyId/roll': {
    actions: ['key.rolled'],
    prepare: key,
    call: (v) => client(v, 'owner').post(`${ws(v)}/keys/${v.keyId}/roll`, {}),
  },
  'POST /api/workspaces/:workspaceId/providers': {
    actions: ['provider.added'],
    prepare: workspace,
    call: (v) => client(v, 'owner').post(`${ws(v)}/providers`, providerBody),
  },
  'DELETE /api/workspaces/:workspaceId/providers/:providerId': {
    actions: ['provider.removed'],
    prepare: provider,
    call: (v) => client(v, 'owner').delete(`${ws(v)}/providers/${v.providerId}`),
  },
  'POST /api/workspaces/:workspaceId/oauth-providers': {
    actions: ['oauth_provider.created'],
    prepare: oauthProvider,
    // The name is taken by the fixture's provider.
    fail: (v) => client(v, 'owner').post(`${ws(v)}/oauth-providers`, oauthProviderBody),
    call: (v) => client(v, 'owner').post(`${ws(v)}/oauth-providers`, { ...oauthProviderBody, name: 'other' }),
  },
  'PATCH /api/workspaces/:workspaceId/oauth-providers/:providerId': {
    actions: ['oauth_provider.updated'],
    prepare: oauthProvider,
    fail: (v) => client(v, 'owner').patch(`${ws(v)}/oauth-providers/missing`, { apiHosts: ['api.example.com'] }),
    call: (v) =>
      client(v, 'owner').patch(`${ws(v)}/oauth-providers/${v.oauthProviderId}`, { apiHosts: ['api.example.com'] }),
  },
  'DELETE /api/workspaces/:workspaceId/oauth-providers/:providerId': {
    actions: ['oauth_provider.deleted'],
    prepare: connection,
    call: (v) => client(v, 'owner').delete(`${ws(v)}/oauth-providers/${v.oauthProviderId}`),
  },
  'PATCH /api/workspaces/:workspaceId/connections/:connectionId': {
    actions: ['connection.unshared'],
    prepare: connection,
    call: (v) => client(v, 'owner').patch(`${ws(v)}/connections/${v.connectionId}`, { shared: false }),
  },
  'DELETE /api/workspaces/:workspaceId/connections/:connectionId': {
    actions: ['connection.deleted'],
    prepare: connection,
    fail: (v) => client(v, 'owner').delete(`${ws(v)}/connections/con_00000000000000000000000000`),
    call: (v) => client(v, 'owner').delete(`${ws(v)}/connections/${v.connectionId}`),
  },
  'PUT /api/workspaces/:workspaceId/model-prices': {
    actions: ['model_price.set'],
    prepare: workspace,
    call: (v) =>
      client(v, 'owner').put(`${ws(v)}/model-prices`, { model: 'm1', inputMicrosPerMtok: 1, outputMicrosPerMtok: 2 }),
  },
  'DELETE /api/workspaces/:workspaceId/model-prices/:model': {
    actions: ['model_price.removed'],
    prepare: price,
    call: (v) => client(v, 'owner').delete(`${ws(v)}/model-prices/m1`),
    fail: (v) => client(v, 'owner').delete(`${ws(v)}/model-prices/never-priced`),
  },
  'PUT /api/workspaces/:workspaceId/routes': {
    actions: ['route.set'],
    prepare: workspace,
    call: (v) => client(v, 'owner').put(`${ws(v)}/routes`, { alias: 'fast', targets: [{ model: 'm1' }] }),
  },
  'DELETE /api/workspaces/:workspaceId/routes/:alias': {
    actions: ['route.removed'],
    prepare: async () => {
      const v = await workspace();
      const res = await client(v, 'owner').put(`${ws(v)}/routes`, { alias: 'fast', targets: [{ model: 'm1' }] });
      if (res.status !== 200) throw new Error(`route fixture: ${res.status} ${res.text}`);
      return v;
    },
    call: (v) => client(v, 'owner').delete(`${ws(v)}/routes/fast`),
    fail: (v) => client(v, 'owner').delete(`${ws(v)}/routes/never-defined`),
  },
  'POST /api/operator/workspaces/:id/status': {
    actions: ['workspace.status_changed'],
    prepare: workspace,
    call: (v) => operator.post(`/api/operator/workspaces/${v.ws}/status`, { status: 'suspended' }),
    fail: () => operator.post('/api/operator/workspaces/ws_00000000000000000000000000/status', { status: 'suspended' }),
  },
  'POST /api/workspaces/:workspaceId/billing/checkout': {
    actions: ['billing.checkout_started'],
    prepare: workspace,
    call: (v) => client(v, 'owner').post(`${ws(v)}/billing/checkout`, { amountMicros: 5_000_000 }),
  },
  'PUT /api/workspaces/:workspaceId/billing/auto-topup': {
    actions: ['billing.auto_topup_changed'],
    prepare: workspace,
    // Turning it on needs a saved card (409 payment_method_required); saving it off does not.
    fail: (v) =>
      client(v, 'owner').put(`${ws(v)}/billing/auto-topup`, {
        enabled: true,
        thresholdMicros: 5_000_000,
        amountMicros: 20_000_000,
        monthlyMaxCount: 3,
      }),
    call: (v) =>
      client(v, 'owner').put(`${ws(v)}/billing/auto-topup`, {
        enabled: false,
        thresholdMicros: 5_000_000,
        amountMicros: 20_000_000,
        monthlyMaxCount: 3,
      }),
  },
  'PUT /api/workspaces/:workspaceId/billing/budgets': {
    actions: ['budget.set'],
    prepare: workspace,
    call: (v) => client(v, 'owner').put(`${ws(v)}/billing/budgets`, { period: 'month', limitMicros: 1_000_000 }),
    fail: (v) =>
      client(v, 'owner').put(`${ws(v)}/billing/budgets`, {
        keyId: 'key_00000000000000000000000000',
        period: 'day',
        limitMicros: 1_000_000,
      }),
  },
  'DELETE /api/workspaces/:workspaceId/billing/budgets/:budgetId': {
    actions: ['budget.removed'],
    prepare: async () => {
      const v = await workspace();
      const res = await client(v, 'owner').put<{ id: string }>(`${ws(v)}/billing/budgets`, {
        period: 'day',
        limitMicros: 1_000_000,
      });
      if (res.status !== 200) throw new Error(`budget fixture: ${res.status} ${res.text}`);
      return { ...v, budgetId: res.body.id };
    },
    call: (v) => client(v, 'owner').delete(`${ws(v)}/billing/budgets/${v.budgetId}`),
    fail: (v) => client(v, 'owner').delete(`${ws(v)}/billing/budgets/bud_00000000000000000000000000`),
  },
  'POST /api/operator/billing/grant': {
    actions: ['billing.granted'],
    prepare: async () => {
      const v = await workspace();
      const grant = { workspaceId: v.ws, amountMicros: 5, idempotencyKey: `first-${v.ws}` };
      const res = await operator.post('/api/operator/billing/grant', grant);
      if (res.status !== 201) throw new Error(`grant fixture: ${res.status} ${res.text}`);
      return v;
    },
    call: (v) =>
      operator.post('/api/operator/billing/grant', {
        workspaceId: v.ws,
        amountMicros: 1_000_000,
        idempotencyKey: `grant-${v.ws}`,
      }),
    // The first grant's key with another amount.
    fail: (v) =>
      operator.post('/api/operator/billing/grant', {
        workspaceId: v.ws,
        amountMicros: 6,
        idempotencyKey: `first-${v.ws}`,
      }),
  },
  'POST /api/operator/billing/adjust': {
    actions: ['billing.adjusted'],
    prepare: workspace,
    call: (v) =>
      operator.post('/api/operator/billing/adjust', {
        workspaceId: v.ws,
        deltaMicros: -1_000,
        idempotencyKey: `adjust-${v.ws}`,
        memo: 'correction',
      }),
    fail: (v) =>
      operator.post('/api/operator/billing/adjust', {
        workspaceId: v.ws,
        deltaMicros: -1_000_000_000_000,
        idempotencyKey: `overdraft-${v.ws}`,
        memo: 'more than it has',
      }),
  },
  'PUT /api/operator/workspaces/:id/plan': {
    actions: ['plan.changed'],
    prepare: workspace,
    call: (v) => operator.put(`/api/operator/workspaces/${v.ws}/plan`, { plan: 'scale' }),
    fail: (v) => operator.put(`/api/operator/workspaces/${v.ws}/plan`, { plan: 'no-such-plan' }),
  },
  'POST /api/operator/providers': {
    actions: ['platform_provider.added'],
    call: () => operator.post('/api/operator/providers', { ...providerBody, name: 'platform-covered' }),
  },
  'DELETE /api/operator/providers/:provider': {
    actions: ['platform_provider.removed'],
    prepare: async () => {
      const res = await operator.post<{ id: string }>('/api/operator/providers', {
        ...providerBody,
        name: 'platform-leaving',
      });
      if (res.status !== 201) throw new Error(`platform provider fixture: ${res.status} ${res.text}`);
      return { providerId: res.body.id };
    },
    call: (v) => operator.delete(`/api/operator/providers/${v.providerId}`),
    fail: () => operator.delete('/api/operator/providers/never-added'),
  },
  'POST /api/operator/operators': {
    actions: ['operator.added'],
    prepare: async () => ({ target: (await user('op-to-be')).userId }),
    call: (v) => operator.post('/api/operator/operators', { userId: v.target }),
  },
  'DELETE /api/operator/operators/:userId': {
    actions: ['operator.removed'],
    prepare: async () => {
      const target = await user('op-leaving');
      await makeOperator(app, target.userId);
      return { target: target.userId };
    },
    fail: () => operator.delete('/api/operator/operators/usr_00000000000000000000000000'),
    call: (v) => operator.delete(`/api/operator/operators/${v.target}`),
  },
  'POST /api/operator/users/:id/disable': {
    actions: ['user.disabled'],
    prepare: async () => ({ target: (await user('to-disable')).userId }),
    call: (v) => operator.post(`/api/operator/users/${v.target}/disable`),
  },
  'POST /api/operator/users/:id/enable': {
    actions: ['user.enabled'],
    prepare: async () => {
      const target = await user('to-enable');
      await operator.post(`/api/operator/users/${target.userId}/disable`);
      return { target: target.userId };
    },
    call: (v) => operator.post(`/api/operator/users/${v.target}/enable`),
  },
  'POST /api/workspaces/:workspaceId/privacy/exports': {
    actions: ['privacy.export_requested'],
    prepare: workspace,
    call: (v) => client(v, 'owner').post(`${ws(v)}/privacy/exports`),
  },
  'POST /api/me/privacy/rectification': {
    actions: ['privacy.rectification_requested'],
    prepare: async () => ({ subject: (await user('rectify')).userId }),
    call: (v) => client(v, 'subject').post('/api/me/privacy/rectification', { description: 'My name is wrong.' }),
  },
  'POST /api/operator/privacy/requests/:id': {
    actions: ['privacy.request_completed'],
    prepare: async () => {
      const subject = await user('rectified');
      const res = await subject.post<{ id: string }>('/api/me/privacy/rectification', { description: 'Fix it.' });
      return { requestId: res.body.id };
    },
    fail: (v) => operator.post(`/api/operator/privacy/requests/${v.requestId}`, { status: 'rejected' }),
    call: (v) =>
      operator.post(`/api/operator/privacy/requests/${v.requestId}`, { status: 'completed', outcome: 'Done.' }),
  },
  'POST /api/me/privacy/restriction': {
    actions: ['privacy.restricted'],
    prepare: async () => ({ subject: (await user('restrict')).userId }),
    call: (v) => client(v, 'subject').post('/api/me/privacy/restriction'),
  },
  'DELETE /api/me/privacy/restriction': {
    actions: ['privacy.unrestricted'],
    prepare: async () => {
      const subject = await user('unrestrict');
      await subject.post('/api/me/privacy/restriction');
      return { subject: subject.userId };
    },
    call: (v) => client(v, 'subject').delete('/api/me/privacy/restriction'),
  },
  'POST /api/operator/subprocessors': {
    actions: ['subprocessor.registered'],
    fail: () => operator.post('/api/operator/subprocessors', subprocessorBody(10)),
    call: () => operator.post('/api/operator/subprocessors', subprocessorBody(31)),
  },
  'DELETE /api/operator/subprocessors/:subprocessorId': {
    actions: ['subprocessor.retired'],
    prepare: subprocessor,
    fail: () => operator.delete('/api/operator/subprocessors/sub_00000000000000000000000000'),
    call: (v) => operator.delete(`/api/operator/subprocessors/${v.subprocessorId}`),
  },
  'POST /api/workspaces/:workspaceId/subprocessors/:subprocessorId/objection': {
    actions: ['subprocessor.objected'],
    prepare: async () => ({ ...(await workspace()), ...(await subprocessor()) }),
    fail: (v) => client(v, 'owner').post(`${ws(v)}/subprocessors/sub_00000000000000000000000000/objection`, {}),
    call: (v) =>
      client(v, 'owner').post(`${ws(v)}/subprocessors/${v.subprocessorId}/objection`, { reason: 'EU only.' }),
  },
  'POST /api/operator/privacy/breaches': {
    actions: ['breach.recorded'],
    fail: () => operator.post('/api/operator/privacy/breaches', breachBody(-60)),
    call: () => operator.post('/api/operator/privacy/breaches', breachBody(60)),
  },
  'POST /api/operator/retention/run': {
    // A dry run (deterministic: removes nothing); a removing run dated in the future is refused.
    actions: ['privacy.retention_run'],
    fail: () =>
      operator.post('/api/operator/retention/run', {
        asOf: new Date(app.clock.now().getTime() + 86_400_000).toISOString(),
      }),
    call: () => operator.post('/api/operator/retention/run', { dryRun: true }),
  },
  'PATCH /api/operator/privacy/breaches/:breachId': {
    actions: ['breach.updated'],
    prepare: async () => {
      const res = await operator.post<{ id: string }>('/api/operator/privacy/breaches', breachBody(60));
      if (res.status !== 201) throw new Error(`breach fixture: ${res.status} ${res.text}`);
      return { breachId: res.body.id };
    },
    fail: (v) =>
      operator.patch(`/api/operator/privacy/breaches/${v.breachId}`, {
        authorityNotifiedAt: new Date(app.clock.now().getTime() - 120 * 60_000).toISOString(),
      }),
    call: (v) => operator.patch(`/api/operator/privacy/breaches/${v.breachId}`, { measures: 'Access closed.' }),
  },
  'POST /api/workspaces/:workspaceId/agents': {
    actions: ['agent.created'],
    prepare: workspace,
    fail: (v) => client(v, 'owner').post(`${ws(v)}/agents`, { name: 'covered', model: 'm1', format: 'other/v9' }),
    call: (v) => client(v, 'owner').post(`${ws(v)}/agents`, { name: 'covered', model: 'm1' }),
  },
  'POST /api/workspaces/:workspaceId/agents/import': {
    actions: ['agent.imported'],
    prepare: agent,
    // The name is taken by the fixture's agent.
    fail: (v) => client(v, 'owner').post(`${ws(v)}/agents/import`, { name: 'covered', model: 'm1' }),
    call: (v) => client(v, 'owner').post(`${ws(v)}/agents/import?publish=true`, { name: 'imported', model: 'm1' }),
  },
  'PUT /api/workspaces/:workspaceId/agents/:agentId': {
    actions: ['agent.updated'],
    prepare: agent,
    call: (v) => client(v, 'owner').put(`${ws(v)}/agents/${v.agentId}`, { name: 'covered', model: 'm2' }),
  },
  'POST /api/workspaces/:workspaceId/agents/:agentId/publish': {
    actions: ['agent.published'],
    prepare: agent,
    call: (v) => client(v, 'owner').post(`${ws(v)}/agents/${v.agentId}/publish`),
  },
  'DELETE /api/workspaces/:workspaceId/agents/:agentId': {
    actions: ['agent.archived'],
    prepare: agent,
    fail: (v) => client(v, 'owner').delete(`${ws(v)}/agents/agt_00000000000000000000000000`),
    call: (v) => client(v, 'owner').delete(`${ws(v)}/agents/${v.agentId}`),
  },
  'POST /api/workspaces/:workspaceId/runs/:runId/cancel': {
    actions: ['agent_run.cancelled'],
    prepare: waitingRun,
    fail: (v) => client(v, 'owner').post(`${ws(v)}/runs/run_00000000000000000000000000/cancel`),
    call: (v) => client(v, 'owner').post(`${ws(v)}/runs/${v.runId}/cancel`),
  },
  'POST /api/workspaces/:workspaceId/runs/:runId/approve': {
    actions: ['agent_run.tool_approved'],
    // Approving queues the run for a worker: the test app runs no worker, so nothing else is written.
    prepare: waitingRun,
    fail: (v) => client(v, 'owner').post(`${ws(v)}/runs/${v.runId}/approve`, { tool_call_id: 'call_unknown' }),
    call: (v) => client(v, 'owner').post(`${ws(v)}/runs/${v.runId}/approve`, {}),
  },
  'POST /api/workspaces/:workspaceId/runs/:runId/deny': {
    actions: ['agent_run.tool_denied'],
    prepare: waitingRun,
    fail: (v) => client(v, 'owner').post(`${ws(v)}/runs/${v.runId}/deny`, { tool_call_id: 'call_unknown' }),
    call: (v) => client(v, 'owner').post(`${ws(v)}/runs/${v.runId}/deny`, { reason: 'no' }),
  },
  'POST /api/workspaces/:workspaceId/knowledge': {
    actions: ['knowledge_base.created'],
    prepare: workspace,
    fail: (v) => client(v, 'owner').post(`${ws(v)}/knowledge`, { name: 'covered', textSearch: 'klingon' }),
    call: (v) => client(v, 'owner').post(`${ws(v)}/knowledge`, { name: 'covered', textSearch: 'english' }),
  },
  'DELETE /api/workspaces/:workspaceId/knowledge/:kbId': {
    actions: ['knowledge_base.deleted'],
    prepare: knowledgeDocument,
    fail: (v) => client(v, 'owner').delete(`${ws(v)}/knowledge/kb_00000000000000000000000000`),
    call: (v) => client(v, 'owner').delete(`${ws(v)}/knowledge/${v.kbId}`),
  },
  'POST /api/workspaces/:workspaceId/knowledge/:kbId/documents': {
    actions: ['knowledge_document.uploaded'],
    prepare: knowledgeBase,
    fail: (v) => uploadDocument({ ...v, kbId: 'kb_00000000000000000000000000' }, 'nowhere'),
    call: (v) => uploadDocument(v, 'covered upload'),
  },
  'POST /api/workspaces/:workspaceId/knowledge/:kbId/documents/from-url': {
    actions: ['knowledge_document.uploaded'],
    prepare: knowledgeBase,
    // The fake model provider's model list is the fetched document (egress to 127.0.0.1 is allowed here).
    fail: (v) =>
      client(v, 'owner').post(`${ws(v)}/knowledge/${v.kbId}/documents/from-url`, { url: 'http://169.254.169.254/x' }),
    call: (v) =>
      client(v, 'owner').post(`${ws(v)}/knowledge/${v.kbId}/documents/from-url`, { url: `${llm.baseUrl}/models` }),
  },
  'DELETE /api/workspaces/:workspaceId/knowledge/:kbId/documents/:documentId': {
    actions: ['knowledge_document.deleted'],
    prepare: knowledgeDocument,
    fail: (v) => client(v, 'owner').delete(`${ws(v)}/knowledge/${v.kbId}/documents/kdoc_00000000000000000000000000`),
    call: (v) => client(v, 'owner').delete(`${ws(v)}/knowledge/${v.kbId}/documents/${v.documentId}`),
  },
  'PUT /api/workspaces/:workspaceId/secrets/:name': {
    actions: ['secret.set'],
    prepare: workspace,
    call: (v) => client(v, 'owner').put(`${ws(v)}/secrets/COVERED`, { value: 'v', allowedHosts: ['api.example.com'] }),
  },
  'DELETE /api/workspaces/:workspaceId/secrets/:name': {
    actions: ['secret.deleted'],
    prepare: secret,
    fail: (v) => client(v, 'owner').delete(`${ws(v)}/secrets/NEVER_SET`),
    call: (v) => client(v, 'owner').delete(`${ws(v)}/secrets/COVERED`),
  },
  'POST /api/workspaces/:workspaceId/mcp-servers': {
    actions: ['mcp_server.added'],
    prepare: mcpServer,
    // The name is taken by the fixture's server.
    fail: (v) => client(v, 'owner').post(`${ws(v)}/mcp-servers`, { name: 'covered', url: 'https://mcp.example.com/x' }),
    call: (v) => client(v, 'owner').post(`${ws(v)}/mcp-servers`, { name: 'other', url: 'https://mcp.example.com/x' }),
  },
  'PATCH /api/workspaces/:workspaceId/mcp-servers/:serverId': {
    actions: ['mcp_server.updated'],
    prepare: mcpServer,
    call: (v) => client(v, 'owner').patch(`${ws(v)}/mcp-servers/${v.serverId}`, { enabled: false }),
  },
  'DELETE /api/workspaces/:workspaceId/mcp-servers/:serverId': {
    actions: ['mcp_server.removed'],
    prepare: mcpServer,
    fail: (v) => client(v, 'owner').delete(`${ws(v)}/mcp-servers/mcp_00000000000000000000000000`),
    call: (v) => client(v, 'owner').delete(`${ws(v)}/mcp-servers/${v.serverId}`),
  },
};

/** The seq of every chain's head, read past row-level security. */
async function heads(): Promise<Map<string, number>> {
  const rows = await app.db.system(async (tx) => {
    const res = (await tx.execute(sql`select chain, seq from audit_chain_heads`)) as unknown as {
      rows: Array<{ chain: string; seq: string | number }>;
    };
    return res.rows;
  });
  return new Map(rows.map((r) => [r.chain, Number(r.seq)]));
}

type Written = {
  action: string;
  chain: string;
  xid: string;
  targetType: string;
  targetId: string;
  requestId: string | null;
};

/** The events appended since `before` (chains deleted meanwhile are gone, with their events), with their transaction ids. */
async function eventsSince(before: Map<string, number>): Promise<Written[]> {
  const out: Written[] = [];
  for (const [chain, seq] of await heads()) {
    const from = before.get(chain) ?? 0;
    if (seq <= from) continue;
    const rows = await app.db.system(async (tx) => {
      const res = (await tx.execute(
        sql`select action, chain, xmin::text as xid, target_type as "targetType", target_id as "targetId",
                   request_id as "requestId"
            from audit_events where chain = ${chain} and seq > ${from} order by seq`,
      )) as unknown as { rows: Written[] };
      return res.rows;
    });
    out.push(...rows);
  }
  return out.sort((a, b) => (a.action < b.action ? -1 : a.action > b.action ? 1 : 0));
}

/**
 * The transaction that last wrote the row an event names (xmin), where that row still
 * exists: the change and its event must share it (invariant 4: the same transaction).
 */
async function targetXid(e: Written): Promise<string | null> {
  const query =
    e.targetType === 'workspace'
      ? sql`select xmin::text as xid from workspaces where id = ${e.targetId}`
      : e.targetType === 'api_key'
        ? sql`select xmin::text as xid from api_keys where id = ${e.targetId}`
        : e.targetType === 'invitation'
          ? sql`select xmin::text as xid from invitations where id = ${e.targetId}`
          : e.targetType === 'user' && e.chain !== 'platform' && e.action.startsWith('member.')
            ? sql`select xmin::text as xid from memberships where workspace_id = ${e.chain} and user_id = ${e.targetId}`
            : e.targetType === 'privacy_request'
              ? sql`select xmin::text as xid from privacy_requests where id = ${e.targetId}`
              : e.targetType === 'agent'
                ? sql`select xmin::text as xid from agents where id = ${e.targetId}`
                : null;
  if (!query) return null;
  const rows = await app.db.system(async (tx) => {
    const res = (await tx.execute(query)) as unknown as { rows: Array<{ xid: string }> };
    return res.rows;
  });
  return rows[0]?.xid ?? null;
}

/** Failures of one route's events: wrong actions, several transactions, or a change in another transaction. */
async function checkWritten(route: string, expected: string[], events: Written[]): Promise<string[]> {
  const failures: string[] = [];
  const actions = events.map((e) => e.action);
  if (JSON.stringify(actions) !== JSON.stringify([...expected].sort())) {
    failures.push(`${route}: wrote [${actions.join(', ')}], expected [${[...expected].sort().join(', ')}]`);
  }
  const xids = new Set(events.map((e) => e.xid));
  if (xids.size > 1) failures.push(`${route}: its events were written by ${xids.size} transactions, not one`);
  for (const e of events) {
    const xid = await targetXid(e);
    if (xid !== null && xid !== e.xid) {
      failures.push(`${route}: ${e.action} was written in another transaction than its ${e.targetType}`);
    }
  }
  return failures;
}

beforeAll(async () => {
  stripe = await startFakeStripe();
  llm = await startFakeOpenAi();
  app = await createTestApp({
    config: {
      BERTH_EGRESS_ALLOW: '127.0.0.1',
      BERTH_STRIPE_SECRET_KEY: stripe.secretKey,
      BERTH_STRIPE_API_URL: stripe.url,
      BERTH_AUDIT_SIGNING_KEY: generateAuditSigningKey(),
      BERTH_SIGNUP_IP_MAX: 10_000,
      BERTH_EMAIL_IP_MAX: 10_000,
      BERTH_EMAIL_ADDRESS_MAX: 100,
    },
  });
});
afterAll(async () => {
  await app.close();
  await stripe?.close();
  await llm?.close();
});

describe('security', () => {
  it('every state-changing route is either audited by a fixture or exempt with a reason', () => {
    const policies = app.modules.audit.service.routePolicies();
    expect(policies.length).toBeGreaterThan(30);
    const routes = policies.map((p) => `${p.method} ${p.url}`);
    const uncovered = policies.filter((p) => !p.exempt && !FIXTURES[`${p.method} ${p.url}`]);
    expect(
      uncovered.map((p) => `${p.method} ${p.url}`),
      'state-changing routes with neither an audit fixture here nor config.audit.exempt',
    ).toEqual([]);
    const both = policies.filter((p) => p.exempt && FIXTURES[`${p.method} ${p.url}`]);
    expect(
      both.map((p) => `${p.method} ${p.url}`),
      'routes both exempt and given a fixture',
    ).toEqual([]);
    const stale = Object.keys(FIXTURES).filter((k) => !routes.includes(k));
    expect(stale, 'fixtures for routes the app no longer has').toEqual([]);
    for (const p of policies.filter((x) => x.exempt)) expect(p.exempt?.length ?? 0).toBeGreaterThan(10);
  });

  it('each audited route writes exactly its audit event, and every chain still verifies', async () => {
    // First-run setup goes first: it makes the operator the operator routes need.
    const order = ['POST /api/setup', ...Object.keys(FIXTURES).filter((k) => k !== 'POST /api/setup')];
    const failures: string[] = [];
    let failing = 0;
    for (const route of order) {
      const fixture = FIXTURES[route];
      if (!fixture) continue;
      const vars = (await fixture.prepare?.()) ?? {};
      if (fixture.fail) {
        failing++;
        const start = await heads();
        const refused = await fixture.fail(vars);
        if (refused.status < 400) failures.push(`${route}: the failing call answered ${refused.status}`);
        const written = await eventsSince(start);
        if (written.length > 0) {
          failures.push(`${route}: a failed call wrote [${written.map((e) => e.action).join(', ')}]`);
        }
      }
      const before = await heads();
      const res = await fixture.call(vars);
      if (res.status >= 300) {
        failures.push(`${route}: answered ${res.status} ${res.text.slice(0, 200)}`);
        continue;
      }
      const written = await eventsSince(before);
      // The events name the request that made them (its x-request-id), from the actor each use case was given.
      const requestId = res.headers['x-request-id'];
      for (const e of written) {
        if (e.requestId !== requestId)
          failures.push(`${route}: ${e.action} names request ${e.requestId}, not ${requestId}`);
      }
      if (route === 'POST /api/setup') {
        // Checked by its own test below (setup writes to two chains, the platform's and the workspace's).
        setupEvents = written;
        const actions = written.map((e) => e.action);
        if (JSON.stringify(actions) !== JSON.stringify([...fixture.actions].sort())) {
          failures.push(`${route}: wrote [${actions.join(', ')}]`);
        }
      } else {
        failures.push(...(await checkWritten(route, fixture.actions, written)));
      }
      if (route === 'POST /api/setup') {
        operator = await logIn(app, 'first-operator@example.test', 'first operator passphrase');
      }
    }
    expect(failures).toEqual([]);
    expect(failing).toBeGreaterThanOrEqual(5);
    for (const report of await app.modules.audit.service.verifyAll()) {
      expect(report, report.chain).toMatchObject({ ok: true });
    }
  });

  // Setup creates the user, the workspace, the platform event and the key in one transaction.
  it('first-run setup writes its events in one transaction with the rows they name', async () => {
    expect(setupEvents.length).toBe(3);
    expect(await checkWritten('POST /api/setup', FIXTURES['POST /api/setup']?.actions ?? [], setupEvents)).toEqual([]);
  });

  it('an exempt route of the own account does record a security event', async () => {
    const someone = await user('self');
    const before = await app.modules.identity.service.listSecurityEvents(someone.userId);
    const res = await someone.post('/api/me/password', {
      currentPassword: someone.password,
      newPassword: testPassword(),
    });
    expect(res.status).toBe(200);
    const after = await app.modules.identity.service.listSecurityEvents(someone.userId);
    expect(after.length).toBe(before.length + 1);
  });
});
