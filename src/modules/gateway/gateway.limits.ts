import { Redis } from 'ioredis';
import type { Clock } from '../../platform/clock.ts';

/**
 * Per-minute counters for requests and tokens. Windows are aligned to the clock's minute,
 * so every replica counts into the same window; with Redis, N replicas enforce a limit
 * once, not N times.
 */
export type Decision = { ok: boolean; used: number; remaining: number; resetMs: number };

export interface RateLimiter {
  readonly kind: 'memory' | 'redis';
  /** Adds `cost` to `key`'s current window when the total stays within `limit`; otherwise adds nothing. */
  consume(key: string, cost: number, limit: number): Promise<Decision>;
  /** Adds `cost` whatever the limit (tokens, known only after the call). */
  add(key: string, cost: number): Promise<void>;
  /** The window's use so far, without adding. */
  peek(key: string, limit: number): Promise<Decision>;
  close(): Promise<void>;
}

const WINDOW_MS = 60_000;

function windowOf(clock: Clock) {
  const now = clock.now().getTime();
  const start = now - (now % WINDOW_MS);
  return { id: start / WINDOW_MS, resetMs: start + WINDOW_MS - now };
}

function decision(ok: boolean, used: number, limit: number, resetMs: number): Decision {
  return { ok, used, remaining: Math.max(0, limit - used), resetMs };
}

export function memoryRateLimiter(clock: Clock): RateLimiter {
  const counters = new Map<string, { window: number; used: number }>();
  let sweptWindow = 0;

  function counter(key: string) {
    const w = windowOf(clock);
    if (w.id !== sweptWindow) {
      // Once a window: drop counters of past windows so memory stays flat.
      for (const [k, c] of counters) if (c.window < w.id) counters.delete(k);
      sweptWindow = w.id;
    }
    let c = counters.get(key);
    if (!c || c.window !== w.id) {
      c = { window: w.id, used: 0 };
      counters.set(key, c);
    }
    return { c, resetMs: w.resetMs };
  }

  return {
    kind: 'memory',
    async consume(key, cost, limit) {
      const { c, resetMs } = counter(key);
      if (c.used + cost > limit) return decision(false, c.used, limit, resetMs);
      c.used += cost;
      return decision(true, c.used, limit, resetMs);
    },
    async add(key, cost) {
      counter(key).c.used += cost;
    },
    async peek(key, limit) {
      const { c, resetMs } = counter(key);
      return decision(c.used < limit, c.used, limit, resetMs);
    },
    async close() {},
  };
}

// KEYS[1] counter; ARGV: cost, limit, ttl ms. Adds only when within the limit; returns the count.
const CONSUME = `
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost = tonumber(ARGV[1])
if used + cost > tonumber(ARGV[2]) then return {0, used} end
used = redis.call('INCRBY', KEYS[1], cost)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, used}
`;

/** Counters in Redis, shared by every replica: one atomic script per decision. */
export function redisRateLimiter(opts: { url: string; clock: Clock; prefix?: string }): RateLimiter {
  const redis = new Redis(opts.url, { maxRetriesPerRequest: 2, connectionName: 'berth-limits', lazyConnect: true });
  redis.on('error', () => undefined);
  redis.defineCommand('berthConsume', { numberOfKeys: 1, lua: CONSUME });
  const prefix = opts.prefix ?? 'berth:rl:';
  const keyOf = (key: string, w: number) => `${prefix}${key}:${w}`;
  const ttl = 2 * WINDOW_MS;
  type WithConsume = Redis & {
    berthConsume(key: string, cost: number, limit: number, ttl: number): Promise<[number, number]>;
  };
  const r = redis as WithConsume;

  return {
    kind: 'redis',
    async consume(key, cost, limit) {
      const w = windowOf(opts.clock);
      const [ok, used] = await r.berthConsume(keyOf(key, w.id), cost, limit, ttl);
      return decision(ok === 1, Number(used), limit, w.resetMs);
    },
    async add(key, cost) {
      const w = windowOf(opts.clock);
      await redis.multi().incrby(keyOf(key, w.id), cost).pexpire(keyOf(key, w.id), ttl).exec();
    },
    async peek(key, limit) {
      const w = windowOf(opts.clock);
      const used = Number((await redis.get(keyOf(key, w.id))) ?? 0);
      return decision(used < limit, used, limit, w.resetMs);
    },
    async close() {
      redis.disconnect();
    },
  };
}
