import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { type GatewayWorkspace, gatewayWorkspace, listen } from '../../../test/helpers/gateway.ts';
import { signUp } from '../../../test/helpers/identity.ts';
import { newId } from '../../platform/ids.ts';

/**
 * Budgets: daily and monthly spend limits of a workspace or one API key, enforced when a
 * call reserves its worst case (so concurrent calls cannot pass them), alerts at 50, 80
 * and 100 % to owners and admins, once each, and the API's bad-input answers.
 */

type Budget = {
  id: string;
  keyId: string | null;
  period: 'day' | 'month';
  limitMicros: number;
  current: { start: string; end: string; spentMicros: number; heldMicros: number; remainingMicros: number };
};
type ApiError = InstanceType<typeof OpenAI.APIError>;

let app: TestApp;
let fake: FakeOpenAi;
const DAY = 24 * 3600_000;

beforeAll(async () => {
  fake = await startFakeOpenAi();
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_FREE_CREDITS_USD: '0' } });
  // Mid-month, mid-day: moving a day stays in the month.
  app.clock.set(new Date('2026-12-10T12:00:00Z'));
});
afterAll(async () => {
  await app?.close();
  await fake?.close();
});

const ledger = () => app.modules.billing.ledger;
const system = { type: 'system', name: 'test' } as const;

async function funded(micros = 100_000_000): Promise<GatewayWorkspace> {
  const w = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }] });
  await ledger().grant({
    workspaceId: w.workspaceId,
    amountMicros: micros,
    idempotencyKey: `fund-${w.workspaceId}`,
    actor: system,
  });
  return w;
}

async function setBudget(w: GatewayWorkspace, body: Record<string, unknown>) {
  return w.owner.put<Budget & { code?: string }>(`/api/workspaces/${w.workspaceId}/billing/budgets`, body);
}

const reserve = (w: GatewayWorkspace, amountMicros: number, keyId: string | null = null) =>
  ledger().reserve({ workspaceId: w.workspaceId, keyId, requestId: newId('req'), amountMicros });

const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => 'ok',
    (e: { code?: string }) => e.code ?? 'error',
  );

describe('happy', () => {
  it("refuses a reservation that would pass the workspace's monthly budget, counting calls in flight", async () => {
    const w = await funded();
    const set = await setBudget(w, { period: 'month', limitMicros: 10_000 });
    expect(set.status).toBe(200);
    expect(set.body).toMatchObject({ keyId: null, period: 'month', limitMicros: 10_000 });
    expect(set.body.current).toMatchObject({ start: '2026-12-01T00:00:00.000Z', end: '2027-01-01T00:00:00.000Z' });
    const a = await reserve(w, 6_000);
    // 6,000 held + 5,000 > 10,000: refused while the first call is in flight.
    expect(await codeOf(reserve(w, 5_000))).toBe('budget_exceeded');
    await ledger().settle(w.workspaceId, a.id, 2_500);
    // Settled at 2,500: 7,500 left.
    const b = await reserve(w, 7_500);
    expect(await codeOf(reserve(w, 1))).toBe('budget_exceeded');
    await ledger().release(w.workspaceId, b.id);
    const list = await w.owner.get<{ data: Budget[] }>(`/api/workspaces/${w.workspaceId}/billing/budgets`);
    expect(list.body.data).toHaveLength(1);
    expect(list.body.data[0]?.current).toMatchObject({ spentMicros: 2_500, heldMicros: 0, remainingMicros: 7_500 });
    // The ledger itself still balances.
    expect((await ledger().verify(w.workspaceId))[0]?.ok).toBe(true);
  });

  it('limits one key by its own budget, leaves other keys alone, and starts again the next day', async () => {
    const w = await funded();
    const other = await w.owner.post<{ key: { id: string } }>(`/api/workspaces/${w.workspaceId}/keys`, {
      name: 'other',
      scopes: ['gateway:invoke'],
    });
    const otherKey = other.body.key.id;
    expect((await setBudget(w, { keyId: w.keyId, period: 'day', limitMicros: 3_000 })).status).toBe(200);
    const r = await reserve(w, 3_000, w.keyId);
    await ledger().settle(w.workspaceId, r.id, 3_000);
    expect(await codeOf(reserve(w, 1, w.keyId))).toBe('budget_exceeded');
    expect(await codeOf(reserve(w, 50_000, otherKey))).toBe('ok');
    expect(await codeOf(reserve(w, 50_000, null))).toBe('ok');
    app.clock.advance(DAY);
    expect(await codeOf(reserve(w, 3_000, w.keyId))).toBe('ok');
    app.clock.advance(-DAY);
  });

  it('answers budget_exceeded (402) to the OpenAI SDK, and lets the call through once the limit is raised', async () => {
    const w = await funded();
    expect((await setBudget(w, { period: 'month', limitMicros: 1 })).status).toBe(200);
    const refused = (await w.openai.chat.completions
      .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hello' }], max_tokens: 50 })
      .catch((e: unknown) => e)) as ApiError;
    expect(refused.status).toBe(402);
    expect(refused.code).toBe('budget_exceeded');
    expect((await setBudget(w, { period: 'month', limitMicros: 5_000_000 })).status).toBe(200);
    const ok = await w.openai.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'hello' }],
      max_tokens: 50,
    });
    expect(ok.choices[0]?.message).toBeDefined();
    await app.modules.gateway.service.idle();
    const list = await w.owner.get<{ data: Budget[] }>(`/api/workspaces/${w.workspaceId}/billing/budgets`);
    expect(list.body.data[0]?.current.spentMicros).toBeGreaterThan(0);
    expect(list.body.data[0]?.current.heldMicros).toBe(0);
  });

  it('emails owners and admins at 50, 80 and 100 %, once per threshold', async () => {
    const w = await funded();
    const admin = await signUp(app);
    const workspaces = app.modules.workspaces.service;
    const ownerScope = {
      workspaceId: w.workspaceId,
      actor: { type: 'user' as const, userId: w.owner.userId },
      role: 'owner' as const,
    };
    const { token } = await workspaces.invite({ scope: ownerScope, email: admin.email, role: 'admin' });
    await workspaces.acceptInvitation({ token, userId: admin.userId });
    await setBudget(w, { period: 'month', limitMicros: 10_000 });
    const alerts = async () =>
      (await app.modules.notifications.service.listOutbox({ limit: 1000 })).filter(
        (m) => m.tag === 'billing.budget_alert' && m.text.includes(w.workspaceId),
      );
    const spend = async (micros: number) => {
      const r = await reserve(w, micros);
      await ledger().settle(w.workspaceId, r.id, micros);
    };
    await spend(4_000);
    await app.modules.billing.budgets.sendAlerts();
    expect(await alerts()).toHaveLength(0);
    await spend(1_000); // 50 %
    // Two job runs at once (two workers): each alert is claimed by one of them.
    await Promise.all([app.modules.billing.budgets.sendAlerts(), app.modules.billing.budgets.sendAlerts()]);
    await app.modules.billing.budgets.sendAlerts();
    const at50 = await alerts();
    expect(new Set(at50.map((m) => m.to))).toEqual(new Set([w.owner.email, admin.email]));
    expect(at50.every((m) => m.subject.includes('50%'))).toBe(true);
    await spend(4_000); // 90 %: one alert for 80 %
    await app.modules.billing.budgets.sendAlerts();
    expect((await alerts()).filter((m) => m.subject.includes('80%'))).toHaveLength(2);
    await spend(1_000); // 100 %
    await app.modules.billing.budgets.sendAlerts();
    await app.modules.billing.budgets.sendAlerts();
    const all = await alerts();
    expect(all.filter((m) => m.subject.includes('used up'))).toHaveLength(2);
    expect(all).toHaveLength(6);
    // A raised limit alerts again at its own thresholds: 10,000 of 100,000 spent is 10 %.
    await setBudget(w, { period: 'month', limitMicros: 100_000 });
    await spend(40_000); // 50 % of the new limit
    await app.modules.billing.budgets.sendAlerts();
    await app.modules.billing.budgets.sendAlerts();
    expect((await alerts()).filter((m) => m.subject.includes('50%'))).toHaveLength(4);
  });
});

describe('errors', () => {
  it('refuses bad limits, unknown periods and keys of other workspaces with stable codes, changing nothing', async () => {
    const w = await funded();
    for (const limitMicros of [0, -5, 1.5, '100', 10 ** 16]) {
      const res = await setBudget(w, { period: 'month', limitMicros });
      expect(res.status).toBe(400);
      expect(res.body.code).toBe('validation_failed');
    }
    expect((await setBudget(w, { period: 'week', limitMicros: 10 })).status).toBe(400);
    const stranger = await funded();
    const foreign = await setBudget(w, { keyId: stranger.keyId, period: 'day', limitMicros: 10 });
    expect(foreign.status).toBe(404);
    const gone = await w.owner.delete(`/api/workspaces/${w.workspaceId}/billing/budgets/bud_nothing`);
    expect(gone.status).toBe(404);
    const list = await w.owner.get<{ data: Budget[] }>(`/api/workspaces/${w.workspaceId}/billing/budgets`);
    expect(list.body.data).toEqual([]);
    // No budget: nothing refused for it.
    expect(await codeOf(reserve(w, 1_000_000))).toBe('ok');
  });

  it('keeps calls in flight whole when their budget is removed or changed', async () => {
    const w = await funded();
    const set = await setBudget(w, { period: 'month', limitMicros: 10_000 });
    const r = await reserve(w, 8_000);
    const removed = await w.owner.delete(`/api/workspaces/${w.workspaceId}/billing/budgets/${set.body.id}`);
    expect(removed.status).toBe(204);
    await ledger().settle(w.workspaceId, r.id, 8_000);
    expect(await codeOf(reserve(w, 50_000))).toBe('ok');
    expect((await ledger().verify(w.workspaceId))[0]?.ok).toBe(true);
  });
});

describe('security', () => {
  it("answers 404 for another workspace's budget and 403 to keys without budgets:manage", async () => {
    const a = await funded();
    const b = await funded();
    const set = await setBudget(b, { period: 'day', limitMicros: 10 });
    const del = await a.owner.delete(`/api/workspaces/${a.workspaceId}/billing/budgets/${set.body.id}`);
    expect(del.status).toBe(404);
    const url = `/api/workspaces/${a.workspaceId}/billing/budgets`;
    const viaKey = await fetch(`${await listen(app)}${url}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${a.secret}`, 'content-type': 'application/json' },
      body: JSON.stringify({ period: 'day', limitMicros: 10 }),
    });
    expect(viaKey.status).toBe(403);
    const still = await b.owner.get<{ data: Budget[] }>(`/api/workspaces/${b.workspaceId}/billing/budgets`);
    expect(still.body.data).toHaveLength(1);
  });
});

describe('concurrency', () => {
  it('lets exactly as many parallel reservations through as the budget covers', async () => {
    const w = await funded();
    await setBudget(w, { period: 'month', limitMicros: 10_000 });
    const results = await Promise.all(Array.from({ length: 50 }, () => codeOf(reserve(w, 1_000))));
    expect(results.filter((r) => r === 'ok')).toHaveLength(10);
    expect(results.filter((r) => r === 'budget_exceeded')).toHaveLength(40);
    const list = await w.owner.get<{ data: Budget[] }>(`/api/workspaces/${w.workspaceId}/billing/budgets`);
    expect(list.body.data[0]?.current).toMatchObject({ heldMicros: 10_000, remainingMicros: 0 });
  });
});
