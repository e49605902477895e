import { setTimeout as sleep } from 'node:timers/promises';
import type { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import PgBoss from 'pg-boss';
import type { Config } from '../../config.ts';
import type { Db } from '../db/db.ts';
import { isAppError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { DrainResult, JobHandler, JobInfo, Jobs, RegisterOptions, SendOptions } from './jobs.ts';

/** pg-boss keeps its tables in this schema (see jobs.datamap.ts). */
export const JOBS_SCHEMA = 'pgboss';

export type CreateJobsOptions = {
  db: Db;
  logger: Logger;
  /**
   * Server Postgres only: the owner connection URL (DATABASE_URL as configured). pg-boss
   * creates and migrates its own schema, which the application role may not do, so it never
   * uses the application pool.
   */
  ownerUrl?: string | undefined;
  config?: Pick<Config, 'DATABASE_URL'>;
  /** How often an idle worker polls (seconds, default 2); a send in this process wakes it at once. */
  pollingIntervalSeconds?: number;
  /** Seconds stop() waits for running handlers before failing them for retry (default 30). */
  stopTimeoutSeconds?: number;
};

type ExecuteSql = (text: string, values?: unknown[]) => Promise<{ rows: Record<string, unknown>[] }>;

/** How pg-boss reaches the database, and how Berth runs one transaction on the same path. */
type Connection = {
  executeSql: ExecuteSql;
  transaction<T>(fn: (executeSql: ExecuteSql) => Promise<T>): Promise<T>;
  close(): Promise<void>;
};

/**
 * PGlite is one connection: parameterised statements go through `query`, multi-statement
 * scripts (pg-boss's schema creation, migrations and locked maintenance blocks) through
 * `exec`, which answers one result per statement; pg-boss only reads the rows of
 * single-statement scripts, so the last result is returned.
 */
function pgliteConnection(client: PGlite): Connection {
  const executeSql: ExecuteSql = async (text, values) => {
    if (values && values.length > 0) {
      const res = await client.query<Record<string, unknown>>(text, values);
      return { rows: res.rows };
    }
    const results = await client.exec(text);
    const last = results[results.length - 1];
    return { rows: (last?.rows ?? []) as Record<string, unknown>[] };
  };
  return {
    executeSql,
    transaction: (fn) =>
      client.transaction((tx) =>
        fn(async (text, values) => {
          const res = await tx.query<Record<string, unknown>>(text, values ?? []);
          return { rows: res.rows };
        }),
      ),
    close: async () => undefined,
  };
}

function postgresConnection(url: string): Connection {
  const pool = new pg.Pool({ connectionString: url, max: 4, application_name: 'berth-jobs' });
  pool.on('error', () => {
    // An idle client died (server restart, network); the pool replaces it on next use.
  });
  return {
    executeSql: async (text, values) => {
      const res = await pool.query(text, values as unknown[] | undefined);
      return { rows: res.rows };
    },
    async transaction(fn) {
      const client = await pool.connect();
      try {
        await client.query('begin');
        const result = await fn(async (text, values) => ({ rows: (await client.query(text, values)).rows }));
        await client.query('commit');
        return result;
      } catch (err) {
        await client.query('rollback').catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
    },
    close: () => pool.end(),
  };
}

/** What a failed job keeps in its output column: the error's kind, never its message or stack. */
function safeFailure(err: unknown): Error {
  const kind = isAppError(err) ? `AppError:${err.code}` : err instanceof Error ? err.name : 'Error';
  const safe = new Error(`job handler failed (${kind})`);
  safe.stack = undefined;
  return safe;
}

/**
 * What the log says about a failure: the error's kind, and the message only for AppErrors
 * (Berth's own wording). Other messages may quote upstream bodies or data, so they stay out.
 */
function describeError(err: unknown) {
  if (isAppError(err)) return { name: err.name, code: err.code, message: err.message };
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return { name: err.name, ...(typeof code === 'string' ? { code } : {}) };
  }
  return { name: typeof err };
}

type Registered = { handler: JobHandler<object>; opts: RegisterOptions; workerIds: string[] };

/** Longer than one step of the database's now() (PGlite's moves in whole milliseconds). */
const DB_CLOCK_TICK_MS = 2;

const DEFAULT_QUEUE = { retryLimit: 3, retryDelaySeconds: 30, retryBackoff: true, expireInSeconds: 15 * 60 };

/**
 * Berth's job runner on pg-boss 10. Sending works in every process (pg-boss is started on
 * first use, without workers); `start()` makes the process a worker: handlers, cron
 * schedules and pg-boss maintenance run. Tests leave it unstarted and call `drain()`.
 *
 * @example
 * const jobs = createJobs({ db, logger, ownerUrl: config.DATABASE_URL });
 * await jobs.register('audit.verify', handler, { concurrency: 2 });
 * await jobs.start();
 */
export function createJobs(opts: CreateJobsOptions) {
  const { db, logger } = opts;
  const log = logger.child({ component: 'jobs' });
  const handlers = new Map<string, Registered>();
  const ensuredQueues = new Set<string>();
  const inFlight = new Set<Promise<unknown>>();
  /** Schedules declared before this process is a worker; written when it starts (or is inspected). */
  const pendingSchedules = new Map<string, { cron: string; data: object }>();
  let connection: Connection | null = null;
  let boss: PgBoss | null = null;
  let bossIsWorker = false;
  let booting: Promise<PgBoss> | null = null;
  let stopping: Promise<void> | null = null;

  function connect(): Connection {
    if (connection) return connection;
    if (db.engine === 'pglite') {
      if (!db.pglite) throw new Error('jobs: the embedded database has no PGlite client');
      connection = pgliteConnection(db.pglite);
    } else {
      const url = opts.ownerUrl ?? opts.config?.DATABASE_URL;
      if (!url) throw new Error('jobs: server Postgres needs the owner connection URL (DATABASE_URL)');
      connection = postgresConnection(url);
    }
    return connection;
  }

  async function boot(worker: boolean): Promise<PgBoss> {
    if (boss && (bossIsWorker || !worker)) return boss;
    if (boss) {
      // A sending-only pg-boss is running; replace it with a worker.
      const old = boss;
      boss = null;
      await old.stop({ graceful: false, close: false, wait: true });
    }
    const conn = connect();
    const next = new PgBoss({
      db: { executeSql: (text, values) => conn.executeSql(text, values) },
      schema: JOBS_SCHEMA,
      migrate: true,
      supervise: worker,
      schedule: worker,
      pollingIntervalSeconds: opts.pollingIntervalSeconds ?? 2,
      deleteAfterDays: 7,
    });
    next.on('error', (err: Error) => {
      const queue = (err as { queue?: unknown }).queue;
      // Runner errors come from the database connection, not from handlers: their message helps.
      log.error({ queue, err: { ...describeError(err), message: err.message } }, 'job runner error');
    });
    await next.start();
    boss = next;
    bossIsWorker = worker;
    ensuredQueues.clear();
    return next;
  }

  function ready(worker = false): Promise<PgBoss> {
    if (boss && (bossIsWorker || !worker)) return Promise.resolve(boss);
    booting ??= boot(worker).finally(() => {
      booting = null;
    });
    return booting.then((b) => (worker && !bossIsWorker ? ready(true) : b));
  }

  function queueOptions(name: string) {
    const o = { ...DEFAULT_QUEUE, ...handlers.get(name)?.opts };
    return {
      name,
      retryLimit: o.retryLimit,
      retryDelay: o.retryDelaySeconds,
      retryBackoff: o.retryBackoff,
      expireInSeconds: o.expireInSeconds,
    };
  }

  /**
   * Creates the queue once. pg-boss's create_queue attaches a partition to its job table;
   * two processes doing that at once can deadlock, so creation is serialised by an advisory lock.
   */
  async function ensureQueue(b: PgBoss, name: string) {
    if (ensuredQueues.has(name)) return;
    const options = queueOptions(name);
    if (!(await b.getQueue(name))) {
      await connect().transaction(async (executeSql) => {
        await executeSql('select pg_advisory_xact_lock(hashtextextended($1, 727310403))', ['pgboss.create_queue']);
        await executeSql(`select ${JOBS_SCHEMA}.create_queue($1, $2)`, [
          name,
          {
            policy: 'standard',
            retryLimit: options.retryLimit,
            retryDelay: options.retryDelay,
            retryBackoff: options.retryBackoff,
            expireInSeconds: options.expireInSeconds,
          },
        ]);
      });
    } else if (handlers.has(name)) {
      await b.updateQueue(name, options);
    }
    ensuredQueues.add(name);
  }

  function track<T>(p: Promise<T>): Promise<T> {
    inFlight.add(p);
    p.finally(() => inFlight.delete(p)).catch(() => undefined);
    return p;
  }

  /** Runs one job's handler; failures are logged without data and rethrown sanitized. */
  async function runHandler(reg: Registered, job: JobInfo & { data: object }) {
    try {
      await reg.handler(job.data, { id: job.id, name: job.name });
    } catch (err) {
      log.warn({ queue: job.name, jobId: job.id, err: describeError(err) }, 'job failed');
      throw safeFailure(err);
    }
  }

  async function startWorkers(b: PgBoss, name: string, reg: Registered) {
    await ensureQueue(b, name);
    const n = Math.max(1, reg.opts.concurrency ?? 1);
    while (reg.workerIds.length < n) {
      const id = await b.work<object>(name, { batchSize: 1 }, (jobs) =>
        track(
          (async () => {
            for (const job of jobs) await runHandler(reg, { id: job.id, name, data: job.data });
          })(),
        ),
      );
      reg.workerIds.push(id);
    }
  }

  async function writeSchedules(b: PgBoss) {
    for (const [name, s] of [...pendingSchedules]) {
      await ensureQueue(b, name);
      await b.schedule(name, s.cron, s.data, { tz: 'UTC' });
      pendingSchedules.delete(name);
    }
  }

  /** Inserts a job unless one with the same singleton key is still queued (serialised per key). */
  async function sendSingleton(b: PgBoss, name: string, data: object, options: PgBoss.SendOptions, key: string) {
    return connect().transaction(async (executeSql) => {
      await executeSql('select pg_advisory_xact_lock(hashtextextended($1 || chr(1) || $2, 727310402))', [name, key]);
      const { rows } = await executeSql(
        `select 1 from ${JOBS_SCHEMA}.job where name = $1 and singleton_key = $2 and state < 'active' limit 1`,
        [name, key],
      );
      if (rows.length > 0) return null;
      return b.send(name, data, { ...options, singletonKey: key, db: { executeSql } });
    });
  }

  const jobs: PgBossJobs = {
    async register<T extends object>(name: string, handler: JobHandler<T>, ropts: RegisterOptions = {}) {
      if (handlers.has(name)) throw new Error(`jobs: queue ${name} already has a handler`);
      const reg: Registered = { handler: handler as JobHandler<object>, opts: ropts, workerIds: [] };
      handlers.set(name, reg);
      if (boss && bossIsWorker) await startWorkers(boss, name, reg);
    },

    async send<T extends object>(name: string, data: T, sopts: SendOptions = {}): Promise<string | null> {
      const b = await ready();
      await ensureQueue(b, name);
      const options: PgBoss.SendOptions = {
        ...(sopts.startAfter ? { startAfter: sopts.startAfter } : {}),
        ...(sopts.retryLimit !== undefined ? { retryLimit: sopts.retryLimit } : {}),
      };
      const id = sopts.singletonKey
        ? await sendSingleton(b, name, data, options, sopts.singletonKey)
        : await b.send(name, data, options);
      // Wake this process's idle workers of the queue instead of waiting for their next poll.
      if (id && !sopts.startAfter) for (const w of handlers.get(name)?.workerIds ?? []) b.notifyWorker(w);
      return id;
    },

    async schedule(name: string, cron: string, data: object = {}) {
      pendingSchedules.set(name, { cron, data });
      // Only workers fire schedules: elsewhere (and in tests) declaring one costs no database work.
      if (boss && bossIsWorker) await writeSchedules(boss);
    },

    async start() {
      stopping = null;
      const b = await ready(true);
      for (const [name, reg] of handlers) await startWorkers(b, name, reg);
      await writeSchedules(b);
      log.info({ queues: [...handlers.keys()] }, 'job workers started');
    },

    stop(): Promise<void> {
      stopping ??= (async () => {
        const b = boss;
        boss = null;
        bossIsWorker = false;
        for (const reg of handlers.values()) reg.workerIds = [];
        if (b) {
          await b.stop({ graceful: true, wait: true, close: false, timeout: (opts.stopTimeoutSeconds ?? 30) * 1000 });
        }
        // pg-boss waits for its workers; drain() runs are ours to wait for.
        while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
        const conn = connection;
        connection = null;
        await conn?.close();
      })();
      return stopping;
    },

    async drain(name?: string, dopts: { includeDelayed?: boolean } = {}): Promise<DrainResult> {
      const b = await ready();
      const result = { completed: 0, failed: 0 };
      const names = name ? [name] : [...handlers.keys()];
      for (const n of names) {
        if (!handlers.has(n)) throw new Error(`jobs: no handler registered for ${n}`);
        await ensureQueue(b, n);
      }
      // Handlers may send more jobs: pass over the queues until one pass finds nothing.
      // A job is due once `start_after < now()`, and the database's clock may not have moved
      // since the job was sent (PGlite's now() advances in whole milliseconds): a pass that
      // finds nothing is tried once more after the clock has ticked.
      let lookedAgain = false;
      for (let pass = 0; pass < 1000; pass++) {
        let ran = 0;
        for (const n of names) {
          const reg = handlers.get(n);
          if (!reg) continue;
          for (;;) {
            const [job] = await b.fetch<object>(n, { batchSize: 1, ignoreStartAfter: dopts.includeDelayed ?? false });
            if (!job) break;
            ran += 1;
            await track(
              runHandler(reg, { id: job.id, name: n, data: job.data }).then(
                async () => {
                  await b.complete(n, job.id);
                  result.completed += 1;
                },
                async (err: Error) => {
                  await b.fail(n, job.id, err);
                  result.failed += 1;
                },
              ),
            );
          }
        }
        if (ran > 0) {
          lookedAgain = false;
          continue;
        }
        if (lookedAgain) break;
        lookedAgain = true;
        await sleep(DB_CLOCK_TICK_MS);
      }
      return result;
    },

    /** Cron schedules stored in the database (name, cron, data). */
    async schedules(): Promise<{ name: string; cron: string; data: unknown }[]> {
      const b = await ready();
      await writeSchedules(b);
      return (await b.getSchedules()).map((s) => ({ name: s.name, cron: s.cron, data: s.data }));
    },

    /** A job's state and retry count, or null (for tests and operators). */
    async job(name: string, id: string): Promise<{ state: string; retryCount: number; output: unknown } | null> {
      const b = await ready();
      const j = await b.getJobById<object>(name, id, { includeArchive: true });
      return j ? { state: j.state, retryCount: j.retryCount, output: j.output } : null;
    },
  };

  return jobs;
}

/** The pg-boss runner: the Jobs interface plus inspection helpers for tests and operators. */
export type PgBossJobs = Jobs & {
  /** Cron schedules stored in the database. */
  schedules(): Promise<{ name: string; cron: string; data: unknown }[]>;
  /** A job's state, retry count and (sanitized) output, or null. */
  job(name: string, id: string): Promise<{ state: string; retryCount: number; output: unknown } | null>;
};
