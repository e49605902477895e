import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createTestDb, onServerPostgres, type TestDb } from '../../../test/helpers/db.ts';
import { AppError } from '../errors.ts';
import { createLogger } from '../logger.ts';
import { isJobPartition, jobsDataMap } from './jobs.datamap.ts';
import { createJobs, type PgBossJobs } from './pgboss.ts';

let t: TestDb;
const logs: string[] = [];
const logger = createLogger({ level: 'debug', destination: { write: (l: string) => logs.push(l) } });
const opened: PgBossJobs[] = [];

function jobs(): PgBossJobs {
  const j = createJobs({ db: t.db, logger, ownerUrl: t.url ?? undefined, pollingIntervalSeconds: 0.5 });
  opened.push(j);
  return j;
}

/** A promise with its resolve function, to hold a handler open until the test releases it. */
function gate() {
  let open: () => void = () => undefined;
  const promise = new Promise<void>((r) => {
    open = r;
  });
  return { promise, open };
}

beforeAll(async () => {
  t = await createTestDb();
});
afterEach(async () => {
  await Promise.all(opened.splice(0).map((j) => j.stop()));
});
afterAll(async () => {
  await t.drop();
});

describe('happy', () => {
  it('a worker handles a sent job', async () => {
    const j = jobs();
    const seen: string[] = [];
    await j.register<{ workspaceId: string }>('test.hello', async (data, job) => {
      seen.push(`${data.workspaceId}:${job.name}`);
    });
    await j.start();
    const id = await j.send('test.hello', { workspaceId: 'ws_1' });
    expect(id).toEqual(expect.any(String));
    await vi.waitFor(() => expect(seen).toEqual(['ws_1:test.hello']), { timeout: 15_000, interval: 50 });
    await vi.waitFor(async () => expect((await j.job('test.hello', id ?? ''))?.state).toBe('completed'), {
      timeout: 15_000,
    });
  });

  it('drain runs queued jobs through their handlers, including jobs the handlers send', async () => {
    const j = jobs();
    const seen: number[] = [];
    await j.register<{ n: number }>('test.chain', async ({ n }) => {
      seen.push(n);
      if (n < 3) await j.send('test.chain', { n: n + 1 });
    });
    await j.send('test.chain', { n: 1 });
    expect(await j.drain()).toEqual({ completed: 3, failed: 0 });
    expect(seen).toEqual([1, 2, 3]);
    expect(await j.drain('test.chain')).toEqual({ completed: 0, failed: 0 });
  });

  it('drain runs a job sent just before it, even within the same tick of the database clock', async () => {
    // PGlite's now() moves in whole milliseconds, and a job is due once start_after < now():
    // sent and fetched in the same millisecond, it used to be left for a later drain.
    const j = jobs();
    let handled = 0;
    await j.register('test.now', async () => {
      handled++;
    });
    for (let i = 0; i < 100; i++) {
      await j.send('test.now', { i });
      expect(await j.drain('test.now'), `send ${i}`).toEqual({ completed: 1, failed: 0 });
    }
    expect(handled).toBe(100);
  });

  it('a job delayed with startAfter waits, unless drained with includeDelayed', async () => {
    const j = jobs();
    const seen: string[] = [];
    await j.register<{ k: string }>('test.later', async ({ k }) => {
      seen.push(k);
    });
    await j.send('test.later', { k: 'later' }, { startAfter: new Date(Date.now() + 3_600_000) });
    expect(await j.drain('test.later')).toEqual({ completed: 0, failed: 0 });
    expect(await j.drain('test.later', { includeDelayed: true })).toEqual({ completed: 1, failed: 0 });
    expect(seen).toEqual(['later']);
  });

  it('a failing job is retried until it succeeds', async () => {
    const j = jobs();
    let calls = 0;
    await j.register(
      'test.flaky',
      async () => {
        calls += 1;
        if (calls < 3) throw new Error('upstream unavailable');
      },
      { retryLimit: 3, retryDelaySeconds: 0, retryBackoff: false },
    );
    await j.start();
    const id = await j.send('test.flaky', {});
    await vi.waitFor(async () => expect((await j.job('test.flaky', id ?? ''))?.state).toBe('completed'), {
      timeout: 20_000,
      interval: 100,
    });
    expect(calls).toBe(3);
  });

  it('a job that keeps failing stops after its retry limit (drain)', async () => {
    const j = jobs();
    let calls = 0;
    await j.register(
      'test.broken',
      async () => {
        calls += 1;
        throw new AppError('unavailable', 'still down');
      },
      { retryDelaySeconds: 60 },
    );
    const id = await j.send('test.broken', {}, { retryLimit: 2 });
    expect(await j.drain('test.broken', { includeDelayed: true })).toEqual({ completed: 0, failed: 3 });
    expect(calls).toBe(3);
    const job = await j.job('test.broken', id ?? '');
    expect(job).toMatchObject({ state: 'failed', retryCount: 2 });
  });

  it('stop() waits for an in-flight handler to finish', async () => {
    const j = jobs();
    const events: string[] = [];
    const started = gate();
    const release = gate();
    await j.register('test.slow', async () => {
      events.push('handler started');
      started.open();
      await release.promise;
      events.push('handler finished');
    });
    await j.start();
    const id = await j.send('test.slow', {});
    await started.promise;
    const stopped = j.stop().then(() => events.push('stopped'));
    // Give a stop that did not wait every chance to finish while the handler is held open.
    await Promise.race([stopped, new Promise((r) => setTimeout(r, 1500))]);
    expect(events).toEqual(['handler started']);
    release.open();
    await stopped;
    expect(events).toEqual(['handler started', 'handler finished', 'stopped']);
    const again = jobs();
    expect((await again.job('test.slow', id ?? ''))?.state).toBe('completed');
  });

  it('a singleton key keeps one queued job per key', async () => {
    const j = jobs();
    let runs = 0;
    await j.register('test.single', async () => {
      runs += 1;
    });
    const first = await j.send('test.single', { workspaceId: 'ws_1' }, { singletonKey: 'ws_1' });
    expect(first).toEqual(expect.any(String));
    expect(await j.send('test.single', { workspaceId: 'ws_1' }, { singletonKey: 'ws_1' })).toBeNull();
    expect(await j.send('test.single', { workspaceId: 'ws_2' }, { singletonKey: 'ws_2' })).toEqual(expect.any(String));
    await j.drain('test.single');
    expect(runs).toBe(2);
    expect(await j.send('test.single', { workspaceId: 'ws_1' }, { singletonKey: 'ws_1' })).toEqual(expect.any(String));
  });

  it('schedule stores a cron schedule for the queue', async () => {
    const j = jobs();
    await j.register('test.nightly', async () => undefined);
    await j.schedule('test.nightly', '0 3 * * *', { kind: 'retention' });
    expect(await j.schedules()).toContainEqual({
      name: 'test.nightly',
      cron: '0 3 * * *',
      data: { kind: 'retention' },
    });
  });
});

describe('schedules', () => {
  it('a schedule declared before start is stored when the worker starts', async () => {
    const j = jobs();
    await j.register('test.hourly', async () => undefined);
    await j.schedule('test.hourly', '17 * * * *');
    await j.start();
    expect(await jobs().schedules()).toContainEqual({ name: 'test.hourly', cron: '17 * * * *', data: {} });
  });
});

describe('data map', () => {
  it('classifies every column of every pg-boss table, and nothing else', async () => {
    const j = jobs();
    await j.register('test.map', async () => undefined);
    await j.send('test.map', {});
    // pg_catalog, not information_schema: the application role has no privileges on pgboss.
    const rows = await t.db.query<{ table_schema: string; table_name: string; column_name: string }>(
      `select n.nspname as table_schema, c.relname as table_name, a.attname as column_name
         from pg_attribute a
         join pg_class c on c.oid = a.attrelid
         join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'pgboss' and c.relkind in ('r', 'p') and a.attnum > 0 and not a.attisdropped`,
    );
    const live = rows
      .filter((r) => !isJobPartition(r.table_schema, r.table_name))
      .map((r) => `pgboss.${r.table_name}.${r.column_name}`)
      .sort();
    const mapped = jobsDataMap.flatMap((e) => Object.keys(e.columns).map((c) => `${e.table}.${c}`)).sort();
    expect(live).toEqual(mapped);
    // The queue's partition exists and has exactly the job table's columns.
    const partitions = new Set(
      rows.filter((r) => isJobPartition(r.table_schema, r.table_name)).map((r) => r.table_name),
    );
    expect(partitions.size).toBeGreaterThan(0);
  });
});

describe('errors', () => {
  it('drain refuses a queue without a handler', async () => {
    await expect(jobs().drain('test.nobody')).rejects.toThrow(/no handler registered/);
  });

  it('a queue takes one handler', async () => {
    const j = jobs();
    await j.register('test.once', async () => undefined);
    await expect(j.register('test.once', async () => undefined)).rejects.toThrow(/already has a handler/);
  });
});

describe('security', () => {
  it('job payloads and handler error messages are neither logged nor stored with the failure', async () => {
    const j = jobs();
    const marker = `canary-${Math.random().toString(36).slice(2)}`;
    await j.register<{ note: string }>('test.leak', async ({ note }) => {
      throw new Error(`failed on ${note} ${marker}-message`);
    });
    const id = await j.send('test.leak', { note: marker }, { retryLimit: 0 });
    expect(await j.drain('test.leak')).toEqual({ completed: 0, failed: 1 });
    const job = await j.job('test.leak', id ?? '');
    expect(JSON.stringify(job?.output)).not.toContain(marker);
    expect(JSON.stringify(job?.output)).toContain('job handler failed (Error)');
    expect(logs.some((l) => l.includes('job failed') && l.includes(id ?? '-'))).toBe(true);
    expect(logs.join('\n')).not.toContain(marker);
  });
});

describe.skipIf(!onServerPostgres())('concurrency (server Postgres only; PGlite is a single connection)', () => {
  it('two workers on one database run each of 50 jobs exactly once', async () => {
    const a = jobs();
    const b = jobs();
    const seen: number[] = [];
    const byWorker = { a: 0, b: 0 };
    const handler = (w: 'a' | 'b') => async (data: { n: number }) => {
      seen.push(data.n);
      byWorker[w] += 1;
      await new Promise((r) => setTimeout(r, 5));
    };
    await a.register('test.shared', handler('a'), { concurrency: 3 });
    await b.register('test.shared', handler('b'), { concurrency: 3 });
    await Promise.all([a.start(), b.start()]);
    await Promise.all(Array.from({ length: 50 }, (_, n) => (n % 2 ? a : b).send('test.shared', { n })));
    await vi.waitFor(() => expect(seen.length).toBeGreaterThanOrEqual(50), { timeout: 25_000, interval: 100 });
    await Promise.all([a.stop(), b.stop()]);
    expect(seen.length).toBe(50);
    expect(new Set(seen).size).toBe(50);
  });
});
