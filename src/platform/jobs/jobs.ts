/**
 * Durable background jobs (pg-boss on PGlite or server Postgres). Modules register
 * handlers and send work; a job survives restarts and is retried on failure.
 *
 * Job data carries ids only (workspace, user, record ids), never content or secrets: it is
 * stored in the database until the job is archived and deleted, and it is never logged.
 *
 * @example
 * await jobs.register<{ workspaceId: string }>('workspaces.purge', async ({ workspaceId }) => purge(workspaceId));
 * await jobs.send('workspaces.purge', { workspaceId });
 */
export type JobInfo = { id: string; name: string };

export type JobHandler<T> = (data: T, job: JobInfo) => Promise<void>;

export type SendOptions = {
  /** At most one queued (not yet active) job with this key per queue at a time; a second send returns null. */
  singletonKey?: string;
  startAfter?: Date;
  retryLimit?: number;
};

export type RegisterOptions = {
  /** Handlers of this queue running at once in this process (default 1). */
  concurrency?: number;
  /** Retries after the first failure (default 3). */
  retryLimit?: number;
  /** Seconds before the first retry (default 30), doubling each time unless retryBackoff is false. */
  retryDelaySeconds?: number;
  retryBackoff?: boolean;
  /** A run longer than this fails and is retried (default 15 minutes). */
  expireInSeconds?: number;
};

export type DrainResult = { completed: number; failed: number };

export interface Jobs {
  /** Declares a queue and its handler (handlers run only where this process is a worker). */
  register<T extends object>(name: string, handler: JobHandler<T>, opts?: RegisterOptions): Promise<void>;
  send<T extends object>(name: string, data: T, opts?: SendOptions): Promise<string | null>;
  /** Runs `name` on a cron schedule (UTC), once across all workers. Stored when this process starts as a worker. */
  schedule(name: string, cron: string, data?: object): Promise<void>;
  /** Makes this process a worker: registered handlers, schedules and maintenance start running. */
  start(): Promise<void>;
  /** Stops fetching and waits for running handlers to finish (graceful), then releases connections. */
  stop(): Promise<void>;
  /**
   * Runs the queued jobs of `name` (or of every registered queue) through their handlers
   * in this process, now, until none is left; jobs the handlers send are run too.
   * `includeDelayed` also runs jobs whose start time or retry delay has not come yet.
   * For tests and operator commands; a worker does this continuously.
   */
  drain(name?: string, opts?: { includeDelayed?: boolean }): Promise<DrainResult>;
}
