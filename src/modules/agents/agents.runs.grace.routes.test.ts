import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { gatewayWorkspace } from '../../../test/helpers/gateway.ts';
import { DAY } from '../../platform/clock.ts';
import { CREDIT_STANDING_JOB } from '../billing/index.ts';
import type { RunView } from './agents.runs.schemas.ts';

/**
 * The agents' runtime data of a workspace out of credits: new runs are refused at once
 * (402 insufficient_credits), and once the suspension grace period ends the workspace's runs
 * with their steps and events are deleted (billing.grace_expired); its agent definitions stay.
 */

let app: TestApp;
let fake: FakeOpenAi;

beforeAll(async () => {
  fake = await startFakeOpenAi();
  app = await createTestApp({
    config: {
      BERTH_EGRESS_ALLOW: '127.0.0.1',
      BERTH_FREE_CREDITS_USD: '0.05',
      BERTH_EXHAUSTED_BALANCE_USD: '0.01',
      BERTH_SUSPENSION_GRACE_DAYS: 3,
    },
  });
});
afterAll(async () => {
  await app?.close();
  await fake?.close();
});

async function count(table: 'agent_runs' | 'agent_run_steps' | 'agent_run_events' | 'agents', workspaceId: string) {
  const res = (await app.db.system((tx) =>
    tx.execute(sql`select count(*)::int as n from ${sql.identifier(table)} where workspace_id = ${workspaceId}`),
  )) as unknown as { rows: Array<{ n: number }> };
  return res.rows[0]?.n ?? 0;
}

async function standingJob() {
  await app.jobs.send(CREDIT_STANDING_JOB, {});
  await app.jobs.drain(CREDIT_STANDING_JOB);
}

it('refuses runs of a workspace out of credits and deletes its runs (not its agents) when the grace period ends', async () => {
  const w = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }] });
  const other = await gatewayWorkspace(app, {
    providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }],
  });
  // A key outlives sessions as the clock moves on.
  const client = async (ws: typeof w) => {
    const key = await ws.owner.post<{ secret: string }>(`/api/workspaces/${ws.workspaceId}/keys`, {
      name: 'runner',
      scopes: ['agents:run', 'agents:read', 'agents:write'],
    });
    expect(key.status, key.text).toBe(201);
    const c = new TestClient(app);
    c.headers = { authorization: `Bearer ${key.body.secret}` };
    return c;
  };
  const mine = await client(w);
  const theirs = await client(other);
  for (const [c, ws] of [
    [mine, w],
    [theirs, other],
  ] as const) {
    const created = await c.post(`/api/workspaces/${ws.workspaceId}/agents/import?publish=true`, {
      name: 'helper',
      model: 'gpt-4o',
      tools: [],
    });
    expect(created.status, created.text).toBe(201);
    fake.next({ kind: 'reply', content: 'hi' });
    const run = await c.post<RunView>(`/api/workspaces/${ws.workspaceId}/runs`, { agent: 'helper', input: 'hello' });
    expect(run.body.status, run.text).toBe('completed');
  }
  expect(await count('agent_runs', w.workspaceId)).toBe(1);
  expect(await count('agent_run_events', w.workspaceId)).toBeGreaterThan(0);

  // Every credit taken: new runs are refused at once, nothing is created.
  const { availableMicros } = await app.modules.billing.ledger.balance(w.workspaceId);
  await app.modules.billing.service.adjust({
    actor: { type: 'system', name: 'test' },
    workspaceId: w.workspaceId,
    deltaMicros: -availableMicros,
    idempotencyKey: `drain-${w.workspaceId}`,
    memo: 'test: spend everything',
  });
  const refused = await mine.post(`/api/workspaces/${w.workspaceId}/runs`, { agent: 'helper', input: 'again' });
  expect(refused.status).toBe(402);
  expect(refused.body.code).toBe('insufficient_credits');
  expect(await count('agent_runs', w.workspaceId)).toBe(1);

  await standingJob();
  // Inside the grace period the runs stay.
  app.clock.advance(2 * DAY);
  await standingJob();
  expect(await count('agent_runs', w.workspaceId)).toBe(1);

  app.clock.advance(2 * DAY);
  await standingJob();
  expect(await count('agent_runs', w.workspaceId)).toBe(0);
  expect(await count('agent_run_steps', w.workspaceId)).toBe(0);
  expect(await count('agent_run_events', w.workspaceId)).toBe(0);
  expect(await count('agents', w.workspaceId)).toBe(1);
  // Another workspace's runs are untouched.
  expect(await count('agent_runs', other.workspaceId)).toBe(1);
  const list = await mine.get<{ data: RunView[] }>(`/api/workspaces/${w.workspaceId}/runs`);
  expect(list.status).toBe(200);
  expect(list.body.data).toEqual([]);
});
