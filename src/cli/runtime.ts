import type { Modules } from '../app.ts';
import type { Config } from '../config.ts';
import { openRuntime, operatorModules, type Runtime } from '../main.ts';
import { createJobs } from '../platform/jobs/pgboss.ts';
import { cliLogger, type Io } from './output.ts';

/**
 * Runs an operator command against the database directly: takes the data-dir lock (on the
 * embedded engine), migrates, builds the modules without HTTP, and always closes.
 */
export async function withModules<T>(
  io: Io,
  config: Config,
  purpose: string,
  fn: (modules: Modules, runtime: Runtime) => Promise<T>,
): Promise<T> {
  const runtime = await openRuntime(config, { purpose, logger: cliLogger(io, config) });
  const jobs = createJobs({ db: runtime.db, logger: runtime.logger, ownerUrl: config.DATABASE_URL });
  try {
    return await fn(operatorModules(runtime, jobs), runtime);
  } finally {
    await jobs.stop().catch(() => undefined);
    await runtime.close();
  }
}
