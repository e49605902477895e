import { randomBytes } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { busPair } from '../../../test/helpers/bus.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { createTestDb, onServerPostgres, type TestDb } from '../../../test/helpers/db.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import type { Bus } from '../../platform/bus/index.ts';
import { manualClock } from '../../platform/clock.ts';
import type { KeyWithSecret } from './keys.schemas.ts';

/**
 * Two replicas of one installation (two apps, one database): a key revoked, rolled or
 * updated on replica A stops working on replica B, whose cache had it, as soon as B hears
 * the bus message; without a message B would keep answering from its cache (the control).
 *
 * PGlite: both apps share the embedded database; each has its own in-process bus, joined by
 * one hub. Server Postgres: each replica has its own LISTEN/NOTIFY connection. With
 * TEST_REDIS_URL: Redis pub/sub.
 */

type Pair = { a: TestApp; b: TestApp; busA: Bus; busB: Bus; testDb: TestDb };

async function pair(kind: 'memory' | 'postgres' | 'redis'): Promise<Pair> {
  const testDb = await createTestDb();
  const clock = manualClock(new Date());
  // PGlite: two in-process buses joined by one hub, like two processes on one broker.
  const [busA, busB] = busPair(kind, testDb);
  const a = await createTestApp({ bus: busA, testDb, clock });
  const b = await createTestApp({ bus: busB, testDb, clock });
  return { a, b, busA, busB, testDb };
}

/** Resolves when `bus` has delivered a message naming `id` (every handler subscribed before it ran). */
async function heard(bus: Bus, id: string): Promise<() => Promise<void>> {
  let resolve: () => void = () => undefined;
  const done = new Promise<void>((r) => {
    resolve = r;
  });
  const stop = await bus.subscribe('berth.keys', (m) => {
    if (m.includes(id)) resolve();
  });
  return async () => {
    await done;
    await stop();
  };
}

function replicaSuite(kind: 'memory' | 'postgres' | 'redis') {
  let p: Pair;
  let owner: SignedInClient;
  let ws: string;

  beforeAll(async () => {
    p = await pair(kind);
    owner = await signUp(p.a, { email: `owner-${randomBytes(4).toString('hex')}@replicas.test`, ip: '10.77.0.1' });
    ws = (await owner.post<{ id: string }>('/api/workspaces', { name: 'Replicas' })).body.id;
  });
  afterAll(async () => {
    if (!p) return;
    await p.b.close();
    await p.a.close();
    await p.busA.close();
    await p.busB.close();
    await p.testDb.drop();
  });

  const onB = (secret: string) => {
    const c = new TestClient(p.b, { origin: null });
    c.headers = { authorization: `Bearer ${secret}` };
    return c.get(`/api/workspaces/${ws}`);
  };
  const create = async () => {
    const res = await owner.post<KeyWithSecret>(`/api/workspaces/${ws}/keys`, {
      name: 'Replica',
      scopes: ['workspace:admin'],
    });
    expect(res.status).toBe(201);
    return res.body;
  };

  it('replica B answers from its cache until told otherwise (the control)', async () => {
    const { secret, key } = await create();
    expect((await onB(secret)).status).toBe(200);
    // Revoked behind B's back: no message, so B's cache still has the key.
    await p.a.db.system((tx) => tx.execute(sql`update api_keys set revoked_at = now() where id = ${key.id}`));
    expect((await onB(secret)).status).toBe(200);
  });

  it('a key revoked on replica A is refused by replica B on the next request', async () => {
    const { secret, key } = await create();
    expect((await onB(secret)).status).toBe(200);
    const wait = await heard(p.busB, key.id);
    const res = await owner.post(`/api/workspaces/${ws}/keys/${key.id}/revoke`);
    expect(res.status).toBe(200);
    await wait();
    const next = await onB(secret);
    expect(next.status).toBe(401);
    expect(next.body.code).toBe('api_key_revoked');
  });

  it('a member removed on replica A: their key is refused by replica B, whose cache had it', async () => {
    const m = await signUp(p.a, { email: `member-${randomBytes(4).toString('hex')}@replicas.test`, ip: '10.77.0.2' });
    const scope = { workspaceId: ws, actor: { type: 'user' as const, userId: owner.userId }, role: 'owner' as const };
    const { token } = await p.a.modules.workspaces.service.invite({ scope, email: m.email, role: 'admin' });
    await p.a.modules.workspaces.service.acceptInvitation({ token, userId: m.userId });
    const created = await m.post<KeyWithSecret>(`/api/workspaces/${ws}/keys`, {
      name: 'Member',
      scopes: ['gateway:invoke'],
    });
    expect(created.status).toBe(201);
    const { secret, key } = created.body;
    const v1OnB = () => {
      const c = new TestClient(p.b, { origin: null });
      c.headers = { authorization: `Bearer ${secret}` };
      return c.get('/v1/models');
    };
    // Authenticated on B (an empty model list: no provider yet), now cached there.
    expect((await v1OnB()).status).toBe(200);

    // Demoted to viewer on A: B drops its cached role and refuses the gateway.
    let wait = await heard(p.busB, key.id);
    expect((await owner.patch(`/api/workspaces/${ws}/members/${m.userId}`, { role: 'viewer' })).status).toBe(200);
    await wait();
    expect((await v1OnB()).status).toBe(403);

    // Removed on A: B refuses the key as revoked.
    wait = await heard(p.busB, key.id);
    expect((await owner.delete(`/api/workspaces/${ws}/members/${m.userId}`)).status).toBe(204);
    await wait();
    const gone = await v1OnB();
    expect(gone.status).toBe(401);
    expect(gone.body).toMatchObject({ error: { code: 'api_key_revoked' } });
  });

  it('a roll with no grace on A ends the old secret on B; a scope change on A applies on B', async () => {
    const { secret, key } = await create();
    expect((await onB(secret)).status).toBe(200);
    let wait = await heard(p.busB, key.id);
    const rolled = await owner.post<KeyWithSecret>(`/api/workspaces/${ws}/keys/${key.id}/roll`, {
      gracePeriodSeconds: 0,
    });
    await wait();
    expect((await onB(secret)).body.code).toBe('api_key_expired');
    expect((await onB(rolled.body.secret)).status).toBe(200);

    wait = await heard(p.busB, key.id);
    await owner.patch(`/api/workspaces/${ws}/keys/${key.id}`, { scopes: ['models:read'] });
    await wait();
    const narrowed = await onB(rolled.body.secret);
    expect(narrowed.status).toBe(403);
    expect(narrowed.body.code).toBe('insufficient_scope');
  });
}

describe('security', () => {
  describe('in-process bus (embedded)', () => {
    replicaSuite('memory');
  });

  describe.skipIf(!onServerPostgres())('Postgres LISTEN/NOTIFY (skipped without TEST_DATABASE_URL)', () => {
    replicaSuite('postgres');
  });

  describe.skipIf(!onServerPostgres() || !inject('redisUrl'))(
    'Redis pub/sub (skipped without TEST_DATABASE_URL and TEST_REDIS_URL)',
    () => {
      replicaSuite('redis');
    },
  );
});
