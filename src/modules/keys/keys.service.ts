import type { Clock } from '../../platform/clock.ts';
import { sha256Hex } from '../../platform/crypto.ts';
import { bindTenant, type Database, type Db } from '../../platform/db/db.ts';
import { AppError, notFound } from '../../platform/errors.ts';
import type { Actor, Role, Scope } from '../../platform/http/context.ts';
import { isId, newId } from '../../platform/ids.ts';
import type { AuditInput } from '../audit/index.ts';
import { roleAllows, type WorkspaceEvent } from '../workspaces/index.ts';
import { generateKey, type KeyEnvironment, parseKey } from './keys.format.ts';
import { normalizeCidrs } from './keys.net.ts';
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
import { assertRoleAllowsScopes, isScope, type KeyScope, scopePermissions, scopesCover } from './keys.scopes.ts';
import type { ApiKeyRow, ApiKeySecretRow } from './keys.tables.ts';
import type { UsageTracker } from './keys.usage.ts';
import type { KeyPrincipal, KeyVerifier } from './keys.verify.ts';

/** What the keys module records in the audit log (the audit module's `record`). */
export type KeysAudit = { record(tx: Database, input: AuditInput): Promise<unknown> };

/** The workspace facts key management reads inside its own transaction. */
type Members = {
  /** The member's role, share-locked in `tx` (a concurrent role change waits, or is seen). */
  lockMemberRole(tx: Database, workspaceId: string, userId: string): Promise<Role | null>;
};

type Deps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: KeysRepo;
  clock: Clock;
  audit: KeysAudit;
  members: Members;
  usage: UsageTracker;
  verifier: Pick<
    KeyVerifier,
    'announce' | 'announceAfterCommit' | 'verifyKey' | 'applyInvalidation' | 'clearCache' | 'forgetUser'
  >;
  env: KeyEnvironment;
};

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
 * what it cached about the key (keys.verify.ts holds verification and the cache).
 *
 * Who may do what to a key: its creator manages it within their role; members with
 * `keys:manage` may see, edit and revoke others' keys, but only the creator rolls a key
 * (a roll returns a secret), and an edit never leaves a key with more than the editor has.
 *
 * @example
 * const { key, secret } = await keys.createKey({ scope, input: { name: 'CI', scopes: ['gateway:invoke'] } });
 * const principal = await keys.verifyKey(secret, '203.0.113.7');
 */
export function keysService(deps: Deps) {
  const { db, repo, clock, verifier } = deps;
  const { announce } = verifier;

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

  /**
   * Editing a key (any field: clearing an allow-list or a limit widens it too) or rolling it
   * takes a caller who could hold everything the key holds: for someone else's key a role
   * allowing its scopes, and for a key caller its own scopes covering them (an owner's
   * workspace:admin key cannot reach the owner's gateway key).
   */
  async function assertMayEdit(tx: Database, scope: Scope, row: ApiKeyRow) {
    const scopes = row.scopes.filter(isScope);
    if (row.createdBy !== actorUserId(scope)) assertRoleAllowsScopes(scope.role, scopes, 'Your');
    await assertWithinCaller(tx, scope, scopes);
  }

  async function viewOf(tx: Database, row: ApiKeyRow, now: Date): Promise<KeyView> {
    return toView(row, await repo.secretsOf(tx, row.workspaceId, [row.id]), now);
  }

  return {
    /**
     * Creates a key carrying the caller's rights; the plaintext is returned this once. With
     * `tx`, it joins the caller's transaction (binding it to the scope's workspace); `actor`
     * names who the `key.created` event is attributed to when it is not `scope.actor`
     * (first-run setup: the system, while the key still belongs to the new user).
     */
    async createKey({
      scope,
      input,
      tx: outer,
      actor,
    }: {
      scope: Scope;
      input: CreateKeyInput;
      tx?: Database;
      actor?: Actor;
    }): Promise<KeyWithSecret> {
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
      const write = async (tx: Database) => {
        await assertWithinCaller(tx, scope, scopes);
        await repo.insertKey(tx, row);
        await repo.insertSecret(tx, minted.row);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: actor ?? scope.actor,
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
      };
      // A lookup of this hash before it existed may be remembered as unknown: forget it.
      if (outer) {
        await bindTenant(outer, scope.workspaceId);
        const key = await write(outer);
        verifier.announceAfterCommit(outer, { hashes: [minted.row.hash] });
        return { key, secret: minted.secret };
      }
      const key = await db.tenant(scope.workspaceId, write);
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

    /**
     * What a live key allows its calls (models, rate limits), for work it started that calls
     * models later (agent runs); null once it is revoked or expired.
     *
     * @example const policy = await keys.policyOf(run.workspaceId, run.keyId);
     */
    async policyOf(
      workspaceId: string,
      keyId: string,
    ): Promise<{ allowedModels: string[] | null; rateLimitRpm: number | null; rateLimitTpm: number | null } | null> {
      const now = clock.now();
      const row = await db.tenant(workspaceId, (tx) => repo.findKey(tx, workspaceId, keyId));
      if (!row || row.revokedAt || (row.expiresAt && row.expiresAt <= now)) return null;
      return { allowedModels: row.allowedModels, rateLimitRpm: row.rateLimitRpm, rateLimitTpm: row.rateLimitTpm };
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
      }
      const view = await db.tenant(scope.workspaceId, async (tx) => {
        const row = await visibleKey(tx, scope, keyId, true);
        if (row.revokedAt) throw conflict('This API key is revoked; create a new one.');
        await assertMayEdit(tx, scope, row);
        checkSpend(
          patch.spendLimitMicros !== undefined ? patch.spendLimitMicros : row.spendLimitMicros,
          patch.spendLimitPeriod !== undefined ? patch.spendLimitPeriod : row.spendLimitPeriod,
        );
        if (newScopes) {
          // The key's ceiling is its creator's role, whoever edits it: read in this
          // transaction, share-locked, so a concurrent demotion is either seen or waits.
          const creatorRole = await deps.members.lockMemberRole(tx, scope.workspaceId, row.createdBy);
          if (!creatorRole) throw conflict('The member who created this key is no longer in the workspace.');
          assertRoleAllowsScopes(creatorRole, newScopes, "The key creator's");
          await assertWithinCaller(tx, scope, newScopes);
        }
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
     * (default 24 h, 0 = stops now). The key's id, settings and history stay. Only the
     * key's creator may roll it (403 `forbidden` for anyone else).
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
        // A roll hands out the key's secret: only its creator may have it (managers revoke).
        if (row.createdBy !== actorUserId(scope)) {
          throw new AppError('forbidden', 'Only the member who created this API key can roll it; revoke it instead.');
        }
        if (row.revokedAt) throw conflict('This API key is revoked; create a new one.');
        await assertMayEdit(tx, scope, row);
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

    /** See keys.verify.ts: checksum, cache or one lookup, revocation, expiry, creator, allow-list. */
    verifyKey: (text: string, ip: string): Promise<KeyPrincipal> => verifier.verifyKey(text, ip),

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
     * revoked; role changes and deletions drop cached keys (their ceiling changed). Replicas
     * hear about it once the transaction has committed, so none re-reads the old state.
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
          if (ids.length > 0) verifier.announceAfterCommit(tx, { keys: ids });
          return;
        }
        case 'member.role_changed': {
          const ids = (await repo.listKeys(tx, e.workspaceId, e.userId)).map((r) => r.id);
          if (ids.length > 0) verifier.announceAfterCommit(tx, { keys: ids });
          return;
        }
        case 'ownership.transferred':
        case 'workspace.deleting': {
          const ids = (await repo.listKeys(tx, e.workspaceId)).map((r) => r.id);
          if (ids.length > 0) verifier.announceAfterCommit(tx, { keys: ids });
          return;
        }
        default:
          return;
      }
    },

    /** Applies an invalidation another replica (or this one) announced on the bus. */
    applyInvalidation: (message: string): void => verifier.applyInvalidation(message),

    /**
     * Revokes every live key a user created, in every workspace (their account is being
     * deleted), inside the caller's system transaction `tx`; every replica forgets the keys
     * once it commits. Returns the revoked keys' ids.
     */
    async revokeUserKeys(tx: Database, userId: string): Promise<string[]> {
      const now = clock.now();
      const ids: string[] = [];
      for (const workspaceId of await repo.workspacesOfLiveKeys(tx, userId)) {
        ids.push(...(await repo.revokeKeys(tx, workspaceId, { createdBy: userId }, now, userId)));
      }
      if (ids.length > 0) verifier.announceAfterCommit(tx, { keys: ids });
      return ids;
    },

    /** Drops every replica's cached keys of a user whose account was disabled. */
    forgetUser: (userId: string): Promise<void> => verifier.forgetUser(userId),

    /** Writes pending last-used times now (normally once a minute, and on shutdown). */
    flushUsage: () => deps.usage.flush(),

    /** Forgets every cached verification (after a bus reconnect; the benchmark's miss case). */
    clearCache: (): void => verifier.clearCache(),
  };
}

export type KeysService = ReturnType<typeof keysService>;
