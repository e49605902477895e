import type { Clock } from '../../platform/clock.ts';
import { MINUTE } from '../../platform/clock.ts';

export type UsageTrackerOptions = {
  clock: Clock;
  /** Writes a batch of last-used times (one statement). */
  write(entries: Array<{ id: string; at: Date }>): Promise<void>;
  onError(err: unknown): void;
  /** At most one write per key per this many ms (default one minute). */
  resolutionMs?: number;
  /** How often the timer flushes (default one minute). */
  intervalMs?: number;
};

/**
 * Last-used times, off the request path: `touch` only updates a map in memory; a timer
 * flushes it with one batched UPDATE every minute (and on shutdown). A key is written at
 * most once per minute, so the column is accurate to the minute.
 */
export function usageTracker(opts: UsageTrackerOptions) {
  const resolution = opts.resolutionMs ?? MINUTE;
  const pending = new Map<string, Date>();
  const written = new Map<string, number>();
  let timer: NodeJS.Timeout | null = null;
  let flushing: Promise<void> | null = null;

  async function flushOnce() {
    if (pending.size === 0) return;
    const batch = [...pending].map(([id, at]) => ({ id, at }));
    pending.clear();
    try {
      await opts.write(batch);
      const cutoff = opts.clock.now().getTime() - resolution;
      for (const [id, at] of written) if (at <= cutoff) written.delete(id);
      for (const e of batch) written.set(e.id, e.at.getTime());
    } catch (err) {
      // Keep the times for the next flush (a newer touch of the same key wins).
      for (const e of batch) if (!pending.has(e.id)) pending.set(e.id, e.at);
      opts.onError(err);
    }
  }

  async function flush(): Promise<void> {
    while (flushing) await flushing;
    flushing = flushOnce().finally(() => {
      flushing = null;
    });
    await flushing;
  }

  return {
    /** Notes that a key was used now (cheap: a map lookup). */
    touch(keyId: string): void {
      const now = opts.clock.now();
      const last = written.get(keyId);
      if (last !== undefined && now.getTime() - last < resolution) return;
      pending.set(keyId, now);
    },

    /** Writes what is pending now (the timer, shutdown and tests call it). */
    flush,

    start(): void {
      if (timer) return;
      timer = setInterval(() => void flush(), opts.intervalMs ?? MINUTE);
      timer.unref();
    },

    /** Stops the timer and writes what is left. */
    async stop(): Promise<void> {
      if (timer) clearInterval(timer);
      timer = null;
      await flush();
    },

    get pendingCount() {
      return pending.size;
    },
  };
}

export type UsageTracker = ReturnType<typeof usageTracker>;
