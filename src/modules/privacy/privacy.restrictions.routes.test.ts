import { sql } from 'drizzle-orm';
import type OpenAI from 'openai';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { type GatewayWorkspace, gatewayWorkspace, listen, openAiClient } from '../../../test/helpers/gateway.ts';
import { signUp } from '../../../test/helpers/identity.ts';
import { type Bus, memoryBus, memoryHub } from '../../platform/bus/index.ts';
import { manualClock } from '../../platform/clock.ts';
import { AppError } from '../../platform/errors.ts';
import { memoryCredits } from '../gateway/index.ts';
import type { RequestView, RestrictionView } from './index.ts';
import { RESTRICTIONS_REFRESH_MS } from './privacy.restrictions.ts';

/**
 * Restriction of processing through the real app: the signed-in user restricts and lifts
 * it; meanwhile the gateway refuses their API keys (driven by the official OpenAI SDK
 * against a fake upstream) on this replica and on another one that hears the bus, and
 * serves them again once lifted; their data and keys stay intact.
 */

type ApiError = InstanceType<typeof OpenAI.APIError>;

const BALANCE = 1_000_000_000;
const credits = memoryCredits();
const clock = manualClock(new Date());
const hub = memoryHub();
const buses: Bus[] = [];

let fake: FakeOpenAi;
let app: TestApp;
/** A second replica of the same installation (same database, a bus on the same hub). */
let replica: TestApp;
let gw: GatewayWorkspace;

function busOnHub(): Bus {
  const bus = memoryBus({ hub });
  buses.push(bus);
  return bus;
}

/** A bus on the hub whose reconnects the test announces (`gap()` runs every subscriber's `onGap`). */
function gappyBusOnHub(): { bus: Bus; gap(): void } {
  const inner = busOnHub();
  const gaps: Array<() => void> = [];
  return {
    bus: {
      kind: inner.kind,
      publish: (channel, message) => inner.publish(channel, message),
      subscribe: (channel, handler, onGap) => {
        if (onGap) gaps.push(onGap);
        return inner.subscribe(channel, handler, onGap);
      },
      close: () => inner.close(),
    },
    gap: () => {
      for (const g of gaps) g();
    },
  };
}

/** Runs DDL as the database's owner (the app's own role may not alter tables on server Postgres). */
async function asOwner(statement: string) {
  if (!app.testDb.url) {
    await app.db.query(statement);
    return;
  }
  const c = new pg.Client({ connectionString: app.testDb.url });
  await c.connect();
  try {
    await c.query(statement);
  } finally {
    await c.end();
  }
}

const chat = (client: OpenAI) =>
  client.chat.completions
    .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hello' }] })
    .catch((e: unknown) => e);

function expectRefused(answer: unknown) {
  const err = answer as ApiError;
  expect(err.status).toBe(403);
  expect(err.code).toBe('processing_restricted');
}

/** The platform chain's events about these restrictions (user ids in events may be pseudonyms), in order. */
async function restrictionEvents(restrictionIds: string[]): Promise<string[]> {
  // Audit events are visible only to system work (row-level security on server Postgres).
  const rows = await app.db.system(async (tx) => {
    const res = (await tx.execute(
      sql`select action from audit_events where chain = 'platform' and diff->>'restrictionId' in (${sql.join(
        restrictionIds.map((id) => sql`${id}`),
        sql`, `,
      )}) order by seq`,
    )) as unknown as { rows: Array<{ action: string }> };
    return res.rows;
  });
  return rows.map((r) => r.action);
}

function expectServed(answer: unknown) {
  expect(answer).toMatchObject({ choices: [{ message: { content: 'echo: hello' } }] });
}

beforeAll(async () => {
  fake = await startFakeOpenAi();
  const config = { BERTH_EGRESS_ALLOW: '127.0.0.1' };
  app = await createTestApp({ config, credits, clock, bus: busOnHub() });
  replica = await createTestApp({ config, credits, clock, bus: busOnHub(), testDb: app.testDb });
  gw = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }] });
  credits.grant(gw.workspaceId, BALANCE);
});
afterAll(async () => {
  await replica?.close();
  await app?.close();
  for (const b of buses) await b.close();
  await fake?.close();
});

describe('happy', () => {
  it('refuses the restricted user’s keys on every replica, keeps their data, and serves them again once lifted', async () => {
    const onReplica = openAiClient(await listen(replica), gw.secret);
    expectServed(await chat(gw.openai));
    expectServed(await chat(onReplica));
    // A colleague in the same workspace is not restricted.
    const colleague = await signUp(app);
    const { token } = await app.modules.workspaces.service.invite({
      scope: { workspaceId: gw.workspaceId, actor: { type: 'user', userId: gw.owner.userId }, role: 'owner' },
      email: colleague.email,
      role: 'member',
    });
    await app.modules.workspaces.service.acceptInvitation({ token, userId: colleague.userId });
    const theirKey = await colleague.post<{ secret: string }>(`/api/workspaces/${gw.workspaceId}/keys`, {
      name: 'colleague',
      scopes: ['gateway:invoke'],
    });
    expect(theirKey.status).toBe(201);
    const colleagueClient = openAiClient(await listen(app), theirKey.body.secret);

    const restricted = await gw.owner.post<RestrictionView>('/api/me/privacy/restriction');
    expect(restricted.status).toBe(200);
    expect(restricted.body).toMatchObject({ restricted: true, since: clock.now().toISOString() });
    expect(restricted.body.history).toHaveLength(1);

    expectRefused(await chat(gw.openai));
    expectRefused(await chat(onReplica));
    // Every endpoint of the gateway: embeddings too.
    const emb = await gw.openai.embeddings
      .create({ model: 'text-embedding-3-small', input: 'x' })
      .catch((e: unknown) => e);
    expect((emb as ApiError).code).toBe('processing_restricted');
    expectServed(await chat(colleagueClient));
    // The agents' hook says the same.
    expect(() => app.modules.privacy.service.assertProcessingAllowed(gw.owner.userId)).toThrow(AppError);
    expect(() => replica.modules.privacy.service.assertProcessingAllowed(gw.owner.userId)).toThrow(
      expect.objectContaining({ code: 'processing_restricted', status: 403 }),
    );
    expect(() => app.modules.privacy.service.assertProcessingAllowed(colleague.userId)).not.toThrow();

    // Data intact: the key is not revoked and the workspace's data stays readable.
    const keys = await gw.owner.get<{ data: Array<{ id: string; status: string }> }>(
      `/api/workspaces/${gw.workspaceId}/keys`,
    );
    expect(keys.status).toBe(200);
    expect(keys.body.data.find((k) => k.id === gw.keyId)?.status).toBe('active');
    expect((await gw.owner.get(`/api/workspaces/${gw.workspaceId}/usage`)).status).toBe(200);
    expect((await gw.owner.get('/api/me')).status).toBe(200);

    clock.advance(60_000);
    const lifted = await gw.owner.delete<RestrictionView>('/api/me/privacy/restriction');
    expect(lifted.status).toBe(200);
    expect(lifted.body).toMatchObject({ restricted: false, since: null });
    expect(lifted.body.history).toEqual([
      expect.objectContaining({ restrictedAt: restricted.body.since, liftedAt: clock.now().toISOString() }),
    ]);
    expectServed(await chat(gw.openai));
    expectServed(await chat(onReplica));

    // Tracked as two restriction requests, answered at once, and audited on the platform chain.
    const requests = await gw.owner.get<{ data: RequestView[] }>('/api/me/privacy/requests');
    expect(requests.body.data.map((r) => [r.type, r.status])).toEqual([
      ['restriction', 'completed'],
      ['restriction', 'completed'],
    ]);
    const events = await restrictionEvents(lifted.body.history.map((h) => h.id));
    expect(events).toEqual(['privacy.restricted', 'privacy.unrestricted']);
  });

  it('is loaded at start, and re-read within a minute by a replica that missed the message', async () => {
    const w = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }] });
    credits.grant(w.workspaceId, BALANCE);
    // A replica on another broker: it hears nothing from this one.
    const deaf = await createTestApp({
      config: { BERTH_EGRESS_ALLOW: '127.0.0.1' },
      credits,
      clock,
      testDb: app.testDb,
    });
    try {
      const onDeaf = openAiClient(await listen(deaf), w.secret);
      expectServed(await chat(onDeaf));
      expect((await w.owner.post('/api/me/privacy/restriction')).status).toBe(200);
      // Until its set is a minute old it still serves (the documented bound)...
      expectServed(await chat(onDeaf));
      clock.advance(RESTRICTIONS_REFRESH_MS + 1);
      // ...then the next check re-reads the set in the background, and calls are refused.
      deaf.modules.privacy.service.restrictions.processingAllowed(w.owner.userId);
      await deaf.modules.privacy.service.restrictions.reload();
      expectRefused(await chat(onDeaf));

      // A replica that starts now loads the restriction before it serves.
      const fresh = await createTestApp({
        config: { BERTH_EGRESS_ALLOW: '127.0.0.1' },
        credits,
        clock,
        testDb: app.testDb,
      });
      try {
        expectRefused(await chat(openAiClient(await listen(fresh), w.secret)));
      } finally {
        await fresh.close();
      }
    } finally {
      await deaf.close();
    }
    expect((await w.owner.delete('/api/me/privacy/restriction')).status).toBe(200);
    expectServed(await chat(w.openai));
  });
});

describe('errors', () => {
  it('answers 409 already_restricted and not_restricted, changing nothing', async () => {
    const u = await signUp(app);
    const notYet = await u.delete('/api/me/privacy/restriction');
    expect(notYet.status).toBe(409);
    expect(notYet.body.code).toBe('not_restricted');
    expect((await u.post('/api/me/privacy/restriction')).status).toBe(200);
    const twice = await u.post('/api/me/privacy/restriction');
    expect(twice.status).toBe(409);
    expect(twice.body.code).toBe('already_restricted');
    const state = await u.get<RestrictionView>('/api/me/privacy/restriction');
    expect(state.body.restricted).toBe(true);
    expect(state.body.history).toHaveLength(1);
    const requests = await u.get<{ data: RequestView[] }>('/api/me/privacy/requests');
    expect(requests.body.data).toHaveLength(1);
    const events = await restrictionEvents(state.body.history.map((h) => h.id));
    expect(events).toEqual(['privacy.restricted']);
  });

  it('fails closed: while the restricted users cannot be re-read after a bus gap, the gateway answers 503', async () => {
    const w = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }] });
    credits.grant(w.workspaceId, BALANCE);
    const gappy = gappyBusOnHub();
    const third = await createTestApp({
      config: { BERTH_EGRESS_ALLOW: '127.0.0.1' },
      credits,
      clock,
      bus: gappy.bus,
      testDb: app.testDb,
    });
    try {
      const onThird = openAiClient(await listen(third), w.secret);
      expectServed(await chat(onThird));
      // The table cannot be read for a while (the database is unreachable from this replica's view).
      await asOwner('alter table privacy_restrictions rename to privacy_restrictions_away');
      try {
        gappy.gap();
        await third.modules.privacy.service.restrictions.reload();
        const refused = (await chat(onThird)) as ApiError;
        expect(refused.status).toBe(503);
        expect(refused.code).toBe('restrictions_unavailable');
        expect(() => third.modules.privacy.service.assertProcessingAllowed(w.owner.userId)).toThrow(
          expect.objectContaining({ code: 'restrictions_unavailable', status: 503 }),
        );
      } finally {
        await asOwner('alter table privacy_restrictions_away rename to privacy_restrictions');
      }
      await third.modules.privacy.service.restrictions.reload();
      expectServed(await chat(onThird));
    } finally {
      await third.close();
    }
  });
});

describe('security', () => {
  it('needs a signed-in session: 401 anonymous, 403 with an API key, and CSRF on changes', async () => {
    const anon = new TestClient(app);
    expect((await anon.get('/api/me/privacy/restriction')).status).toBe(401);
    expect((await anon.post('/api/me/privacy/restriction')).status).toBe(401);
    expect((await anon.delete('/api/me/privacy/restriction')).status).toBe(401);
    const withKey = new TestClient(app, { origin: null });
    withKey.headers.authorization = `Bearer ${gw.secret}`;
    // API keys never reach account routes: privacy rights are the account's.
    const byKey = await withKey.post('/api/me/privacy/restriction');
    expect(byKey.status).toBe(403);
    expect(byKey.body.code).toBe('forbidden');
    const noCsrf = await signUp(app);
    noCsrf.csrfToken = null;
    const refused = await noCsrf.post('/api/me/privacy/restriction');
    expect(refused.status).toBe(403);
    expect(refused.body.code).toBe('csrf_failed');
    expect(app.modules.privacy.service.restrictions.processingAllowed(gw.owner.userId)).toBe(true);
    expect(app.modules.privacy.service.restrictions.processingAllowed(noCsrf.userId)).toBe(true);
  });
});
