import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type App, buildApp } from '../../src/app.ts';
import { loadConfig, type RawConfig } from '../../src/config.ts';
import type { Keyring } from '../../src/modules/vault/index.ts';
import { type ManualClock, manualClock } from '../../src/platform/clock.ts';
import type { Jobs } from '../../src/platform/jobs/jobs.ts';
import { createLogger } from '../../src/platform/logger.ts';
import { createTestDb, type TestDb } from './db.ts';

/** A fixed key-encryption key for tests (never used outside them). */
export const TEST_KEYRING: Keyring = {
  current: { version: 1, key: Buffer.alloc(32, 7) },
  all: new Map([[1, Buffer.alloc(32, 7)]]),
};

export type TestApp = App & {
  db: TestDb['db'];
  testDb: TestDb;
  clock: ManualClock;
  /** Every log line the app wrote, as raw JSON text (for leak scans). */
  logs: string[];
  jobs: Jobs;
  close(): Promise<void>;
};

/** Placeholder job runner until the platform's pg-boss runner is wired into tests. */
function recordingJobs(): Jobs {
  return {
    register: async () => undefined,
    send: async () => null,
    schedule: async () => undefined,
    start: async () => undefined,
    stop: async () => undefined,
  };
}

/** A complete Berth app on a fresh database (PGlite or server Postgres, per test project). */
export async function createTestApp(opts: { config?: RawConfig; clock?: ManualClock } = {}): Promise<TestApp> {
  const testDb = await createTestDb();
  const dataDir = mkdtempSync(path.join(tmpdir(), 'berth-test-'));
  const config = loadConfig({
    overrides: { BERTH_DATA_DIR: dataDir, BERTH_PUBLIC_URL: 'http://berth.test', ...opts.config },
  });
  const logs: string[] = [];
  const logger = createLogger({ level: 'debug', destination: { write: (line: string) => logs.push(line) } });
  const clock = opts.clock ?? manualClock(new Date());
  const jobs = recordingJobs();
  const app = await buildApp({ config, db: testDb.db, logger, clock, jobs, keyring: TEST_KEYRING });
  await app.http.ready();
  return {
    ...app,
    db: testDb.db,
    testDb,
    clock,
    logs,
    jobs,
    async close() {
      await app.http.close();
      await jobs.stop();
      await testDb.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
