import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { busPair } from '../../../test/helpers/bus.ts';
import { createTestDb, onServerPostgres, type TestDb } from '../../../test/helpers/db.ts';
import type { Bus } from '../../platform/bus/index.ts';
import { manualClock } from '../../platform/clock.ts';
import { newId } from '../../platform/ids.ts';
import type { VaultContext } from './vault.crypto.ts';
import { VAULT_CHANNEL } from './vault.service.ts';

/**
 * Crypto-shredding across replicas (two apps, one database, one broker): replica B holds a
 * user's data key in memory after a decrypt; when replica A destroys the key, B drops it as
 * soon as it hears the bus message, so B's next decrypt fails instead of answering from its
 * cache (the control: a key destroyed without a message is still served from B's memory).
 *
 * PGlite: two in-process buses joined by one hub. Server Postgres: LISTEN/NOTIFY. With
 * TEST_REDIS_URL: Redis pub/sub.
 */

type Pair = { a: TestApp; b: TestApp; busA: Bus; busB: Bus; gapB(): void; testDb: TestDb };

/** A bus whose reconnects the test announces (`gap()` runs every subscriber's `onGap`). */
function withGaps(inner: Bus): { bus: Bus; gap(): void } {
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

async function pair(kind: 'memory' | 'postgres' | 'redis'): Promise<Pair> {
  const testDb = await createTestDb();
  const clock = manualClock(new Date());
  const [busA, inner] = busPair(kind, testDb);
  const { bus: busB, gap: gapB } = withGaps(inner);
  const a = await createTestApp({ bus: busA, testDb, clock });
  const b = await createTestApp({ bus: busB, testDb, clock });
  return { a, b, busA, busB, gapB, testDb };
}

/** Resolves when `bus` has delivered a destruction naming `id` (every handler subscribed before it ran). */
async function heard(bus: Bus, id: string): Promise<() => Promise<void>> {
  let resolve: () => void = () => undefined;
  const done = new Promise<void>((r) => {
    resolve = r;
  });
  const stop = await bus.subscribe(VAULT_CHANNEL, (m) => {
    if (m.includes(id)) resolve();
  });
  return async () => {
    await done;
    await stop();
  };
}

function ctxOf(kind: 'user' | 'workspace' = 'user'): VaultContext {
  return { owner: { type: kind, id: newId(kind === 'user' ? 'usr' : 'ws') }, record: 'rec_1', field: 'token' };
}

const destroyed = expect.objectContaining({ reason: 'key_destroyed', code: 'not_found' });

function replicaSuite(kind: 'memory' | 'postgres' | 'redis') {
  let p: Pair;

  beforeAll(async () => {
    p = await pair(kind);
  });
  afterAll(async () => {
    if (!p) return;
    await p.b.close();
    await p.a.close();
    await p.busA.close();
    await p.busB.close();
    await p.testDb.drop();
  });

  it('control: without a message, B keeps serving a destroyed key from its memory', async () => {
    const ctx = ctxOf();
    const ct = await p.a.modules.vault.service.encrypt(ctx, 'oauth-token');
    expect(await p.b.modules.vault.service.decryptString(ctx, ct)).toBe('oauth-token');
    // Destroyed behind the vault's back: no one was told.
    await p.a.db.system((tx) =>
      tx.execute(
        sql`update vault_data_keys set wrapped_key = null, destroyed_at = now() where owner_type = 'user' and owner_id = ${ctx.owner.id}`,
      ),
    );
    expect(await p.b.modules.vault.service.decryptString(ctx, ct)).toBe('oauth-token');
    // The key is gone from the database: a replica without it in memory refuses.
    p.a.modules.vault.service.clearCache();
    await expect(p.a.modules.vault.service.decryptString(ctx, ct)).rejects.toThrow(destroyed);
    p.b.modules.vault.service.clearCache();
  });

  it('a key destroyed on A stops decrypting on B at once, from B’s cache too', async () => {
    const ctx = ctxOf();
    const vaultA = p.a.modules.vault.service;
    const vaultB = p.b.modules.vault.service;
    const ct = await vaultA.encrypt(ctx, 'oauth-token');
    expect(await vaultB.decryptString(ctx, ct)).toBe('oauth-token');

    const wait = await heard(p.busB, ctx.owner.id);
    expect(await vaultA.destroyOwnerKey(ctx.owner)).toEqual({ destroyed: 1 });
    await wait();
    await expect(vaultB.decryptString(ctx, ct)).rejects.toThrow(destroyed);
    await expect(vaultA.decryptString(ctx, ct)).rejects.toThrow(destroyed);
    // B does not encrypt under the destroyed key either: a new one, readable on A.
    const fresh = await vaultB.encrypt(ctx, 'new-token');
    expect(await vaultA.decryptString(ctx, fresh)).toBe('new-token');
  });

  it('inside the caller’s transaction (as erasure does), B is told once it commits', async () => {
    const ctx = ctxOf('workspace');
    const vaultA = p.a.modules.vault.service;
    const vaultB = p.b.modules.vault.service;
    const ct = await vaultA.encrypt(ctx, 'provider-key');
    expect(await vaultB.decryptString(ctx, ct)).toBe('provider-key');

    const wait = await heard(p.busB, ctx.owner.id);
    await p.a.db.system((tx) => vaultA.destroyOwnerKey(ctx.owner, tx));
    await wait();
    await expect(vaultB.decryptString(ctx, ct)).rejects.toThrow(destroyed);
  });

  it('a transaction that rolls back tells no one, and the key keeps working everywhere', async () => {
    const ctx = ctxOf();
    const vaultA = p.a.modules.vault.service;
    const vaultB = p.b.modules.vault.service;
    const ct = await vaultA.encrypt(ctx, 'kept');
    expect(await vaultB.decryptString(ctx, ct)).toBe('kept');
    const messages: string[] = [];
    const stop = await p.busB.subscribe(VAULT_CHANNEL, (m) => void messages.push(m));
    await expect(
      p.a.db.system(async (tx) => {
        await vaultA.destroyOwnerKey(ctx.owner, tx);
        throw new Error('rolled back');
      }),
    ).rejects.toThrow('rolled back');
    await stop();
    expect(messages.filter((m) => m.includes(ctx.owner.id))).toEqual([]);
    expect(await vaultB.decryptString(ctx, ct)).toBe('kept');
    expect(await vaultA.decryptString(ctx, ct)).toBe('kept');
  });

  it('after a bus gap B drops every cached key (messages may have been lost)', async () => {
    const ctx = ctxOf();
    const ct = await p.a.modules.vault.service.encrypt(ctx, 'oauth-token');
    expect(await p.b.modules.vault.service.decryptString(ctx, ct)).toBe('oauth-token');
    await p.a.db.system((tx) =>
      tx.execute(
        sql`update vault_data_keys set wrapped_key = null, destroyed_at = now() where owner_type = 'user' and owner_id = ${ctx.owner.id}`,
      ),
    );
    p.gapB();
    await expect(p.b.modules.vault.service.decryptString(ctx, ct)).rejects.toThrow(destroyed);
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
