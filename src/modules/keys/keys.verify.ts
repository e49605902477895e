import type { Clock } from '../../platform/clock.ts';
import { safeEqual, sha256Hex } from '../../platform/crypto.ts';
import { afterCommit, type Database, type Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Role } from '../../platform/http/context.ts';
import type { Logger } from '../../platform/logger.ts';
import type { MembershipLookup } from '../workspaces/index.ts';
import type { Invalidation, KeyCache } from './keys.cache.ts';
import { parseKey } from './keys.format.ts';
import { type Cidr, ipAllowed, parseCidr } from './keys.net.ts';
import type { KeysRepo } from './keys.repo.ts';
import type { UsageTracker } from './keys.usage.ts';

/** Who a verified API key is, with the settings the gateway enforces. */
export type KeyPrincipal = {
  keyId: string;
  workspaceId: string;
  /** The member who created the key (its rights are the key's ceiling). */
  userId: string;
  /** The creator's current role (cached with the key; refreshed on role changes). */
  role: Role;
  /** The creator has a confirmed second factor now (the workspace 2FA rule applies to keys). */
  creatorMfa: boolean;
  name: string;
  scopes: readonly string[];
  allowedModels: readonly string[] | null;
  rateLimitRpm: number | null;
  rateLimitTpm: number | null;
  spendLimitMicros: number | null;
  spendLimitPeriod: 'day' | 'month' | null;
  expiresAt: Date | null;
};

/** What the verification cache holds per hash: the facts, not the verdict (time moves). */
export type CachedKey = Omit<KeyPrincipal, 'role' | 'expiresAt'> & {
  hash: string;
  role: Role | null;
  /** The creator's account is active (a disabled account's keys stop with its sessions). */
  creatorActive: boolean;
  ipAllowlist: readonly Cidr[] | null;
  keyExpiresAt: number | null;
  secretExpiresAt: number | null;
  revoked: boolean;
};

export const KEYS_CHANNEL = 'berth.keys';

/** What verification needs to know about the key's creator (the identity module's `findUserById`). */
export type UserLookup = {
  findUserById(id: string): Promise<{ status: 'active' | 'disabled' | 'closing'; mfaEnabled: boolean } | null>;
};

export type VerifierDeps = {
  db: Pick<Db, 'system'>;
  repo: Pick<KeysRepo, 'findByHash' | 'keyIdsOfCreator'>;
  clock: Clock;
  logger: Logger;
  members: MembershipLookup;
  users: UserLookup;
  cache: KeyCache<CachedKey>;
  usage: UsageTracker;
  /** Sends an invalidation to every replica (this one included). */
  publish(inv: Invalidation): Promise<void>;
};

/**
 * How long a replica that could not publish an invalidation keeps cache entries short-lived
 * (the bus is likely down, so it may miss others' messages too).
 */
const DEGRADED_FOR_MS = 60_000;

const invalidKey = () =>
  new AppError('invalid_api_key', 'The API key is not valid: check that it was copied whole (it has a checksum).');

/**
 * Verification of presented keys and the cache in front of it, kept coherent across
 * replicas: every change announces an invalidation on the bus once its transaction has
 * committed, and every replica (this one included) drops what it cached about the key.
 *
 * The bound: a replica that hears the message refuses a revoked key from its next request
 * on; one that missed it (bus down) stops within the cache TTL (10 s).
 */
export function keyVerifier(deps: VerifierDeps) {
  const { db, repo, clock, cache } = deps;
  const inflight = new Map<string, Promise<CachedKey | null>>();

  /** Drops the cached facts here, then tells every replica. Never throws. */
  async function announce(inv: Invalidation): Promise<void> {
    cache.invalidate(inv);
    try {
      await deps.publish(inv);
    } catch {
      // Other replicas keep their entries until the TTL; this one stops trusting its own.
      deps.logger.warn(
        'keys: could not announce an invalidation to other replicas; cache entries kept short for a minute',
      );
      cache.degrade(DEGRADED_FOR_MS);
    }
  }

  async function load(hash: string): Promise<CachedKey | null> {
    const found = await db.system((tx) => repo.findByHash(tx, hash));
    if (!found) return null;
    const { key, secret } = found;
    const revoked = Boolean(key.revokedAt || secret.revokedAt);
    const [membership, creator] = revoked
      ? [null, null]
      : await Promise.all([
          deps.members.resolveMembership(key.workspaceId, key.createdBy),
          deps.users.findUserById(key.createdBy),
        ]);
    return {
      hash: secret.hash,
      keyId: key.id,
      workspaceId: key.workspaceId,
      userId: key.createdBy,
      role: membership?.role ?? null,
      creatorActive: creator?.status === 'active',
      creatorMfa: creator?.mfaEnabled ?? false,
      name: key.name,
      scopes: key.scopes,
      allowedModels: key.allowedModels,
      rateLimitRpm: key.rateLimitRpm,
      rateLimitTpm: key.rateLimitTpm,
      spendLimitMicros: key.spendLimitMicros,
      spendLimitPeriod: key.spendLimitPeriod,
      ipAllowlist: key.ipAllowlist ? key.ipAllowlist.map(parseCidr) : null,
      keyExpiresAt: key.expiresAt?.getTime() ?? null,
      secretExpiresAt: secret.expiresAt?.getTime() ?? null,
      revoked,
    };
  }

  /** The cached facts about a hash, reading the database at most once for concurrent misses. */
  async function lookup(hash: string): Promise<CachedKey | null> {
    const cached = cache.get(hash);
    if (cached.hit) return cached.value;
    let pending = inflight.get(hash);
    if (!pending) {
      pending = load(hash).finally(() => inflight.delete(hash));
      inflight.set(hash, pending);
      const value = await pending;
      cache.set(hash, value, value?.keyId ?? null);
      return value;
    }
    return pending;
  }

  return {
    announce,

    /** Announces `inv` once the transaction owning `tx` commits (replicas never re-read the old state). */
    announceAfterCommit(tx: Database, inv: Invalidation): void {
      afterCommit(tx, () => announce(inv));
    },

    /**
     * Authenticates a presented key: checksum first (no database for junk), then the cache
     * or one lookup by hash, then revocation, expiry, the creator's account and membership
     * and the IP allow-list. Throws the 401/403 the caller should answer.
     */
    async verifyKey(text: string, ip: string): Promise<KeyPrincipal> {
      const parsed = parseKey(text);
      if (!parsed) throw invalidKey();
      const hash = sha256Hex(parsed.key);
      const rec = await lookup(hash);
      if (!rec || !safeEqual(rec.hash, hash)) throw invalidKey();
      const now = clock.now().getTime();
      if (rec.revoked) throw new AppError('api_key_revoked', 'This API key was revoked.');
      if (rec.keyExpiresAt !== null && rec.keyExpiresAt <= now) {
        throw new AppError('api_key_expired', 'This API key has expired.');
      }
      if (rec.secretExpiresAt !== null && rec.secretExpiresAt <= now) {
        throw new AppError(
          'api_key_expired',
          'This API key was rolled and the old secret has expired: use the new one.',
        );
      }
      if (!rec.creatorActive) {
        throw new AppError('api_key_revoked', 'The account that created this API key is disabled.');
      }
      if (!rec.role) {
        throw new AppError('api_key_revoked', 'The member who created this API key is no longer in the workspace.');
      }
      if (rec.ipAllowlist && !ipAllowed(rec.ipAllowlist, ip)) {
        throw new AppError(
          'ip_not_allowed',
          "This API key may not be used from this IP address (see the key's allow-list).",
        );
      }
      deps.usage.touch(rec.keyId);
      return {
        keyId: rec.keyId,
        workspaceId: rec.workspaceId,
        userId: rec.userId,
        role: rec.role,
        creatorMfa: rec.creatorMfa,
        name: rec.name,
        scopes: rec.scopes,
        allowedModels: rec.allowedModels,
        rateLimitRpm: rec.rateLimitRpm,
        rateLimitTpm: rec.rateLimitTpm,
        spendLimitMicros: rec.spendLimitMicros,
        spendLimitPeriod: rec.spendLimitPeriod,
        expiresAt: rec.keyExpiresAt === null ? null : new Date(rec.keyExpiresAt),
      };
    },

    /** Every replica drops the cached keys of a user whose account changed (disabled). */
    async forgetUser(userId: string): Promise<void> {
      const ids = await db.system((tx) => repo.keyIdsOfCreator(tx, userId));
      if (ids.length > 0) await announce({ keys: ids });
    },

    /** Applies an invalidation another replica (or this one) announced on the bus. */
    applyInvalidation(message: string): void {
      const inv = parseInvalidation(message);
      if (inv) cache.invalidate(inv);
      else deps.logger.warn('keys: ignored a malformed invalidation message');
    },

    /** Forgets every cached verification (after a bus reconnect; the benchmark's miss case). */
    clearCache: () => cache.clear(),
  };
}

export type KeyVerifier = ReturnType<typeof keyVerifier>;

function stringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

/** Parses a bus message; null when it is not an invalidation. */
export function parseInvalidation(message: string): Invalidation | null {
  let v: unknown;
  try {
    v = JSON.parse(message);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
  const o = v as Record<string, unknown>;
  const inv: Invalidation = {};
  if (o.all === true) inv.all = true;
  if (o.keys !== undefined) {
    if (!stringArray(o.keys)) return null;
    inv.keys = o.keys;
  }
  if (o.hashes !== undefined) {
    if (!stringArray(o.hashes)) return null;
    inv.hashes = o.hashes;
  }
  return inv;
}
