import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { type App, buildApp, registerJobs } from '../../src/app.ts';
import { type Config, loadConfig, type RawConfig } from '../../src/config.ts';
import type { CreditGate } from '../../src/modules/gateway/index.ts';
import type { Keyring } from '../../src/modules/vault/index.ts';
import { type Bus, memoryBus } from '../../src/platform/bus/index.ts';
import { type ManualClock, manualClock } from '../../src/platform/clock.ts';
import { createJobs, type PgBossJobs } from '../../src/platform/jobs/pgboss.ts';
import { createLogger } from '../../src/platform/logger.ts';
import { createTestDb, type TestDb } from './db.ts';

/** A fixed key-encryption key for tests (never used outside them). */
export const TEST_KEYRING: Keyring = {
  current: { version: 1, key: Buffer.alloc(32, 7) },
  all: new Map([[1, Buffer.alloc(32, 7)]]),
};

export type TestApp = App & {
  config: Config;
  db: TestDb['db'];
  testDb: TestDb;
  clock: ManualClock;
  /** Every log line the app wrote, as raw JSON text (for leak scans). */
  logs: string[];
  /** The real pg-boss runner on the test database, never started: run queued jobs with `jobs.drain()`. */
  jobs: PgBossJobs;
  close(): Promise<void>;
};

export type TestAppOptions = {
  config?: RawConfig;
  clock?: ManualClock;
  /** The replicas' message bus (default: a new in-process bus). A bus passed in is not closed by `close()`. */
  bus?: Bus;
  /** Share another app's database (a second replica); it is not dropped by `close()`. */
  testDb?: TestDb;
  /** The gateway's credit gate (default: the billing ledger, as BERTH_CREDITS says). */
  credits?: CreditGate;
};

/**
 * A complete Berth app on a fresh database (PGlite or server Postgres, per test project).
 *
 * @example
 * // two replicas of one installation
 * const a = await createTestApp({ bus });
 * const b = await createTestApp({ bus: otherBus, testDb: a.testDb });
 */
export async function createTestApp(opts: TestAppOptions = {}): Promise<TestApp> {
  const testDb = opts.testDb ?? (await createTestDb());
  const bus = opts.bus ?? memoryBus();
  const dataDir = mkdtempSync(path.join(tmpdir(), 'berth-test-'));
  const config = loadConfig({
    overrides: { BERTH_DATA_DIR: dataDir, BERTH_PUBLIC_URL: 'http://berth.test', ...opts.config },
  });
  const logs: string[] = [];
  const logger = createLogger({ level: 'debug', destination: { write: (line: string) => logs.push(line) } });
  const clock = opts.clock ?? manualClock(new Date());
  const jobs = createJobs({ db: testDb.db, logger, ownerUrl: testDb.url ?? undefined });
  const deps = {
    config,
    db: testDb.db,
    logger,
    clock,
    jobs,
    keyring: TEST_KEYRING,
    bus,
    ...(opts.credits ? { credits: opts.credits } : {}),
  };
  const app = await buildApp(deps);
  await registerJobs(deps, app.modules);
  await app.http.ready();
  return {
    ...app,
    config,
    db: testDb.db,
    testDb,
    clock,
    logs,
    jobs,
    async close() {
      await app.http.close();
      await jobs.stop();
      if (!opts.bus) await bus.close();
      if (!opts.testDb) await testDb.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * One test app for the enclosing `describe`, created before its tests and closed after;
 * returns a getter (the app exists only once `beforeAll` ran).
 *
 * @example const app = useTestApp(); roleMatrix({ app, routes });
 */
export function useTestApp(opts: Parameters<typeof createTestApp>[0] = {}): () => TestApp {
  let app: TestApp | undefined;
  beforeAll(async () => {
    app = await createTestApp(opts);
  });
  afterAll(async () => {
    await app?.close();
  });
  return () => {
    if (!app) throw new Error('The test app is created in beforeAll; use it inside tests.');
    return app;
  };
}
