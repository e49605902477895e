import type { Clock } from '../../platform/clock.ts';
import { safeEqual, sha256Hex } from '../../platform/crypto.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError, notFound } from '../../platform/errors.ts';
import type { Actor, Role, Scope } from '../../platform/http/context.ts';
import { isId, newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import { roleAllows, type WorkspaceEvent } from '../workspaces/index.ts';
import type { Invalidation, KeyCache } from './keys.cache.ts';
import { generateKey, type KeyEnvironment, parseKey } from './keys.format.ts';
import { type Cidr, ipAllowed, normalizeCidrs, parseCidr } from './keys.net.ts';
import type { KeyPatch, KeysRepo } from './keys.repo.ts';
import {
  type CreateKeyInput,
  DEFAULT_GRACE_SECONDS,
  type KeyView,
  type KeyWithSecret,
  MAX_GRACE_SECONDS,
  type SelfView,
  type UpdateKeyInput,
} from './keys.schemas.ts';
import { assertRoleAllowsScopes, type KeyScope, scopePermissions, scopesCover } from './keys.scopes.ts';
import type { ApiKeyRow, ApiKeySecretRow } from './keys.tables.ts';
import type { UsageTracker } from './keys.usage.ts';

/** What the keys module records in the audit log (the audit module's `record`). */
export type KeysAudit = {
  record(
    tx: Database,
    input: {
      workspaceId: string | null;
      actor: Actor;
      action: string;
      target: { type: string; id: string };
      outcome?: 'success' | 'failure';
      diff?: Record<string, unknown>;
    },
  ): Promise<unknown>;
};

/** Who a verified API key is, with the settings the gateway enforces. */
export type KeyPrincipal = {
  keyId: string;
  workspaceId: string;
  /** The member who created the key (its rights are the key's ceiling). */
  userId: string;
  /** The creator's current role (cached with the key; refreshed on role changes). */
  role: Role;
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
  ipAllowlist: readonly Cidr[] | null;
  keyExpiresAt: number | null;
  secretExpiresAt: number | null;
  revoked: boolean;
};

export const KEYS_CHANNEL = 'berth.keys';

type Members = {
  resolveMembership(workspaceId: string, userId: string): Promise<{ role: Role; requireMfa: boolean } | null>;
};

type Deps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: KeysRepo;
  clock: Clock;
  logger: Logger;
  audit: KeysAudit;
  members: Members;
  cache: KeyCache<CachedKey>;
  usage: UsageTracker;
  /** Sends an invalidation to every replica (this one included). */
  publish(inv: Invalidation): Promise<void>;
  env: KeyEnvironment;
};

const invalidKey = () =>
  new AppError('invalid_api_key', 'The API key is not valid: check that it was copied whole (it has a checksum).');
const conflict = (message: string) => new AppError('conflict', message);
const invalid = (path: string, message: string) =>
  new AppError('validation_failed', message, { details: [{ path, message }] });

function iso(d: Date | null): string | null {
  return d ? d.toISOString() : null;
}

function actorUserId(scope: Scope): string {
  if (scope.actor.type === 'system') throw new AppError('bad_request', 'API keys belong to a member.');
  return scope.actor.userId;
}

function actorUserIdOrNull(actor: Actor): string | null {
  return actor.type === 'system' ? null : actor.userId;
}

function statusOf(row: ApiKeyRow, now: Date): KeyView['status'] {
  if (row.revokedAt) return 'revoked';
  if (row.expiresAt && row.expiresAt.getTime() <= now.getTime()) return 'expired';
  return 'active';
}

function secretWorks(s: ApiKeySecretRow, now: Date) {
  return !s.revokedAt && (!s.expiresAt || s.expiresAt.getTime() > now.getTime());
}

/** The public view of a key: never the hash. `secrets` are newest first. */
function toView(row: ApiKeyRow, secrets: ApiKeySecretRow[], now: Date): KeyView {
  const newest = secrets[0];
  return {
    id: row.id,
    name: row.name,
    prefix: newest?.displayPrefix ?? '',
    last4: newest?.last4 ?? '',
    status: statusOf(row, now),
    scopes: row.scopes,
    allowedModels: row.allowedModels,
    rateLimitRpm: row.rateLimitRpm,
    rateLimitTpm: row.rateLimitTpm,
    spendLimitMicros: row.spendLimitMicros,
    spendLimitPeriod: row.spendLimitPeriod,
    ipAllowlist: row.ipAllowlist,
    expiresAt: iso(row.expiresAt),
    createdBy: row.createdBy,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
    lastUsedAt: iso(row.lastUsedAt),
    revokedAt: iso(row.revokedAt),
    revokedBy: row.revokedBy,
    secrets: secrets
      .filter((s) => secretWorks(s, now))
      .map((s) => ({
        id: s.id,
        prefix: s.displayPrefix,
        last4: s.last4,
        createdAt: s.createdAt.toISOString(),
        expiresAt: iso(s.expiresAt),
      })),
  };
}

/** A new secret row for `keyId`; the plaintext leaves only through the return value. */
function mintSecret(env: KeyEnvironment, keyId: string, workspaceId: string, now: Date) {
  const secret = generateKey(env);
  const parsed = parseKey(secret);
  if (!parsed) throw new Error('generated key does not parse');
  const row: ApiKeySecretRow = {
    id: newId('ksec', now),
    keyId,
    workspaceId,
    hash: sha256Hex(secret),
    displayPrefix: parsed.displayPrefix,
    last4: parsed.last4,
    createdAt: now,
    expiresAt: null,
    revokedAt: null,
  };
  return { secret, row };
}

function checkExpiry(value: string | null | undefined, now: Date): Date | null | undefined {
  if (value === undefined || value === null) return value;
  const at = new Date(value);
  if (at.getTime() <= now.getTime()) throw invalid('/expiresAt', 'The expiry must be in the future.');
  return at;
}

function checkCidrs(list: string[] | null | undefined): string[] | null | undefined {
  if (list === undefined || list === null) return list;
  try {
    return normalizeCidrs(list);
  } catch (err) {
    throw invalid('/ipAllowlist', (err as Error).message);
  }
}

function checkSpend(micros: number | null, period: string | null) {
  if ((micros === null) !== (period === null)) {
    throw invalid('/spendLimitPeriod', 'Set spendLimitMicros and spendLimitPeriod together (or clear both).');
  }
}

function dedupe(scopes: readonly KeyScope[]): KeyScope[] {
  return [...new Set(scopes)];
}

/**
 * The API keys use cases. Every call takes the caller's `scope`; each state change runs in
 * one transaction with its audit event and, once committed, tells every replica to drop
 * what it cached about the key.
 *
 * @example
 * const { key, secret } = await keys.createKey({ scope, input: { name: 'CI', scopes: ['gateway:invoke'] } });
 * const principal = await keys.verifyKey(secret, '203.0.113.7');
 */
export function keysService(deps: Deps) {
  const { db, repo, clock, cache } = deps;
  const inflight = new Map<string, Promise<CachedKey | null>>();

  async function announce(inv: Invalidation) {
    cache.invalidate(inv);
    try {
      await deps.publish(inv);
    } catch {
      deps.logger.warn('keys: could not announce an invalidation to other replicas');
    }
  }

  /** The key, if the caller may see it: managers see every key, others their own. */
  async function visibleKey(tx: Database, scope: Scope, keyId: string, lock: boolean): Promise<ApiKeyRow> {
    if (!isId(keyId, 'key')) throw notFound('API key');
    const row = lock
      ? await repo.lockKey(tx, scope.workspaceId, keyId)
      : await repo.findKey(tx, scope.workspaceId, keyId);
    if (!row) throw notFound('API key');
    if (!roleAllows(scope.role, 'keys:manage') && row.createdBy !== actorUserId(scope)) throw notFound('API key');
    return row;
  }

  /** A key acting through the API may hand out only what its own scopes cover. */
  async function assertWithinCaller(tx: Database, scope: Scope, scopes: readonly KeyScope[]) {
    if (scope.actor.type !== 'api_key') return;
    const caller = await repo.findKey(tx, scope.workspaceId, scope.actor.keyId);
    const own = caller?.scopes ?? [];
    const extra = scopes.filter((s) => !scopePermissions(s).every((p) => scopesCover(own, p)));
    if (extra.length > 0) {
      throw new AppError('insufficient_scope', `An API key cannot grant scopes it does not have: ${extra.join(', ')}.`);
    }
  }

  async function viewOf(tx: Database, row: ApiKeyRow, now: Date): Promise<KeyView> {
    return toView(row, await repo.secretsOf(tx, row.workspaceId, [row.id]), now);
  }

  async function load(hash: string): Promise<CachedKey | null> {
    const found = await db.system((tx) => repo.findByHash(tx, hash));
    if (!found) return null;
    const { key, secret } = found;
    const revoked = Boolean(key.revokedAt || secret.revokedAt);
    const membership = revoked ? null : await deps.members.resolveMembership(key.workspaceId, key.createdBy);
    return {
      hash: secret.hash,
      keyId: key.id,
      workspaceId: key.workspaceId,
      userId: key.createdBy,
      role: membership?.role ?? null,
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
    /** Creates a key carrying the caller's rights; the plaintext is returned this once. */
    async createKey({ scope, input }: { scope: Scope; input: CreateKeyInput }): Promise<KeyWithSecret> {
      const userId = actorUserId(scope);
      const now = clock.now();
      const scopes = dedupe(input.scopes);
      assertRoleAllowsScopes(scope.role, scopes, 'Your');
      const expiresAt = checkExpiry(input.expiresAt, now) ?? null;
      const ipAllowlist = checkCidrs(input.ipAllowlist) ?? null;
      const spendLimitMicros = input.spendLimitMicros ?? null;
      const spendLimitPeriod = input.spendLimitPeriod ?? null;
      checkSpend(spendLimitMicros, spendLimitPeriod);
      const id = newId('key', now);
      const row: ApiKeyRow = {
        id,
        workspaceId: scope.workspaceId,
        name: input.name.trim(),
        scopes,
        allowedModels: input.allowedModels ? [...new Set(input.allowedModels)] : null,
        rateLimitRpm: input.rateLimitRpm ?? null,
        rateLimitTpm: input.rateLimitTpm ?? null,
        spendLimitMicros,
        spendLimitPeriod,
        ipAllowlist,
        expiresAt,
        createdBy: userId,
        createdAt: now,
        updatedAt: now,
        lastUsedAt: null,
        revokedAt: null,
        revokedBy: null,
      };
      const minted = mintSecret(deps.env, id, scope.workspaceId, now);
      const key = await db.tenant(scope.workspaceId, async (tx) => {
        await assertWithinCaller(tx, scope, scopes);
        await repo.insertKey(tx, row);
        await repo.insertSecret(tx, minted.row);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'key.created',
          target: { type: 'api_key', id },
          diff: {
            name: row.name,
            scopes,
            prefix: minted.row.displayPrefix,
            expiresAt: iso(expiresAt),
            ipAllowlist,
            allowedModels: row.allowedModels,
          },
        });
        return toView(row, [minted.row], now);
      });
      // A lookup of this hash before it existed may be remembered as unknown: forget it.
      await announce({ hashes: [minted.row.hash] });
      return { key, secret: minted.secret };
    },

    /** The workspace's keys, newest first: managers see all, members their own. */
    async listKeys({ scope }: { scope: Scope }): Promise<KeyView[]> {
      const now = clock.now();
      const mine = roleAllows(scope.role, 'keys:manage') ? undefined : actorUserId(scope);
      return db.tenant(scope.workspaceId, async (tx) => {
        const rows = await repo.listKeys(tx, scope.workspaceId, mine);
        const secrets = await repo.secretsOf(
          tx,
          scope.workspaceId,
          rows.map((r) => r.id),
        );
        return rows.map((r) =>
          toView(
            r,
            secrets.filter((s) => s.keyId === r.id),
            now,
          ),
        );
      });
    },

    async getKey({ scope, keyId }: { scope: Scope; keyId: string }): Promise<KeyView> {
      const now = clock.now();
      return db.tenant(scope.workspaceId, async (tx) => viewOf(tx, await visibleKey(tx, scope, keyId, false), now));
    },

    /** Changes a key's name, scopes, limits, allow-lists or expiry (not its secret). */
    async updateKey({ scope, keyId, input }: { scope: Scope; keyId: string; input: UpdateKeyInput }): Promise<KeyView> {
      const now = clock.now();
      const patch: KeyPatch = { updatedAt: now };
      if (input.name !== undefined) patch.name = input.name.trim();
      if (input.allowedModels !== undefined) {
        patch.allowedModels = input.allowedModels ? [...new Set(input.allowedModels)] : null;
      }
      if (input.rateLimitRpm !== undefined) patch.rateLimitRpm = input.rateLimitRpm;
      if (input.rateLimitTpm !== undefined) patch.rateLimitTpm = input.rateLimitTpm;
      if (input.spendLimitMicros !== undefined) patch.spendLimitMicros = input.spendLimitMicros;
      if (input.spendLimitPeriod !== undefined) patch.spendLimitPeriod = input.spendLimitPeriod;
      const expiresAt = checkExpiry(input.expiresAt, now);
      if (expiresAt !== undefined) patch.expiresAt = expiresAt;
      const ipAllowlist = checkCidrs(input.ipAllowlist);
      if (ipAllowlist !== undefined) patch.ipAllowlist = ipAllowlist;
      const newScopes = input.scopes === undefined ? null : dedupe(input.scopes);
      if (newScopes) {
        patch.scopes = newScopes;
        assertRoleAllowsScopes(scope.role, newScopes, 'Your');
        // The key's ceiling is its creator's role, whoever edits it. Asked before the
        // transaction: the membership lookup opens one of its own.
        const current = await db.tenant(scope.workspaceId, (tx) => visibleKey(tx, scope, keyId, false));
        const creatorRole = (await deps.members.resolveMembership(scope.workspaceId, current.createdBy))?.role;
        if (!creatorRole) throw conflict('The member who created this key is no longer in the workspace.');
        assertRoleAllowsScopes(creatorRole, newScopes, "The key creator's");
      }
      const view = await db.tenant(scope.workspaceId, async (tx) => {
        const row = await visibleKey(tx, scope, keyId, true);
        if (row.revokedAt) throw conflict('This API key is revoked; create a new one.');
        checkSpend(
          patch.spendLimitMicros !== undefined ? patch.spendLimitMicros : row.spendLimitMicros,
          patch.spendLimitPeriod !== undefined ? patch.spendLimitPeriod : row.spendLimitPeriod,
        );
        if (newScopes) await assertWithinCaller(tx, scope, newScopes);
        const updated = await repo.updateKey(tx, scope.workspaceId, keyId, patch);
        if (!updated) throw notFound('API key');
        const diff: Record<string, unknown> = {};
        for (const field of Object.keys(input) as Array<keyof UpdateKeyInput>) {
          const from = row[field];
          const to = updated[field];
          diff[field] = {
            from: from instanceof Date ? from.toISOString() : from,
            to: to instanceof Date ? iso(to) : to,
          };
        }
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'key.updated',
          target: { type: 'api_key', id: keyId },
          diff,
        });
        return viewOf(tx, updated, now);
      });
      await announce({ keys: [keyId] });
      return view;
    },

    /** Revokes a key: every replica refuses it from the next request on. Revoked keys stay listed. */
    async revokeKey({ scope, keyId }: { scope: Scope; keyId: string }): Promise<KeyView> {
      const now = clock.now();
      const view = await db.tenant(scope.workspaceId, async (tx) => {
        const row = await visibleKey(tx, scope, keyId, true);
        if (row.revokedAt) throw conflict('This API key is already revoked.');
        await repo.revokeKeys(tx, scope.workspaceId, { keyId }, now, actorUserId(scope));
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'key.revoked',
          target: { type: 'api_key', id: keyId },
          diff: { name: row.name },
        });
        const revoked = await repo.findKey(tx, scope.workspaceId, keyId);
        return viewOf(tx, revoked ?? row, now);
      });
      await announce({ keys: [keyId] });
      return view;
    },

    /**
     * Gives the key a new secret; the old one keeps working for `gracePeriodSeconds`
     * (default 24 h, 0 = stops now). The key's id, settings and history stay.
     */
    async rollKey({
      scope,
      keyId,
      gracePeriodSeconds,
    }: {
      scope: Scope;
      keyId: string;
      gracePeriodSeconds?: number;
    }): Promise<KeyWithSecret> {
      const grace = gracePeriodSeconds ?? DEFAULT_GRACE_SECONDS;
      if (!Number.isInteger(grace) || grace < 0 || grace > MAX_GRACE_SECONDS) {
        throw invalid('/gracePeriodSeconds', `The grace period is 0 to ${MAX_GRACE_SECONDS} seconds.`);
      }
      const now = clock.now();
      const minted = mintSecret(deps.env, keyId, scope.workspaceId, now);
      const oldUntil = new Date(now.getTime() + grace * 1000);
      const key = await db.tenant(scope.workspaceId, async (tx) => {
        const row = await visibleKey(tx, scope, keyId, true);
        if (row.revokedAt) throw conflict('This API key is revoked; create a new one.');
        if (statusOf(row, now) === 'expired') throw conflict('This API key has expired; extend its expiry first.');
        await repo.expireSecrets(tx, scope.workspaceId, keyId, oldUntil);
        await repo.insertSecret(tx, minted.row);
        await repo.updateKey(tx, scope.workspaceId, keyId, { updatedAt: now });
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'key.rolled',
          target: { type: 'api_key', id: keyId },
          diff: { gracePeriodSeconds: grace, previousSecretsExpireAt: oldUntil.toISOString() },
        });
        return viewOf(tx, { ...row, updatedAt: now }, now);
      });
      await announce({ keys: [keyId], hashes: [minted.row.hash] });
      return { key, secret: minted.secret };
    },

    /**
     * Authenticates a presented key: checksum first (no database for junk), then the cache
     * or one lookup by hash, then revocation, expiry, the creator's membership and the IP
     * allow-list. Throws the 401/403 the caller should answer.
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

    /** What `GET /api/keys/self` answers: the calling key and its workspace. */
    describeSelf(p: KeyPrincipal): SelfView {
      return {
        id: p.keyId,
        name: p.name,
        workspaceId: p.workspaceId,
        scopes: [...p.scopes],
        createdBy: p.userId,
        expiresAt: iso(p.expiresAt),
      };
    },

    /**
     * Reacts to workspace changes inside their transaction: a removed member's keys are
     * revoked; role changes and deletions drop cached keys (their ceiling changed).
     */
    async onWorkspaceEvent(e: WorkspaceEvent, tx: Database): Promise<void> {
      const now = clock.now();
      switch (e.type) {
        case 'member.removed': {
          const ids = await repo.revokeKeys(
            tx,
            e.workspaceId,
            { createdBy: e.userId },
            now,
            actorUserIdOrNull(e.actor),
          );
          if (ids.length > 0) await announce({ keys: ids });
          return;
        }
        case 'member.role_changed': {
          const ids = (await repo.listKeys(tx, e.workspaceId, e.userId)).map((r) => r.id);
          if (ids.length > 0) await announce({ keys: ids });
          return;
        }
        case 'ownership.transferred':
        case 'workspace.deleting': {
          const ids = (await repo.listKeys(tx, e.workspaceId)).map((r) => r.id);
          if (ids.length > 0) await announce({ keys: ids });
          return;
        }
        default:
          return;
      }
    },

    /** Applies an invalidation another replica (or this one) announced on the bus. */
    applyInvalidation(message: string): void {
      const inv = parseInvalidation(message);
      if (inv) cache.invalidate(inv);
      else deps.logger.warn('keys: ignored a malformed invalidation message');
    },

    /** Writes pending last-used times now (normally once a minute, and on shutdown). */
    flushUsage: () => deps.usage.flush(),

    /** Forgets every cached verification (after a bus reconnect; the benchmark's miss case). */
    clearCache: () => cache.clear(),
  };
}

export type KeysService = ReturnType<typeof keysService>;

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
