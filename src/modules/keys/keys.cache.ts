import type { Clock } from '../../platform/clock.ts';

export type Invalidation = { keys?: string[]; hashes?: string[]; all?: boolean };

export type KeyCacheOptions = {
  clock: Clock;
  /** Most entries kept; the least recently used go first. */
  max?: number;
  /**
   * How long a found key is trusted without asking the database: the longest a replica
   * that missed an invalidation (bus down) keeps honouring a revoked key.
   */
  ttlMs?: number;
  /** The TTL while degraded (after this replica failed to publish an invalidation). */
  degradedTtlMs?: number;
  /** How long "no such key" is remembered (absorbs floods of one bad key). */
  negativeTtlMs?: number;
  /**
   * After an invalidation of a key (or of all), its lookups are not cached for this long: a lookup
   * that raced the change (read before it committed, stored after the message) cannot put
   * the old state back, and a message sent before its transaction committed still works.
   */
  holdMs?: number;
};

type Entry<T> = { value: T | null; keyId: string | null; until: number };

/**
 * The verification cache: an LRU keyed by the SHA-256 of the key, with a short TTL and
 * invalidation by key id, by hash, or of everything (across replicas through the bus).
 */
export function keyCache<T>(opts: KeyCacheOptions) {
  const max = opts.max ?? 10_000;
  const ttl = opts.ttlMs ?? 10_000;
  const degradedTtl = opts.degradedTtlMs ?? 1_000;
  let degradedUntil = 0;
  const negativeTtl = opts.negativeTtlMs ?? 5_000;
  const hold = opts.holdMs ?? 2_000;
  const entries = new Map<string, Entry<T>>();
  const byKey = new Map<string, Set<string>>();
  const heldKeys = new Map<string, number>();
  let heldAll = 0;

  const now = () => opts.clock.now().getTime();

  function drop(hash: string) {
    const e = entries.get(hash);
    if (!e) return;
    entries.delete(hash);
    if (e.keyId) {
      const set = byKey.get(e.keyId);
      set?.delete(hash);
      if (set?.size === 0) byKey.delete(e.keyId);
    }
  }

  function held(keyId: string | null, at: number): boolean {
    if (heldAll > at) return true;
    return keyId !== null && (heldKeys.get(keyId) ?? 0) > at;
  }

  function pruneHolds(at: number) {
    if (heldKeys.size < max) return;
    for (const [k, until] of heldKeys) if (until <= at) heldKeys.delete(k);
  }

  return {
    /** `{ hit: true, value }` (value null = known unknown) or `{ hit: false }`. */
    get(hash: string): { hit: true; value: T | null } | { hit: false } {
      const e = entries.get(hash);
      if (!e) return { hit: false };
      if (e.until <= now()) {
        drop(hash);
        return { hit: false };
      }
      // Refresh recency: Map keeps insertion order, the first entry is the least recent.
      entries.delete(hash);
      entries.set(hash, e);
      return { hit: true, value: e.value };
    },

    /** Stores a lookup's result unless an invalidation of it is being held. */
    set(hash: string, value: T | null, keyId: string | null): void {
      const at = now();
      if (held(keyId, at)) return;
      drop(hash);
      while (entries.size >= max) {
        const oldest = entries.keys().next();
        if (oldest.done) break;
        drop(oldest.value);
      }
      const life = Math.min(
        value === null ? negativeTtl : ttl,
        degradedUntil > at ? degradedTtl : Number.POSITIVE_INFINITY,
      );
      entries.set(hash, { value, keyId, until: at + life });
      if (keyId) {
        let set = byKey.get(keyId);
        if (!set) {
          set = new Set();
          byKey.set(keyId, set);
        }
        set.add(hash);
      }
    },

    invalidate(inv: Invalidation): void {
      const at = now();
      if (inv.all) {
        for (const hash of [...entries.keys()]) drop(hash);
        heldAll = at + hold;
      }
      for (const keyId of inv.keys ?? []) {
        for (const hash of [...(byKey.get(keyId) ?? [])]) drop(hash);
        heldKeys.set(keyId, at + hold);
      }
      // A hash is invalidated when its secret is new: only a remembered "unknown" can be stale.
      for (const hash of inv.hashes ?? []) drop(hash);
      pruneHolds(at);
    },

    /**
     * Empties the cache and keeps entries short-lived (`degradedTtlMs`) for `forMs`: used
     * when this replica could not reach the bus, so it may be missing others' messages too.
     */
    degrade(forMs: number): void {
      entries.clear();
      byKey.clear();
      degradedUntil = now() + forMs;
    },

    /** Empties the cache without holding anything (the benchmark's cache-miss case, tests). */
    clear(): void {
      entries.clear();
      byKey.clear();
    },

    get size() {
      return entries.size;
    },
  };
}

export type KeyCache<T> = ReturnType<typeof keyCache<T>>;
