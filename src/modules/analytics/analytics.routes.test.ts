import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { type GatewayWorkspace, gatewayWorkspace } from '../../../test/helpers/gateway.ts';
import { logIn, makeOperator, type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { DAY, MINUTE, manualClock } from '../../platform/clock.ts';
import { memoryCredits } from '../gateway/index.ts';
import { DELETION_GRACE_DAYS, ERASURE_JOB, EXPORT_BUILD_JOB, type ExportView } from '../privacy/index.ts';
import { featureUses } from './analytics.tables.ts';
import { FEATURE_PATTERN, type TotalsView } from './index.ts';

/**
 * Product analytics through the real app: requests are counted per account, day and
 * feature (the gateway's through the official OpenAI SDK against a fake upstream); an
 * objection stops the counting and deletes what was counted, also against a replica that
 * has not heard of it; the counts are exported, erased, expired by retention, and summed
 * for operators without naming anyone.
 */

const credits = memoryCredits();
// Ten minutes before a UTC midnight, far enough in the past that the clock moved by the
// tests (erasure's grace period, 13 months of retention) stays behind the database's own
// time, which its audit retention checks.
const start = new Date(Date.now() - 500 * DAY);
const clock = manualClock(new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate(), 23, 50)));
const dayAt = (offsetMs: number) => new Date(clock.now().getTime() + offsetMs).toISOString().slice(0, 10);
let fake: FakeOpenAi;
let app: TestApp;
let gw: GatewayWorkspace;

beforeAll(async () => {
  fake = await startFakeOpenAi();
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1' }, credits, clock });
  gw = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }] });
  credits.grant(gw.workspaceId, 1_000_000_000);
});
afterAll(async () => {
  await app?.close();
  await fake?.close();
});

const analytics = () => app.modules.analytics.service;

/** The user's counted rows as `day feature uses`, after writing this replica's counts. */
async function countsOf(userId: string, on: TestApp = app): Promise<string[]> {
  await on.modules.analytics.service.flush();
  const rows = await app.db.system((tx) => tx.select().from(featureUses).where(eq(featureUses.userId, userId)));
  return rows.map((r) => `${r.day} ${r.feature} ${r.uses}`).sort();
}

const chat = () =>
  gw.openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'count me' }] });

async function operator(): Promise<SignedInClient> {
  const op = await signUp(app);
  await makeOperator(app, op.userId);
  return logIn(app, op.email, op.password);
}

describe('happy', () => {
  it('counts each successful request of an account under its route’s feature name, per UTC day', async () => {
    const u = await signUp(app);
    const ws = await u.post<{ id: string }>('/api/workspaces', { name: 'Counted' });
    expect(ws.status).toBe(201);
    await u.post(`/api/workspaces/${ws.body.id}/keys`, { name: 'one', scopes: ['gateway:invoke'] });
    await u.post(`/api/workspaces/${ws.body.id}/keys`, { name: 'two', scopes: ['gateway:invoke'] });
    // Failed requests are not counted.
    expect((await u.get(`/api/workspaces/${ws.body.id}/keys/key_nope`)).status).toBe(404);
    expect((await u.post(`/api/workspaces/${ws.body.id}/keys`, { name: '' })).status).toBe(400);
    const today = dayAt(0);
    // Past midnight (UTC), the next day's row.
    clock.advance(15 * MINUTE);
    const tomorrow = dayAt(0);
    expect(tomorrow).not.toBe(today);
    await u.get(`/api/workspaces/${ws.body.id}/keys`);
    // Signing up is not counted: the request was anonymous.
    expect(await countsOf(u.userId)).toEqual([
      `${today} keys.create 2`,
      `${today} workspaces.create 1`,
      `${tomorrow} keys.list 1`,
    ]);
    // The names carry no ids.
    const text = (await countsOf(u.userId)).join(' ');
    expect(text).not.toContain(ws.body.id);
    expect(text).not.toContain(u.userId);
  });

  it('counts gateway calls made with an API key for the member who owns the key, streaming too', async () => {
    const before = await countsOf(gw.owner.userId);
    expect(before.some((r) => r.includes('gateway.'))).toBe(false);
    await chat();
    const stream = await gw.openai.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'stream me' }],
      stream: true,
    });
    for await (const _ of stream) {
      // drain
    }
    await gw.openai.models.list();
    const day = clock.now().toISOString().slice(0, 10);
    const after = await countsOf(gw.owner.userId);
    expect(after).toContain(`${day} gateway.chat 2`);
    expect(after).toContain(`${day} gateway.models.list 1`);
    // Only metadata: the prompt is nowhere in the table.
    expect(after.join(' ')).not.toContain('count me');
  });

  it('names every route of the app distinctly, by pattern', () => {
    const routes = analytics().namedRoutes();
    expect(routes.length).toBeGreaterThan(100);
    for (const { feature } of routes) expect(feature).toMatch(FEATURE_PATTERN);
    expect(analytics().features()).toEqual(
      expect.arrayContaining(['keys.create', 'gateway.chat', 'audit.get', 'operator.analytics.features.get']),
    );
    // No two routes share a name; no route outside /api and /v1 has one.
    expect(new Set(routes.map((r) => r.feature)).size).toBe(routes.length);
    expect(routes.every((r) => / \/(api|v1)\//.test(r.route))).toBe(true);
    expect(analytics().featureOf('GET', '/healthz')).toBeNull();
    // Every /api and /v1 operation of the API document is named, whichever module registered it.
    const doc = app.http.swagger() as { paths: Record<string, Record<string, unknown>> };
    for (const [path, ops] of Object.entries(doc.paths)) {
      if (!/^\/(api|v1)\//.test(path)) continue;
      for (const method of Object.keys(ops)) {
        const url = path.replace(/\{(\w+)\}/g, ':$1');
        expect(analytics().featureOf(method.toUpperCase(), url), `${method} ${path}`).not.toBeNull();
      }
    }
  });
});

describe('happy: objection', () => {
  it('stops counting an objecting user at once, deletes what was counted, and resumes when they withdraw', async () => {
    const u = await signUp(app);
    const other = await signUp(app);
    await u.get('/api/me');
    await other.get('/api/me');
    const day = clock.now().toISOString().slice(0, 10);
    expect(await countsOf(u.userId)).toEqual([`${day} me.get 1`]);

    // Counted in memory but not yet written: dropped too.
    await u.get('/api/me/sessions');
    const objected = await u.put('/api/me/privacy/objections', { objections: { product_analytics: true } });
    expect(objected.status).toBe(200);
    expect(await countsOf(u.userId)).toEqual([]);
    await u.get('/api/me');
    await u.get('/api/me/sessions');
    // Not even counted in memory: the check is on the request, not only at the write.
    expect(analytics().pending()).toBe(0);
    expect(await countsOf(u.userId)).toEqual([]);
    // Others are still counted.
    expect(await countsOf(other.userId)).toEqual([`${day} me.get 1`]);

    const withdrawn = await u.put('/api/me/privacy/objections', { objections: { product_analytics: false } });
    expect(withdrawn.status).toBe(200);
    await u.get('/api/me');
    // The withdrawal itself is counted: counting resumed with it.
    expect(await countsOf(u.userId)).toEqual([`${day} me.get 1`, `${day} me.privacy.objections.set 1`]);
  });

  it('counts nothing for a user while their processing is restricted', async () => {
    const u = await signUp(app);
    expect((await u.post('/api/me/privacy/restriction')).status).toBe(200);
    await analytics().flush();
    await u.get('/api/me');
    expect(analytics().pending()).toBe(0);
    expect((await u.delete('/api/me/privacy/restriction')).status).toBe(200);
    await u.get('/api/me');
    const day = clock.now().toISOString().slice(0, 10);
    expect(await countsOf(u.userId)).toEqual(expect.arrayContaining([`${day} me.get 1`]));
  });

  it('drops what a replica counted before it heard of the objection instead of writing it back', async () => {
    // A replica of the same installation whose bus never hears this one (a missed message).
    const replica = await createTestApp({ testDb: app.testDb, credits, clock });
    try {
      const u = await signUp(app);
      replica.modules.analytics.service.count(u.userId, 'keys.list');
      await replica.modules.analytics.service.flush();
      replica.modules.analytics.service.count(u.userId, 'keys.get');
      await u.put('/api/me/privacy/objections', { objections: { product_analytics: true } });
      expect(await countsOf(u.userId)).toEqual([]);
      // The replica still believes it may count, and counts in memory...
      expect(replica.modules.privacy.service.consents.objecting(u.userId, 'product_analytics')).toBe(false);
      replica.modules.analytics.service.count(u.userId, 'keys.get');
      // ...but writes nothing: each write checks the users' objections under their lock.
      expect(await countsOf(u.userId, replica)).toEqual([]);
      expect(replica.modules.analytics.service.pending()).toBe(0);
    } finally {
      await replica.close();
    }
  });
});

describe('happy: export, erasure, retention', () => {
  it('exports the user’s counts to them', async () => {
    const u = await signUp(app);
    await u.get('/api/me');
    await analytics().flush();
    const res = await u.post<ExportView>('/api/me/privacy/exports');
    expect(res.status, res.text).toBe(202);
    await app.jobs.drain(EXPORT_BUILD_JOB);
    const mails = await app.modules.notifications.service.listOutbox({ limit: 500 });
    const mail = mails.find((m) => m.to === u.email && m.tag === 'privacy.export_ready');
    const link = /http:\/\/berth\.test(\/api\/privacy\/exports\/\S+)/.exec(mail?.text ?? '')?.[1];
    if (!link) throw new Error('no export link');
    const archive = JSON.parse((await new TestClient(app).get(link)).text) as {
      data: Record<string, Array<Record<string, unknown>>>;
    };
    const day = clock.now().toISOString().slice(0, 10);
    expect(archive.data.feature_uses).toEqual(
      expect.arrayContaining([expect.objectContaining({ day, feature: 'me.get', uses: 1 })]),
    );
    // Only theirs.
    expect(new Set(archive.data.feature_uses?.map((r) => r.user_id))).toEqual(new Set([u.userId]));
  });

  it('erases the counts with the account', async () => {
    const u = await signUp(app);
    const keep = await signUp(app);
    await u.get('/api/me');
    await keep.get('/api/me');
    expect(await countsOf(u.userId)).not.toEqual([]);
    expect((await u.post('/api/me/deletion', { password: u.password })).status).toBe(202);
    await analytics().flush();
    clock.advance(DELETION_GRACE_DAYS * DAY + MINUTE);
    await app.jobs.send(ERASURE_JOB, {});
    await app.jobs.drain(ERASURE_JOB);
    expect(await countsOf(u.userId)).toEqual([]);
    expect(await countsOf(keep.userId)).not.toEqual([]);
    // Counts of the erased account still in a replica's memory are not written back; the others are.
    analytics().count(u.userId, 'me.get');
    analytics().count(keep.userId, 'me.sessions.list');
    expect(await countsOf(u.userId)).toEqual([]);
    expect((await countsOf(keep.userId)).some((r) => r.includes('me.sessions.list 1'))).toBe(true);
  });

  it('deletes counts 13 months after their day, by the clock', async () => {
    const u = await signUp(app);
    await u.get('/api/me');
    const first = clock.now().toISOString().slice(0, 10);
    clock.advance(40 * DAY);
    const again = await logIn(app, u.email, u.password);
    await again.get('/api/me');
    const second = clock.now().toISOString().slice(0, 10);
    expect(await countsOf(u.userId)).toEqual([`${first} me.get 1`, `${second} me.get 1`]);
    // Some days past 13 months after the first day: the first day's rows go, the later ones stay.
    clock.set(new Date(`${first}T00:00:00Z`));
    clock.advance(400 * DAY);
    const run = await app.modules.privacy.service.retention.run({ dryRun: false, trigger: 'operator' });
    expect(run.results.find((r) => r.tableName === 'feature_uses')).toMatchObject({
      retentionClass: 'usage_13_months',
      rule: 'older_than',
      rowsDeleted: expect.any(Number),
    });
    const left = await countsOf(u.userId);
    expect(left.some((r) => r.startsWith(first))).toBe(false);
    expect(left).toContain(`${second} me.get 1`);
  });
});

describe('happy: operators', () => {
  it('sums uses and accounts per feature over a range of days, naming no one', async () => {
    const op = await operator();
    const a = await signUp(app);
    const b = await signUp(app);
    const ws = await a.post<{ id: string }>('/api/workspaces', { name: 'Totals' });
    await a.post(`/api/workspaces/${ws.body.id}/keys`, { name: 'k1', scopes: ['gateway:invoke'] });
    await a.post(`/api/workspaces/${ws.body.id}/keys`, { name: 'k2', scopes: ['gateway:invoke'] });
    const ws2 = await b.post<{ id: string }>('/api/workspaces', { name: 'Totals too' });
    await b.post(`/api/workspaces/${ws2.body.id}/keys`, { name: 'k3', scopes: ['gateway:invoke'] });
    const today = clock.now().toISOString().slice(0, 10);
    const res = await op.get<TotalsView>(`/api/operator/analytics/features?from=${today}&to=${today}`);
    expect(res.status, res.text).toBe(200);
    expect(res.body).toMatchObject({ from: today, to: today });
    expect(res.body.features.find((f) => f.feature === 'keys.create')).toEqual({
      feature: 'keys.create',
      uses: 3,
      accounts: 2,
    });
    // Features nobody used in the range are listed too.
    expect(res.body.features.find((f) => f.feature === 'gateway.embeddings')).toEqual({
      feature: 'gateway.embeddings',
      uses: 0,
      accounts: 0,
    });
    for (const id of [a.userId, b.userId, a.email, b.email, ws.body.id]) expect(res.text).not.toContain(id);
    // The default range is the last 30 days.
    const dflt = await op.get<TotalsView>('/api/operator/analytics/features');
    expect(dflt.body.to).toBe(today);
    expect(new Date(`${dflt.body.to}T00:00:00Z`).getTime() - new Date(`${dflt.body.from}T00:00:00Z`).getTime()).toBe(
      29 * DAY,
    );
  });
});

describe('errors', () => {
  it('refuses bad ranges with 400', async () => {
    const op = await operator();
    for (const q of [
      'from=2027-02-30',
      'to=yesterday',
      'from=2027-03-02&to=2027-03-01',
      'from=2020-01-01&to=2027-01-01',
    ]) {
      const res = await op.get(`/api/operator/analytics/features?${q}`);
      expect(res.status, q).toBe(400);
      expect(res.body.code, q).toBe('invalid_date_range');
    }
    expect((await op.get('/api/operator/analytics/features?who=me')).status).toBe(400);
  });
});

describe('security', () => {
  it('is for platform operators only: members and anonymous callers are refused', async () => {
    const member = await signUp(app);
    const res = await member.get('/api/operator/analytics/features');
    expect(res.status).toBe(403);
    expect(res.body.code).toBe('forbidden');
    expect((await new TestClient(app).get('/api/operator/analytics/features')).status).toBe(401);
    // Nor can an API key, even an operator's.
    await makeOperator(app, gw.owner.userId);
    const withKey = await new TestClient(app).get('/api/operator/analytics/features', undefined);
    expect(withKey.status).toBe(401);
    const keyed = await new TestClient(app).request('GET', '/api/operator/analytics/features', undefined, {
      authorization: `Bearer ${gw.secret}`,
    });
    expect([401, 403]).toContain(keyed.status);
  });

  it('counts no anonymous request', async () => {
    const before = await app.db.system((tx) => tx.select().from(featureUses));
    await new TestClient(app).get('/api/privacy/policy');
    await new TestClient(app).get('/api/subprocessors');
    await analytics().flush();
    const after = await app.db.system((tx) => tx.select().from(featureUses));
    expect(after).toEqual(before);
  });
});
