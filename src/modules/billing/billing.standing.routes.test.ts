import { sql } from 'drizzle-orm';
import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { type GatewayWorkspace, gatewayWorkspace } from '../../../test/helpers/gateway.ts';
import { logIn, makeOperator, type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { DAY } from '../../platform/clock.ts';
import { AppError } from '../../platform/errors.ts';
import { CREDIT_STANDING_JOB, type GraceExpiredEvent, type StandingView } from './index.ts';

/**
 * Credit standing through the real app (the gateway on the ledger, a fake OpenAI upstream,
 * the standing job through pg-boss, mail through the outbox): a workspace spent to zero is
 * refused at once and found exhausted by the job, its owners told once; a grant lifts it at
 * once and the job tells them it resumed; low balances are warned once per dip; the grace
 * period ends (day by day on a manual clock) with one billing.grace_expired event, never for
 * a workspace that topped up in time, and never with BERTH_SUSPENSION_GRACE_DAYS=0.
 */

type ApiError = InstanceType<typeof OpenAI.APIError>;
type Call = { event: GraceExpiredEvent; at: Date; boundTo: string | null };

const ACTOR = { type: 'system', name: 'test' } as const;
const FREE_MICROS = 50_000;

let app: TestApp;
let fake: FakeOpenAi;
let op: SignedInClient;
const calls: Call[] = [];

beforeAll(async () => {
  fake = await startFakeOpenAi();
  app = await createTestApp({
    config: {
      BERTH_EGRESS_ALLOW: '127.0.0.1',
      BERTH_FREE_CREDITS_USD: '0.05',
      BERTH_LOW_BALANCE_USD: '0.02',
      BERTH_EXHAUSTED_BALANCE_USD: '0.01',
    },
  });
  op = await signUp(app);
  await makeOperator(app, op.userId);
  app.modules.billing.onGraceExpired(async (event, tx) => {
    const res = (await tx.execute(sql`select current_setting('berth.workspace_id', true) as ws`)) as unknown as {
      rows: Array<{ ws: string | null }>;
    };
    calls.push({ event, at: app.clock.now(), boundTo: res.rows[0]?.ws ?? null });
  });
});
afterAll(async () => {
  await app?.close();
  await fake?.close();
});

/** One run of the standing job, as a worker runs it. */
async function runJob(on: TestApp = app) {
  await on.jobs.send(CREDIT_STANDING_JOB, {});
  return on.jobs.drain(CREDIT_STANDING_JOB);
}

async function mails(email: string, tag: string, on: TestApp = app) {
  const all = await on.modules.notifications.service.listOutbox({ limit: 1000 });
  return all.filter((m) => m.to === email && m.tag === tag);
}

async function standingOf(client: TestClient, workspaceId: string): Promise<StandingView> {
  const res = await client.get<StandingView>(`/api/workspaces/${workspaceId}/billing/standing`);
  expect(res.status, res.text).toBe(200);
  return res.body;
}

/** A client with an API key of the workspace's owner (keys outlive sessions as the clock moves). */
async function keyClient(w: GatewayWorkspace, on: TestApp = app): Promise<TestClient> {
  const key = await w.owner.post<{ secret: string }>(`/api/workspaces/${w.workspaceId}/keys`, {
    name: 'standing',
    scopes: ['billing:read', 'workspace:admin'],
  });
  expect(key.status).toBe(201);
  const client = new TestClient(on);
  client.headers = { authorization: `Bearer ${key.body.secret}` };
  return client;
}

/** Takes every credit the workspace has (an operator's correction). */
async function drain(workspaceId: string, on: TestApp = app) {
  const { availableMicros } = await on.modules.billing.ledger.balance(workspaceId);
  await on.modules.billing.service.adjust({
    actor: ACTOR,
    workspaceId,
    deltaMicros: -availableMicros,
    idempotencyKey: `drain-${workspaceId}`,
    memo: 'test: spend everything',
  });
}

const chat = (w: GatewayWorkspace, content: string) =>
  w.openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content }], max_tokens: 1 });

describe('happy', () => {
  it('refuses calls at zero at once, marks the workspace exhausted and tells the owners once; a grant lifts it at once and the job tells them it resumed', async () => {
    const w = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }] });
    expect((await runJob()).failed).toBe(0);
    expect(await standingOf(w.owner, w.workspaceId)).toMatchObject({ state: 'ok', since: null, exhaustedAt: null });

    // The input is estimated at 4 characters a token, the fake counts a word a token: the
    // call costs more than it reserved, and the excess takes what is left, down to zero.
    await chat(w, 'a '.repeat(30_000));
    await app.modules.gateway.service.idle();
    expect(await app.modules.billing.ledger.balance(w.workspaceId)).toMatchObject({
      availableMicros: 0,
      heldMicros: 0,
    });
    const refused = (await chat(w, 'hello').catch((e: unknown) => e)) as ApiError;
    expect(refused.status).toBe(402);
    expect(refused.code).toBe('insufficient_credits');
    await expect(app.modules.billing.canStartWork(w.workspaceId)).rejects.toMatchObject({
      code: 'insufficient_credits',
    });

    const exhaustedAt = app.clock.now().toISOString();
    expect(await runJob()).toMatchObject({ failed: 0 });
    await runJob();
    const standing = await standingOf(w.owner, w.workspaceId);
    expect(standing).toMatchObject({
      state: 'exhausted',
      since: exhaustedAt,
      exhaustedAt,
      exhaustedNotifiedAt: exhaustedAt,
      graceEndsAt: new Date(Date.parse(exhaustedAt) + 30 * DAY).toISOString(),
      graceWarnedAt: null,
      graceExpiredAt: null,
    });
    const told = await mails(w.owner.email, 'billing.exhausted');
    expect(told).toHaveLength(1);
    expect(told[0]?.text).toContain('out of credits');
    expect(told[0]?.text).toContain(`${standing.graceEndsAt?.slice(0, 16).replace('T', ' ')} UTC`);
    expect(told[0]?.text).toContain('Agent configurations are kept');
    const ops = await app.modules.notifications.service.listOutbox({ limit: 1000 });
    expect(ops.filter((m) => m.to === op.email && m.tag.startsWith('billing.'))).toEqual([]);

    // An operator's grant: the very next call and run start succeed, before any job runs.
    app.clock.advance(60_000);
    const grant = await op.post('/api/operator/billing/grant', {
      workspaceId: w.workspaceId,
      amountMicros: 1_000_000,
      idempotencyKey: `lift-${w.workspaceId}`,
    });
    expect(grant.status, grant.text).toBe(201);
    const answer = await chat(w, 'hello again');
    expect(answer.choices[0]?.finish_reason).toBe('length');
    await app.modules.gateway.service.idle();
    await expect(app.modules.billing.canStartWork(w.workspaceId)).resolves.toMatchObject({ heldMicros: 0 });
    expect((await standingOf(w.owner, w.workspaceId)).state).toBe('exhausted');

    const resumedAt = app.clock.now().toISOString();
    await runJob();
    await runJob();
    expect(await standingOf(w.owner, w.workspaceId)).toMatchObject({
      state: 'ok',
      since: resumedAt,
      exhaustedAt,
      resumedAt,
      graceEndsAt: null,
    });
    const resumed = await mails(w.owner.email, 'billing.resumed');
    expect(resumed).toHaveLength(1);
    expect(resumed[0]?.text).toContain('nothing will be deleted');
    expect(await mails(w.owner.email, 'billing.exhausted')).toHaveLength(1);
    expect(await mails(w.owner.email, 'billing.low_balance')).toHaveLength(0);
  });

  it('warns the owners of a low balance once per dip, and lists workspaces by state for operators', async () => {
    const w = await gatewayWorkspace(app);
    const billing = app.modules.billing.service;
    const adjust = (deltaMicros: number, key: string) =>
      billing.adjust({ actor: ACTOR, workspaceId: w.workspaceId, deltaMicros, idempotencyKey: key, memo: 'test' });
    // 0.01 USD left: not below the exhausted threshold (0.01), below the low one (0.02).
    await adjust(-40_000, `low-1-${w.workspaceId}`);
    await runJob();
    await runJob();
    expect(await standingOf(w.owner, w.workspaceId)).toMatchObject({ state: 'low', exhaustedAt: null });
    const warned = await mails(w.owner.email, 'billing.low_balance');
    expect(warned).toHaveLength(1);
    expect(warned[0]?.text).toContain('0.01 USD of credits left');
    const low = await op.get<{ data: StandingView[] }>('/api/operator/billing/standing?state=low');
    expect(low.status).toBe(200);
    expect(low.body.data.map((s) => s.workspaceId)).toContain(w.workspaceId);
    expect(low.body.data.every((s) => s.state === 'low')).toBe(true);

    await adjust(50_000, `up-${w.workspaceId}`);
    await runJob();
    expect(await standingOf(w.owner, w.workspaceId)).toMatchObject({ state: 'ok', lowBalanceNotifiedAt: null });
    const none = await op.get<{ data: StandingView[] }>('/api/operator/billing/standing?state=low');
    expect(none.body.data.map((s) => s.workspaceId)).not.toContain(w.workspaceId);

    // A new dip is warned again; nothing else was sent.
    await adjust(-45_000, `low-2-${w.workspaceId}`);
    await runJob();
    expect(await mails(w.owner.email, 'billing.low_balance')).toHaveLength(2);
    expect(await mails(w.owner.email, 'billing.resumed')).toHaveLength(0);
    expect(await mails(w.owner.email, 'billing.exhausted')).toHaveLength(0);
  });

  it('with BERTH_SUSPENSION_GRACE_DAYS=0 an exhausted workspace never reaches the end of a grace period', async () => {
    const other = await createTestApp({ config: { BERTH_SUSPENSION_GRACE_DAYS: 0 } });
    try {
      const seen: GraceExpiredEvent[] = [];
      other.modules.billing.onGraceExpired(async (event) => {
        seen.push(event);
      });
      const w = await gatewayWorkspace(other);
      const client = await keyClient(w, other);
      await drain(w.workspaceId, other);
      await runJob(other);
      const exhausted = await standingOf(client, w.workspaceId);
      expect(exhausted).toMatchObject({ state: 'exhausted', graceEndsAt: null });
      for (let i = 0; i < 10; i++) {
        other.clock.advance(40 * DAY);
        expect((await runJob(other)).failed).toBe(0);
      }
      expect(seen).toEqual([]);
      expect(await standingOf(client, w.workspaceId)).toMatchObject({
        state: 'exhausted',
        since: exhausted.since,
        graceEndsAt: null,
        graceWarnedAt: null,
        graceExpiredAt: null,
      });
      const told = await mails(w.owner.email, 'billing.exhausted', other);
      expect(told).toHaveLength(1);
      expect(told[0]?.text).not.toContain('deleted');
      expect(await mails(w.owner.email, 'billing.grace_warning', other)).toHaveLength(0);
    } finally {
      await other.close();
    }
  });

  // Moves the shared clock by a month: the last test of this app (sessions expire; keys do not).
  it('ends the grace period once, on its last day, in a transaction, audited; never for a workspace that topped up in time', async () => {
    const a = await gatewayWorkspace(app);
    const b = await gatewayWorkspace(app);
    const c = await gatewayWorkspace(app);
    const [ka, kb, kc] = [await keyClient(a), await keyClient(b), await keyClient(c)];
    // c's first handler run fails: the expiry rolls back with it and happens on the next run.
    let failOnce = true;
    app.modules.billing.onGraceExpired(async (event) => {
      if (event.workspaceId === c.workspaceId && failOnce) {
        failOnce = false;
        throw new Error('deployments are busy');
      }
    });
    for (const w of [a, b, c]) await drain(w.workspaceId);
    const start = app.clock.now();
    await runJob();
    const end = new Date(start.getTime() + 30 * DAY);
    expect(await standingOf(ka, a.workspaceId)).toMatchObject({ state: 'exhausted', graceEndsAt: end.toISOString() });
    const of = (w: GatewayWorkspace) => calls.filter((x) => x.event.workspaceId === w.workspaceId);

    for (let day = 1; day <= 31; day++) {
      app.clock.advance(DAY);
      if (day === 25) {
        // b tops up after the warning: that cancels the end of its grace period.
        await app.modules.billing.ledger.topUp({
          workspaceId: b.workspaceId,
          amountMicros: 5_000_000,
          idempotencyKey: `topup-${b.workspaceId}`,
          actor: ACTOR,
        });
      }
      const run = await runJob();
      if (day === 30) {
        expect(run).toEqual({ completed: 0, failed: 1 });
        expect(await standingOf(kc, c.workspaceId)).toMatchObject({ state: 'exhausted', graceExpiredAt: null });
        // The next run, the same day, ends it.
        expect(await runJob()).toMatchObject({ failed: 0 });
      } else {
        expect(run.failed, `day ${day}`).toBe(0);
      }
      const warnings = await mails(a.owner.email, 'billing.grace_warning');
      expect(warnings, `day ${day}`).toHaveLength(day < 23 ? 0 : 1);
      expect(of(a), `day ${day}`).toHaveLength(day < 30 ? 0 : 1);
    }

    const [expiry] = of(a);
    expect(expiry?.at).toEqual(end);
    expect(expiry?.boundTo).toBe(a.workspaceId);
    expect(expiry?.event).toEqual({
      type: 'billing.grace_expired',
      workspaceId: a.workspaceId,
      exhaustedAt: start,
      graceEndsAt: end,
    });
    // c's handlers ran twice on day 30: the first run rolled back, the second committed.
    expect(of(c).map((x) => x.at)).toEqual([end, end]);
    expect(await standingOf(kc, c.workspaceId)).toMatchObject({ graceExpiredAt: end.toISOString() });
    expect(of(b)).toHaveLength(0);
    expect(await standingOf(ka, a.workspaceId)).toMatchObject({
      state: 'exhausted',
      exhaustedAt: start.toISOString(),
      graceWarnedAt: new Date(start.getTime() + 23 * DAY).toISOString(),
      graceEndsAt: end.toISOString(),
      graceExpiredAt: end.toISOString(),
    });
    expect(await standingOf(kb, b.workspaceId)).toMatchObject({
      state: 'ok',
      graceExpiredAt: null,
      resumedAt: new Date(start.getTime() + 25 * DAY).toISOString(),
    });

    const warning = (await mails(a.owner.email, 'billing.grace_warning'))[0];
    expect(warning?.text).toContain(`${end.toISOString().slice(0, 16).replace('T', ' ')} UTC`);
    for (const w of [a, b, c]) {
      expect(await mails(w.owner.email, 'billing.exhausted')).toHaveLength(1);
      expect(await mails(w.owner.email, 'billing.grace_warning')).toHaveLength(1);
    }
    expect(await mails(b.owner.email, 'billing.resumed')).toHaveLength(1);

    const audit = await ka.get<{ data: Array<{ action: string; actor: { type: string; id: string } }> }>(
      `/api/workspaces/${a.workspaceId}/audit?action=billing.grace_expired`,
    );
    expect(audit.body.data).toHaveLength(1);
    expect(audit.body.data[0]?.actor).toMatchObject({ type: 'system', id: 'credit-standing' });
    const auditC = await kc.get<{ data: unknown[] }>(
      `/api/workspaces/${c.workspaceId}/audit?action=billing.grace_expired`,
    );
    expect(auditC.body.data).toHaveLength(1);
    const auditB = await kb.get<{ data: unknown[] }>(
      `/api/workspaces/${b.workspaceId}/audit?action=billing.grace_expired`,
    );
    expect(auditB.body.data).toHaveLength(0);

    const operator = await logIn(app, op.email, op.password);
    const list = await operator.get<{ data: StandingView[] }>('/api/operator/billing/standing?state=exhausted');
    const ids = list.body.data.map((s) => s.workspaceId);
    expect(ids).toEqual(expect.arrayContaining([a.workspaceId, c.workspaceId]));
    expect(ids).not.toContain(b.workspaceId);
  });
});

describe('errors', () => {
  it('answers 404 for an unknown workspace and for another workspace, 400 for a bad filter', async () => {
    const mine = await gatewayWorkspace(app);
    const theirs = await gatewayWorkspace(app);
    const unknown = await mine.owner.get('/api/workspaces/ws_01JD6F3Q4N8ZK5R2W7XH9YB0C1/billing/standing');
    expect(unknown.status).toBe(404);
    expect(unknown.body.code).toBe('not_found');
    const other = await mine.owner.get(`/api/workspaces/${theirs.workspaceId}/billing/standing`);
    expect(other.status).toBe(404);
    expect(other.body.code).toBe('not_found');
    const operator = await logIn(app, op.email, op.password);
    for (const q of ['state=broke', 'limit=0', 'limit=x', 'other=1']) {
      const res = await operator.get(`/api/operator/billing/standing?${q}`);
      expect(res.status, q).toBe(400);
      expect(res.body.code, q).toBe('validation_failed');
    }
  });

  it('refuses to start work that needs more than is available', async () => {
    const w = await gatewayWorkspace(app);
    const err = await app.modules.billing.canStartWork(w.workspaceId, { minimumMicros: 60_000 }).catch((e) => e);
    expect(err).toBeInstanceOf(AppError);
    expect(err).toMatchObject({ code: 'insufficient_credits', status: 402 });
    await expect(app.modules.billing.canStartWork(w.workspaceId, { minimumMicros: FREE_MICROS })).resolves.toEqual({
      availableMicros: FREE_MICROS,
      heldMicros: 0,
    });
  });
});

describe('security', () => {
  it('shows the operator list to operators only, and a deleted workspace is no longer tracked or mailed', async () => {
    const w = await gatewayWorkspace(app);
    expect((await w.owner.get('/api/operator/billing/standing')).status).toBe(403);
    expect((await new TestClient(app).get('/api/operator/billing/standing')).status).toBe(401);

    await drain(w.workspaceId);
    const ws = await w.owner.get<{ name: string }>(`/api/workspaces/${w.workspaceId}`);
    const del = await w.owner.delete(`/api/workspaces/${w.workspaceId}`, { confirmName: ws.body.name });
    expect(del.status, del.text).toBeLessThan(300);
    await runJob();
    app.clock.advance(40 * DAY);
    await runJob();
    expect(await mails(w.owner.email, 'billing.exhausted')).toHaveLength(0);
    expect(calls.filter((x) => x.event.workspaceId === w.workspaceId)).toHaveLength(0);
    const operator = await logIn(app, op.email, op.password);
    const list = await operator.get<{ data: StandingView[] }>('/api/operator/billing/standing');
    expect(list.body.data.map((s) => s.workspaceId)).not.toContain(w.workspaceId);
    // Nothing of a notice reaches the log.
    expect(app.logs.join('\n')).not.toContain('out of credits');
  });
});
