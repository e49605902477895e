import pg from 'pg';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { serverUrl } from '../../../test/helpers/db.ts';
import { createLogger } from '../logger.ts';
import { type Bus, createBus, memoryBus, memoryHub, postgresBus, redisBus } from './index.ts';

const logger = createLogger({ level: 'silent' });
const opened: Bus[] = [];
afterEach(async () => {
  for (const b of opened.splice(0)) await b.close();
});

function track(b: Bus): Bus {
  opened.push(b);
  return b;
}

/** Resolves with the next `count` messages `bus` delivers on `channel`. */
async function collect(bus: Bus, channel: string, count: number) {
  const got: string[] = [];
  let resolve: (v: string[]) => void = () => undefined;
  const done = new Promise<string[]>((r) => {
    resolve = r;
  });
  const stop = await bus.subscribe(channel, (m) => {
    got.push(m);
    if (got.length === count) resolve(got);
  });
  return { done, stop };
}

function until(check: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const tick = () => (check() ? resolve() : setTimeout(tick, 10));
    tick();
  });
}

const pgUrl = serverUrl();
const redisUrl = inject('redisUrl');

/** The same contract for every implementation: two processes' buses, one broker. */
function contract(makePair: () => { a: Bus; b: Bus }) {
  const make2 = () => {
    const p = makePair();
    track(p.a);
    if (p.b !== p.a) track(p.b);
    return p;
  };
  it('delivers a message to every subscriber, the publisher included, in order', async () => {
    const { a, b } = make2();
    const onA = await collect(a, 'berth.test', 2);
    const onB = await collect(b, 'berth.test', 2);
    await a.publish('berth.test', 'one');
    await b.publish('berth.test', 'two');
    expect(await onA.done).toEqual(['one', 'two']);
    expect(await onB.done).toEqual(['one', 'two']);
  });

  it('stops delivering after unsubscribe, and keeps channels apart', async () => {
    const { a, b } = make2();
    const seen: string[] = [];
    const stop = await b.subscribe('berth.test', (m) => seen.push(m));
    const other = await collect(b, 'berth.other', 1);
    await stop();
    await a.publish('berth.test', 'ignored');
    await a.publish('berth.other', 'kept');
    expect(await other.done).toEqual(['kept']);
    expect(seen).toEqual([]);
  });

  it('refuses bad channel names and oversized messages', async () => {
    const { a } = make2();
    await expect(a.publish('Bad Channel', 'x')).rejects.toThrow(/channel/);
    await expect(a.publish('berth.test', 'x'.repeat(8000))).rejects.toThrow(/too large/);
    await expect(a.subscribe('drop table', () => undefined)).rejects.toThrow(/channel/);
  });

  it('a failing handler does not stop the others', async () => {
    const { a } = make2();
    await a.subscribe('berth.test', () => {
      throw new Error('boom');
    });
    const ok = await collect(a, 'berth.test', 1);
    await a.publish('berth.test', 'still here');
    expect(await ok.done).toEqual(['still here']);
  });
}

describe('happy', () => {
  describe('in-process', () => {
    contract(() => {
      const hub = memoryHub();
      return { a: memoryBus({ hub }), b: memoryBus({ hub }) };
    });

    it('keeps buses on different hubs apart, and closing one bus leaves the others on its hub working', async () => {
      const hub = memoryHub();
      const a = track(memoryBus({ hub }));
      const b = track(memoryBus({ hub }));
      const elsewhere = track(memoryBus());
      const far: string[] = [];
      await elsewhere.subscribe('berth.test', (m) => far.push(m));
      const gone: string[] = [];
      await a.subscribe('berth.test', (m) => gone.push(m));
      const onB = await collect(b, 'berth.test', 1);
      await a.close();
      await expect(a.publish('berth.test', 'x')).rejects.toThrow(/closed/);
      const c = track(memoryBus({ hub }));
      await c.publish('berth.test', 'after a closed');
      expect(await onB.done).toEqual(['after a closed']);
      expect(gone).toEqual([]);
      expect(far).toEqual([]);
    });

    it('is what createBus gives an embedded installation', () => {
      const bus = track(createBus({}, logger));
      expect(bus.kind).toBe('memory');
    });
  });

  describe.skipIf(!pgUrl)('Postgres LISTEN/NOTIFY (skipped without TEST_DATABASE_URL)', () => {
    contract(() => ({ a: postgresBus({ url: pgUrl ?? '', logger }), b: postgresBus({ url: pgUrl ?? '', logger }) }));

    it('reconnects after its connection is killed, listens again, and reports the gap', async () => {
      const name = `berth-bus-test-${process.pid}-${Date.now()}`;
      const bus = track(postgresBus({ url: pgUrl ?? '', logger, reconnectMs: 20, name }));
      const peer = track(postgresBus({ url: pgUrl ?? '', logger }));
      let gaps = 0;
      const seen: string[] = [];
      await bus.subscribe(
        'berth.gap',
        (m) => seen.push(m),
        () => gaps++,
      );
      const admin = new pg.Client({ connectionString: pgUrl ?? '' });
      await admin.connect();
      try {
        const killed = await admin.query(
          'select pg_terminate_backend(pid) as ok from pg_stat_activity where application_name = $1',
          [name],
        );
        expect(killed.rows).toEqual([{ ok: true }]);
      } finally {
        await admin.end();
      }
      await until(() => gaps === 1);
      await peer.publish('berth.gap', 'after');
      await until(() => seen.includes('after'));
      expect(gaps).toBe(1);
    });

    it('is what createBus gives server Postgres without Redis', () => {
      expect(track(createBus({ DATABASE_URL: pgUrl ?? '' }, logger)).kind).toBe('postgres');
    });
  });

  describe.skipIf(!redisUrl)('Redis pub/sub (skipped without TEST_REDIS_URL)', () => {
    contract(() => ({ a: redisBus({ url: redisUrl ?? '', logger }), b: redisBus({ url: redisUrl ?? '', logger }) }));

    it('reports the gap after its connection is killed and keeps delivering', async () => {
      const name = `berth-bus-test-${process.pid}-${Date.now()}`;
      const bus = track(redisBus({ url: redisUrl ?? '', logger, name }));
      const peer = track(redisBus({ url: redisUrl ?? '', logger }));
      let gaps = 0;
      const seen: string[] = [];
      await bus.subscribe(
        'berth.gap',
        (m) => seen.push(m),
        () => gaps++,
      );
      const { Redis } = await import('ioredis');
      const admin = new Redis(redisUrl ?? '');
      try {
        const list = String(await admin.client('LIST'));
        const ids = list
          .split('\n')
          .filter((l) => l.includes(` name=${name} `))
          .map((l) => /\bid=(\d+)/.exec(l)?.[1] ?? '');
        expect(ids.length).toBeGreaterThan(0);
        for (const id of ids) await admin.client('KILL', 'ID', id);
      } finally {
        admin.disconnect();
      }
      await until(() => gaps >= 1);
      await until(() => {
        void peer.publish('berth.gap', 'after');
        return seen.includes('after');
      });
      expect(gaps).toBeGreaterThanOrEqual(1);
    });

    it('is what createBus gives when REDIS_URL is set', () => {
      expect(track(createBus({ REDIS_URL: redisUrl ?? '', DATABASE_URL: pgUrl ?? undefined }, logger)).kind).toBe(
        'redis',
      );
    });
  });
});
