import type { Config } from '../config.ts';
import type { Bus } from '../platform/bus/index.ts';
import type { Clock } from '../platform/clock.ts';
import type { TableEntry } from '../platform/db/datamap.ts';
import type { Db } from '../platform/db/db.ts';
import type { HttpServer } from '../platform/http/server.ts';
import type { Jobs } from '../platform/jobs/jobs.ts';
import type { Logger } from '../platform/logger.ts';

/** What every module may depend on from the platform. */
export type PlatformDeps = {
  config: Config;
  db: Db;
  logger: Logger;
  clock: Clock;
  jobs: Jobs;
  /** Messages to every replica (cache invalidation); in-process on embedded PGlite. */
  bus: Bus;
};

/** The shape each module's factory returns. */
export type Module<S> = {
  service: S;
  /** Tables this module owns, classified for the data map. */
  dataMap: TableEntry[];
  registerRoutes?(app: HttpServer): Promise<void> | void;
  registerJobs?(jobs: Jobs): Promise<void>;
};
