import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { and, eq, isNull } from 'drizzle-orm';
import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { type GatewayWorkspace, gatewayWorkspace, listen } from '../../../test/helpers/gateway.ts';
import { logIn, makeOperator, type SignedInClient, signUp, testEmail } from '../../../test/helpers/identity.ts';
import { ConfigError } from '../../config.ts';
import { plansFromFile } from './billing.plans.ts';
import { workspacePlans } from './billing.tables.ts';

/**
 * Plans from the operator's file: what a plan includes is enforced where it applies (the
 * gateway's requests per minute for the workspace, seats on invitations), shown to the
 * workspace with its history, and a plan change applies from the next call on.
 */

type ApiError = InstanceType<typeof OpenAI.APIError>;
type PlanView = {
  workspaceId: string;
  plan: { id: string; name: string; rateLimitRpm: number | null; seats: number | null; monthlyCreditsMicros: number };
  since: string | null;
  history: Array<{ plan: string; startedAt: string; endedAt: string | null }>;
};

let dir: string;
let app: TestApp;
let fake: FakeOpenAi;
let operator: SignedInClient;

function plansFile(content: unknown): string {
  const file = path.join(dir, `plans-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content));
  return file;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'berth-plans-'));
  fake = await startFakeOpenAi();
  const file = plansFile({
    free: { rateLimitRpm: 2, seats: 2 },
    team: {
      name: 'Team',
      monthlyCreditsMicros: 50_000_000,
      rateLimitRpm: null,
      seats: 25,
      auditRetentionMonths: 13,
      features: ['gateway', 'agents'],
    },
  });
  app = await createTestApp({
    config: { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_FREE_CREDITS_USD: '5', BERTH_PLANS_FILE: file },
  });
  const op = await signUp(app);
  await makeOperator(app, op.userId);
  operator = await logIn(app, op.email, op.password);
});
afterAll(async () => {
  await app?.close();
  await fake?.close();
  rmSync(dir, { recursive: true, force: true });
});

const call = (w: GatewayWorkspace) =>
  w.openai.chat.completions
    .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 })
    .then(
      () => 'ok',
      (e: ApiError) => `${e.status} ${e.code}`,
    );

describe('happy', () => {
  it("shows the workspace its plan, what it includes, and the plan's history", async () => {
    const w = await gatewayWorkspace(app);
    const first = await w.owner.get<PlanView>(`/api/workspaces/${w.workspaceId}/billing/plan`);
    expect(first.status).toBe(200);
    expect(first.body.plan).toMatchObject({ id: 'free', rateLimitRpm: 2, seats: 2, monthlyCreditsMicros: 5_000_000 });
    await operator.put(`/api/operator/workspaces/${w.workspaceId}/plan`, { plan: 'team' });
    const after = await w.owner.get<PlanView>(`/api/workspaces/${w.workspaceId}/billing/plan`);
    expect(after.body.plan).toMatchObject({ id: 'team', name: 'Team', seats: 25, rateLimitRpm: null });
    expect(after.body.history.map((h) => [h.plan, h.endedAt === null])).toEqual([
      ['team', true],
      ['free', false],
    ]);
    const list = await w.owner.get<{ data: Array<{ id: string }> }>('/api/billing/plans');
    expect(list.body.data.map((p) => p.id)).toEqual(['free', 'starter', 'scale', 'enterprise', 'team']);
  });

  it("limits the workspace's gateway calls per minute by its plan, and lifts the limit with the plan", async () => {
    const w = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }] });
    expect([await call(w), await call(w)]).toEqual(['ok', 'ok']);
    expect(await call(w)).toBe('429 rate_limited');
    await operator.put(`/api/operator/workspaces/${w.workspaceId}/plan`, { plan: 'team' });
    expect(await call(w)).toBe('ok');
  });

  it("refuses invitations beyond the plan's seats, counting open invitations, and frees a seat on revoke", async () => {
    const owner = await signUp(app);
    const ws = await owner.post<{ id: string }>('/api/workspaces', { name: 'Seats' });
    const invite = (email = testEmail('seat')) =>
      owner.post<{ id: string; code?: string }>(`/api/workspaces/${ws.body.id}/invitations`, { email, role: 'member' });
    const first = await invite();
    expect(first.status).toBe(201);
    // The owner and one open invitation fill the Free plan's 2 seats.
    const refused = await invite();
    expect(refused.status).toBe(409);
    expect(refused.body.code).toBe('seat_limit_reached');
    expect((await owner.delete(`/api/workspaces/${ws.body.id}/invitations/${first.body.id}`)).status).toBe(204);
    expect((await invite()).status).toBe(201);
  });
});

describe('errors', () => {
  it('reads plans from the file: fields of shipped plans overridden, new plans complete, bad files named', () => {
    const plans = plansFromFile(plansFile({ starter: { monthlyCreditsMicros: 1 } }), 7);
    expect(plans.get('starter')).toMatchObject({ name: 'Starter', monthlyCreditsMicros: 1 });
    expect(plans.get('free')?.monthlyCreditsMicros).toBe(7);
    for (const bad of [
      '{ not json',
      { team: { name: 'Team' } },
      { free: { monthlyCreditsMicros: -1 } },
      { free: { seats: 1.5 } },
      { Free: { seats: 2 } },
      { free: { colour: 'blue' } },
      [1, 2],
    ]) {
      expect(() => plansFromFile(plansFile(bad), 0)).toThrow(ConfigError);
      expect(() => plansFromFile(plansFile(bad), 0)).toThrow(/BERTH_PLANS_FILE/);
    }
    expect(() => plansFromFile(path.join(dir, 'missing.json'), 0)).toThrow(/BERTH_PLANS_FILE/);
  });
});

describe('a plan no longer configured', () => {
  it('keeps the audit log as long as the longest plan does, never by the default', async () => {
    const w = await gatewayWorkspace(app);
    await app.db.tenant(w.workspaceId, (tx) =>
      tx
        .update(workspacePlans)
        .set({ plan: 'retired-plan' })
        .where(and(eq(workspacePlans.workspaceId, w.workspaceId), isNull(workspacePlans.endedAt))),
    );
    const limits = await app.modules.billing.service.limitsOf(w.workspaceId);
    expect(limits.auditRetentionMonths).toBe(84);
  });
});

describe('security', () => {
  it('lists plans to signed-in people only (an API key reads its own workspace plan)', async () => {
    const url = await listen(app);
    expect((await fetch(`${url}/api/billing/plans`)).status).toBe(401);
    const w = await gatewayWorkspace(app);
    expect((await w.owner.get('/api/billing/plans')).status).toBe(200);
    const headers = { authorization: `Bearer ${w.secret}` };
    expect((await fetch(`${url}/api/billing/plans`, { headers })).status).toBe(403);
  });
});
