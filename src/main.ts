import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { type App, type AppDeps, buildApp, createModules, type Modules, registerJobs } from './app.ts';
import type { Config } from './config.ts';
import { type LoadedAuditSigningKey, loadAuditSigningKey } from './modules/audit/index.ts';
import type { CreditGate } from './modules/gateway/index.ts';
import { type Keyring, loadKeyring } from './modules/vault/index.ts';
import { createBus, memoryBus } from './platform/bus/index.ts';
import { type Clock, systemClock } from './platform/clock.ts';
import { type Db, openPglite, openPostgres } from './platform/db/db.ts';
import { type MigrateResult, migratePglite, migratePostgres } from './platform/db/migrate.ts';
import type { Jobs } from './platform/jobs/jobs.ts';
import { createJobs } from './platform/jobs/pgboss.ts';
import { type DataDirLock, lockDataDir } from './platform/lock.ts';
import { createLogger, type Logger } from './platform/logger.ts';

/** Where the embedded database lives inside the data dir. */
export function pgliteDir(config: Config) {
  return path.join(config.dataDir, 'pgdata');
}

export type Runtime = {
  config: Config;
  db: Db;
  keyring: Keyring;
  /** Signs audit checkpoints; null on server Postgres until configured. */
  auditSigningKey: LoadedAuditSigningKey | null;
  logger: Logger;
  clock: Clock;
  migrations: MigrateResult;
  close(): Promise<void>;
  lock: DataDirLock | null;
};

/**
 * Opens Berth's database for a process (server or operator command): takes the data-dir
 * lock on the embedded engine, loads the key-encryption keys, and applies migrations.
 */
export async function openRuntime(
  config: Config,
  opts: { purpose: string; logger?: Logger; clock?: Clock },
): Promise<Runtime> {
  const logger = opts.logger ?? createLogger({ level: config.BERTH_LOG_LEVEL });
  const clock = opts.clock ?? systemClock;
  const embedded = !config.DATABASE_URL;
  const lock = embedded ? lockDataDir(config.dataDir, opts.purpose, () => clock.now()) : null;
  try {
    const keyring = loadKeyring(config, { engine: embedded ? 'pglite' : 'postgres', logger });
    const auditSigningKey = loadAuditSigningKey(config, { engine: embedded ? 'pglite' : 'postgres', logger });
    let db: Db;
    let migrations: MigrateResult;
    if (config.DATABASE_URL) {
      migrations = await migratePostgres(config.DATABASE_URL, { appRole: config.BERTH_DB_APP_ROLE });
      db = await openPostgres({
        url: config.DATABASE_URL,
        max: config.BERTH_DB_POOL_MAX,
        appRole: config.BERTH_DB_APP_ROLE,
      });
    } else {
      mkdirSync(pgliteDir(config), { recursive: true });
      db = await openPglite({ dataDir: pgliteDir(config) });
      if (!db.pglite) throw new Error('embedded database did not open');
      migrations = await migratePglite(db.pglite);
    }
    return {
      config,
      db,
      keyring,
      auditSigningKey,
      logger,
      clock,
      migrations,
      lock,
      async close() {
        await db.close();
        lock?.release();
      },
    };
  } catch (err) {
    lock?.release();
    throw err;
  }
}

export type RunningServer = { url: string; app: App; jobs: Jobs; runtime: Runtime; stop(): Promise<void> };

/** Starts Berth: database, migrations, jobs (per role) and the HTTP server. */
export async function startServer(
  config: Config,
  opts: { logger?: Logger; clock?: Clock; credits?: CreditGate } = {},
): Promise<RunningServer> {
  // `credits` is the gateway's credit gate (unlimited when absent), e.g. a funded memoryCredits for a benchmark.
  const { credits, ...runtimeOpts } = opts;
  const runtime = await openRuntime(config, { purpose: 'server', ...runtimeOpts });
  const { db, logger, clock, keyring, auditSigningKey } = runtime;
  const jobs = createJobs({ db, logger, ownerUrl: config.DATABASE_URL });
  const bus = createBus(config, logger);
  const deps: AppDeps = { config, db, logger, clock, jobs, keyring, auditSigningKey, bus, credits };
  let app: App | null = null;
  try {
    app = await buildApp(deps);
    const worker = config.BERTH_ROLE === 'all' || config.BERTH_ROLE === 'worker';
    if (worker && config.BERTH_JOBS) {
      await jobs.start();
      await registerJobs(deps, app.modules);
    }
    await app.http.listen({ host: config.BERTH_HOST, port: config.BERTH_PORT });
  } catch (err) {
    await app?.http.close().catch(() => undefined);
    await jobs.stop().catch(() => undefined);
    await bus.close().catch(() => undefined);
    await runtime.close();
    throw err;
  }
  const address = app.http.server.address();
  const port = typeof address === 'object' && address ? address.port : config.BERTH_PORT;
  const host = config.BERTH_HOST.includes(':') ? `[${config.BERTH_HOST}]` : config.BERTH_HOST;
  const url = `http://${host}:${port}`;
  runtime.lock?.update({ url });
  const running = app;
  let stopping: Promise<void> | null = null;
  return {
    url,
    app: running,
    jobs,
    runtime,
    stop() {
      stopping ??= (async () => {
        // Stop accepting, let in-flight requests finish, then jobs, then the database.
        await running.http.close();
        await jobs.stop();
        await bus.close();
        await runtime.close();
      })();
      return stopping;
    },
  };
}

/** Builds the modules without HTTP, for operator commands that act on the database directly. */
export function operatorModules(runtime: Runtime, jobs: Jobs): Modules {
  return createModules({
    config: runtime.config,
    db: runtime.db,
    logger: runtime.logger,
    clock: runtime.clock,
    jobs,
    keyring: runtime.keyring,
    auditSigningKey: runtime.auditSigningKey,
    // Operator commands are short-lived and cache nothing other processes rely on.
    bus: memoryBus(),
  });
}
