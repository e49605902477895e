/**
 * Durable background jobs (pg-boss on PGlite or server Postgres). Modules register
 * handlers and send work; a job survives restarts and is retried on failure.
 */
export type JobHandler<T> = (data: T) => Promise<void>;

export type SendOptions = {
  /** At most one queued job with this key at a time. */
  singletonKey?: string;
  startAfter?: Date;
  retryLimit?: number;
};

export interface Jobs {
  /** Declares a queue and its handler (handlers run only where this process is a worker). */
  register<T extends object>(name: string, handler: JobHandler<T>, opts?: { concurrency?: number }): Promise<void>;
  send<T extends object>(name: string, data: T, opts?: SendOptions): Promise<string | null>;
  /** Runs `name` on a cron schedule (UTC), once across all workers. */
  schedule(name: string, cron: string, data?: object): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}
