import type { Clock } from '../../platform/clock.ts';
import type { Logger } from '../../platform/logger.ts';

/** Runs `fn` once after `ms` (a timer that keeps no process alive); returns its cancel. */
export type Schedule = (fn: () => void, ms: number) => () => void;

export const unrefTimer: Schedule = (fn, ms) => {
  const timer = setTimeout(fn, ms);
  timer.unref();
  return () => clearTimeout(timer);
};

type Options<T> = {
  /** Reads the whole set from the database. */
  read: () => Promise<T>;
  /** The set before the first read. */
  initial: T;
  clock: Clock;
  logger: Pick<Logger, 'warn'>;
  /** How long a read set is trusted before it is re-read in the background. */
  refreshMs: number;
  /** Waits between attempts after a failed read: doubling from the first to the most. */
  retry: { firstMs: number; maxMs: number };
  /** Logged when a failed read leaves the set untrusted, and when it keeps the last one. */
  warnings: { untrusted: string; keeping: string };
  /** Logs only the first failed read of an outage (default: every one). */
  warnOncePerOutage?: boolean;
  /** Retries an untrusted set on this timer; without it, the next read waits for `refreshIfDue`. */
  schedule?: Schedule;
};

/**
 * A set kept in memory on every replica and followed through the bus: read at start, changed
 * by each message (`apply`), read again after a bus gap (`onGap`) and when older than
 * `refreshMs`. It is trusted once read, and untrusted again while the read after a gap keeps
 * failing (messages may have been lost); a failed background read of a trusted set keeps it.
 * Failed reads back off, doubling from `retry.firstMs` to `retry.maxMs`.
 */
export function followedSet<T>(opts: Options<T>) {
  const { clock, retry } = opts;
  let value = opts.initial;
  let loadedAt = Number.NEGATIVE_INFINITY;
  /** Counts applied messages and bus gaps: a read that overlapped one reads again (it may hold the old state). */
  let version = 0;
  let reloading: Promise<void> | null = null;
  /** False until the set was read once, and again while a re-read after a bus gap has not succeeded. */
  let trusted = false;
  /** A bus gap happened and no read has succeeded since. */
  let gapPending = false;
  /** No background re-read starts before this (clock ms): backoff after a failed one. */
  let nextAttemptAt = Number.NEGATIVE_INFINITY;
  let delayMs = retry.firstMs;
  /** A read failed and none has succeeded since. */
  let failing = false;
  let cancelRetry: (() => void) | null = null;
  let stopped = false;

  async function readAll(): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const seen = version;
      const at = clock.now().getTime();
      const next = await opts.read();
      if (seen === version || attempt === 2) {
        value = next;
        loadedAt = at;
        return;
      }
    }
  }

  function cancelTimer() {
    cancelRetry?.();
    cancelRetry = null;
  }

  function retryLater() {
    nextAttemptAt = clock.now().getTime() + delayMs;
    if (opts.schedule && !trusted && !stopped && !cancelRetry) {
      cancelRetry = opts.schedule(() => {
        cancelRetry = null;
        void reload();
      }, delayMs);
    }
    delayMs = Math.min(delayMs * 2, retry.maxMs);
  }

  function reload(): Promise<void> {
    reloading ??= readAll()
      .then(
        () => {
          trusted = true;
          gapPending = false;
          failing = false;
          delayMs = retry.firstMs;
          nextAttemptAt = Number.NEGATIVE_INFINITY;
          cancelTimer();
        },
        () => {
          // After a gap messages may have been lost: the last set is no longer trusted.
          if (gapPending) trusted = false;
          if (!failing || !opts.warnOncePerOutage) {
            opts.logger.warn(trusted ? opts.warnings.keeping : opts.warnings.untrusted);
          }
          failing = true;
          retryLater();
        },
      )
      .finally(() => {
        reloading = null;
      });
    return reloading;
  }

  return {
    /** The set as last read and changed since. */
    get value(): T {
      return value;
    },
    get trusted(): boolean {
      return trusted;
    },
    /** The wait before the next attempt after a failed read. */
    get delayMs(): number {
      return delayMs;
    },
    /** Changes the set (a bus message or a local change). */
    apply(change: (value: T) => void): void {
      version++;
      change(value);
    },
    reload,
    /** After a reconnect: messages may have been lost, so the set is read again (and untrusted if that fails). */
    onGap(): void {
      version++;
      gapPending = true;
      void reload();
    },
    /** Starts a background read when the set is untrusted or older than `refreshMs`, unless backing off. */
    refreshIfDue(): void {
      const now = clock.now().getTime();
      if ((!trusted || now - loadedAt > opts.refreshMs) && now >= nextAttemptAt) void reload();
    },
    /** Lets the retry timer run again (at start). */
    resume(): void {
      stopped = false;
    },
    /** Ends the retry timer. */
    stop(): void {
      stopped = true;
      cancelTimer();
    },
  };
}
