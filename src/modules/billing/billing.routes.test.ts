import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { gatewayWorkspace, listen } from '../../../test/helpers/gateway.ts';
import { logIn, makeOperator, type SignedInClient, signUp } from '../../../test/helpers/identity.ts';

/**
 * Billing over HTTP, with the ledger as the gateway's credit gate (the default): a new
 * workspace's free credits, calls settled to their metered cost, 402 at zero, operator
 * grants and adjustments, plans, and the verification of every balance.
 */

type Balance = { workspaceId: string; availableMicros: number; heldMicros: number; plan: string };
type Entry = { id: string; kind: string; amountMicros: number; availableAfterMicros: number };
type ApiError = InstanceType<typeof OpenAI.APIError>;

let app: TestApp;
let fake: FakeOpenAi;
let operator: SignedInClient;

beforeAll(async () => {
  fake = await startFakeOpenAi();
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_FREE_CREDITS_USD: '0.05' } });
  const op = await signUp(app);
  await makeOperator(app, op.userId);
  operator = await logIn(app, op.email, op.password);
});
afterAll(async () => {
  await app?.close();
  await fake?.close();
});

async function balanceOf(owner: SignedInClient, workspaceId: string): Promise<Balance> {
  const res = await owner.get<Balance>(`/api/workspaces/${workspaceId}/billing/balance`);
  expect(res.status).toBe(200);
  return res.body;
}

describe('happy', () => {
  it('starts a new workspace on the Free plan with its free credits, and meters calls from them', async () => {
    const w = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }] });
    expect(await balanceOf(w.owner, w.workspaceId)).toEqual({
      workspaceId: w.workspaceId,
      availableMicros: 50_000,
      heldMicros: 0,
      plan: 'free',
    });
    await w.openai.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'one two three' }],
      max_tokens: 100,
    });
    await app.modules.gateway.service.idle();
    await app.modules.gateway.service.usage.flush();
    const usage = await w.owner.get<{ data: Array<{ costMicros: number }> }>(`/api/workspaces/${w.workspaceId}/usage`);
    const cost = usage.body.data[0]?.costMicros ?? -1;
    expect(cost).toBeGreaterThan(0);
    const after = await balanceOf(w.owner, w.workspaceId);
    expect(after).toMatchObject({ availableMicros: 50_000 - cost, heldMicros: 0 });
    const entries = await w.owner.get<{ data: Entry[] }>(`/api/workspaces/${w.workspaceId}/billing/entries`);
    expect(entries.body.data.map((e) => e.kind)).toEqual(['settle', 'reserve', 'grant']);
    expect(entries.body.data[0]).toMatchObject({ amountMicros: cost, availableAfterMicros: 50_000 - cost });
  });

  it('lets an operator grant and adjust credits (idempotent by key), change the plan, and verify every balance', async () => {
    const w = await gatewayWorkspace(app);
    const grant = { workspaceId: w.workspaceId, amountMicros: 12_500_000, idempotencyKey: `topup-${w.workspaceId}` };
    const first = await operator.post<Entry>('/api/operator/billing/grant', grant);
    expect(first.status).toBe(201);
    const again = await operator.post<Entry>('/api/operator/billing/grant', grant);
    expect(again.body).toEqual(first.body);
    const adjusted = await operator.post<Entry>('/api/operator/billing/adjust', {
      workspaceId: w.workspaceId,
      deltaMicros: -500_000,
      idempotencyKey: `fix-${w.workspaceId}`,
      memo: 'duplicate grant corrected',
    });
    expect(adjusted.body).toMatchObject({ kind: 'adjust', amountMicros: 500_000, availableAfterMicros: 12_050_000 });
    const plan = await operator.put(`/api/operator/workspaces/${w.workspaceId}/plan`, { plan: 'scale' });
    expect(plan.body).toMatchObject({ workspaceId: w.workspaceId, plan: 'scale' });
    expect(await balanceOf(w.owner, w.workspaceId)).toMatchObject({ availableMicros: 12_050_000, plan: 'scale' });
    const verify = await operator.get<{ ok: boolean; workspaces: number }>('/api/operator/billing/verify');
    expect(verify.body.ok).toBe(true);
    expect(verify.body.workspaces).toBeGreaterThanOrEqual(2);
  });
});

describe('errors', () => {
  it('answers 402 insufficient_credits once the credits run out, holding nothing', async () => {
    const w = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }] });
    // The worst case of a call with 100,000 output tokens is far above the 0.05 USD it has.
    const refused = (await w.openai.chat.completions
      .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }], max_tokens: 100_000 })
      .catch((e: unknown) => e)) as ApiError;
    expect(refused.status).toBe(402);
    expect(refused.code).toBe('insufficient_credits');
    expect(await balanceOf(w.owner, w.workspaceId)).toMatchObject({ availableMicros: 50_000, heldMicros: 0 });
  });

  it('refuses bad amounts, reused keys and unknown plans with stable codes, changing nothing', async () => {
    const w = await gatewayWorkspace(app);
    const post = (body: Record<string, unknown>) => operator.post('/api/operator/billing/grant', body);
    for (const amountMicros of [0, -1, 1.5, '100']) {
      const res = await post({ workspaceId: w.workspaceId, amountMicros, idempotencyKey: `bad-${amountMicros}-x` });
      expect(res.status).toBe(400);
    }
    const key = `reuse-${w.workspaceId}`;
    expect((await post({ workspaceId: w.workspaceId, amountMicros: 10, idempotencyKey: key })).status).toBe(201);
    const reused = await post({ workspaceId: w.workspaceId, amountMicros: 11, idempotencyKey: key });
    expect(reused.status).toBe(409);
    expect(reused.body.code).toBe('idempotency_conflict');
    const overdraft = await operator.post('/api/operator/billing/adjust', {
      workspaceId: w.workspaceId,
      deltaMicros: -1_000_000_000,
      idempotencyKey: `over-${w.workspaceId}`,
      memo: 'too much',
    });
    expect(overdraft.status).toBe(402);
    const plan = await operator.put(`/api/operator/workspaces/${w.workspaceId}/plan`, { plan: 'platinum' });
    expect(plan.status).toBe(400);
    expect(plan.body.code).toBe('unknown_plan');
    expect(await balanceOf(w.owner, w.workspaceId)).toMatchObject({ availableMicros: 50_010, plan: 'free' });
  });
});

describe('security', () => {
  it('shows the balance to keys with billing:read only; grants and plans are for operators', async () => {
    const w = await gatewayWorkspace(app);
    const url = await listen(app);
    const balance = (secret: string) =>
      fetch(`${url}/api/workspaces/${w.workspaceId}/billing/balance`, {
        headers: { authorization: `Bearer ${secret}` },
      });
    // The helper's key has gateway:invoke and usage:read, not billing:read.
    expect((await balance(w.secret)).status).toBe(403);
    const key = await w.owner.post<{ secret: string }>(`/api/workspaces/${w.workspaceId}/keys`, {
      name: 'billing',
      scopes: ['billing:read'],
    });
    expect((await balance(key.body.secret)).status).toBe(200);
    const grant = await w.owner.post('/api/operator/billing/grant', {
      workspaceId: w.workspaceId,
      amountMicros: 1_000_000_000,
      idempotencyKey: `self-${w.workspaceId}`,
    });
    expect(grant.status).toBe(403);
    expect((await w.owner.put(`/api/operator/workspaces/${w.workspaceId}/plan`, { plan: 'scale' })).status).toBe(403);
    expect((await w.owner.get('/api/operator/billing/verify')).status).toBe(403);
    expect(await balanceOf(w.owner, w.workspaceId)).toMatchObject({ availableMicros: 50_000, plan: 'free' });
  });
});

describe('monthly credits', () => {
  it("grants each workspace its plan's credits once a month, also after a plan change", async () => {
    const w = await gatewayWorkspace(app);
    const billing = app.modules.billing.service;
    const available = async () => (await app.modules.billing.ledger.balance(w.workspaceId)).availableMicros;
    // The month it was created in: its Free credits came with it.
    await billing.grantMonthlyCredits();
    expect(await available()).toBe(50_000);
    // Sessions expire as the clock moves a month: this test goes last and calls the services.
    app.clock.advance(32 * 24 * 3600_000);
    expect(await billing.grantMonthlyCredits()).toBeGreaterThanOrEqual(1);
    await billing.grantMonthlyCredits();
    expect(await available()).toBe(100_000);
    // Moving to Starter in the month adds Starter's credits for it, once.
    await billing.setPlan({ actor: { type: 'system', name: 'test' }, workspaceId: w.workspaceId, plan: 'starter' });
    await billing.grantMonthlyCredits();
    await billing.grantMonthlyCredits();
    expect(await available()).toBe(100_000 + 20_000_000);
  });
});
