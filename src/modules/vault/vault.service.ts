import type { Bus } from '../../platform/bus/index.ts';
import type { Clock } from '../../platform/clock.ts';
import { afterCommit, type Database, type Db } from '../../platform/db/db.ts';
import { newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import {
  newDataKey,
  open,
  ownerKey,
  parseCiphertext,
  seal,
  unwrapKey,
  type VaultContext,
  VaultError,
  type VaultOwner,
  wrapKey,
} from './vault.crypto.ts';
import type { Keyring } from './vault.keyring.ts';
import { pseudonymizer } from './vault.pseudonyms.ts';
import { type VaultRepo, vaultRepo } from './vault.repo.ts';
import type { DataKeyRow } from './vault.tables.ts';

/** Tells every replica that an owner's data key was destroyed, so each drops it from memory at once. */
export const VAULT_CHANNEL = 'berth.vault.destroyed';

export type VaultServiceDeps = {
  db: Pick<Db, 'system'>;
  keyring: Keyring;
  clock: Clock;
  logger?: Pick<Logger, 'info' | 'warn'>;
  /** The replicas' bus: a destroyed key is forgotten by every replica (without it, by this one only). */
  bus?: Pick<Bus, 'publish' | 'subscribe'>;
  repo?: VaultRepo;
  /** Unwrapped data keys kept in memory (default 1000 owners, 5 minutes). */
  cache?: { maxEntries?: number; ttlMs?: number };
  /** Keys rewrapped per transaction by rotateKek (default 100). */
  rotateBatchSize?: number;
};

type CachedKey = { id: string; dek: Buffer; expiresAt: number };

const OWNER_TYPES: ReadonlySet<string> = new Set<VaultOwner['type']>(['user', 'workspace', 'platform']);

function parseOwner(message: string): VaultOwner | null {
  try {
    const m = JSON.parse(message) as { type?: unknown; id?: unknown };
    return typeof m.type === 'string' && OWNER_TYPES.has(m.type) && typeof m.id === 'string' && m.id.length > 0
      ? { type: m.type as VaultOwner['type'], id: m.id }
      : null;
  } catch {
    return null;
  }
}

/**
 * A small LRU of unwrapped data keys by owner. Only keys read or created in the vault's own
 * committed transactions enter it (a caller's transaction may still roll back). After a
 * destroy, the owner stays out of the cache for one TTL so a concurrent reader cannot put
 * the destroyed key back.
 */
function keyCache(clock: Clock, maxEntries: number, ttlMs: number) {
  const entries = new Map<string, CachedKey>();
  const shredded = new Map<string, number>();
  const drop = (key: string) => {
    const e = entries.get(key);
    if (e) e.dek.fill(0);
    entries.delete(key);
  };
  return {
    get(owner: VaultOwner): CachedKey | null {
      const key = ownerKey(owner);
      const e = entries.get(key);
      if (!e) return null;
      if (e.expiresAt <= clock.now().getTime()) {
        drop(key);
        return null;
      }
      entries.delete(key);
      entries.set(key, e);
      return e;
    },
    set(owner: VaultOwner, id: string, dek: Buffer) {
      const key = ownerKey(owner);
      const now = clock.now().getTime();
      const until = shredded.get(key);
      if (until !== undefined) {
        if (until > now) return;
        shredded.delete(key);
      }
      drop(key);
      entries.set(key, { id, dek: Buffer.from(dek), expiresAt: now + ttlMs });
      while (entries.size > maxEntries) {
        const oldest = entries.keys().next().value;
        if (oldest === undefined) break;
        drop(oldest);
      }
    },
    forget(owner: VaultOwner) {
      const key = ownerKey(owner);
      drop(key);
      shredded.set(key, clock.now().getTime() + ttlMs);
    },
    clear() {
      for (const key of [...entries.keys()]) drop(key);
    },
  };
}

/**
 * The vault's use cases. Every method takes an optional transaction: pass the caller's to
 * encrypt, decrypt or destroy as part of it; otherwise the vault opens its own system
 * transaction (vault_data_keys is not workspace-scoped).
 *
 * @example
 * const ct = await vault.encrypt({ owner: { type: 'user', id: userId }, record: factorId, field: 'secret' }, secret, tx);
 * const secret = await vault.decrypt({ owner: { type: 'user', id: userId }, record: factorId, field: 'secret' }, ct, tx);
 */
export function createVaultService(deps: VaultServiceDeps) {
  const repo = deps.repo ?? vaultRepo;
  const { keyring, clock } = deps;
  const cache = keyCache(clock, deps.cache?.maxEntries ?? 1000, deps.cache?.ttlMs ?? 5 * 60_000);
  const batchSize = deps.rotateBatchSize ?? 100;

  /** Forgets the owner's key here and tells every other replica to (after the destruction committed). */
  async function announceDestroyed(owner: VaultOwner): Promise<void> {
    cache.forget(owner);
    if (!deps.bus) return;
    try {
      await deps.bus.publish(VAULT_CHANNEL, JSON.stringify({ type: owner.type, id: owner.id }));
    } catch {
      deps.logger?.warn(
        'vault: could not tell other replicas of a destroyed data key (their copy expires within 5 minutes)',
      );
    }
  }

  /** Runs fn in the caller's transaction, or in a vault-owned system transaction (`own`). */
  function inTx<T>(tx: Database | undefined, fn: (tx: Database, own: boolean) => Promise<T>): Promise<T> {
    return tx ? fn(tx, false) : deps.db.system((t) => fn(t, true));
  }

  function kekFor(version: number): Buffer {
    const kek = keyring.all.get(version);
    if (!kek) {
      throw new Error(
        `Key-encryption key version ${version} is not in the keyring (BERTH_KEK / BERTH_KEK_FILE); add it back until \`berth vault rotate\` has rewrapped every data key.`,
      );
    }
    return kek;
  }

  function unwrapRow(row: DataKeyRow): Buffer {
    if (!row.wrappedKey) throw new VaultError('key_destroyed');
    const owner = { type: row.ownerType, id: row.ownerId };
    return unwrapKey(kekFor(row.kekVersion), row.kekVersion, owner, row.id, row.wrappedKey);
  }

  async function keyForEncrypt(owner: VaultOwner, tx?: Database): Promise<{ id: string; dek: Buffer }> {
    const cached = cache.get(owner);
    if (cached) return cached;
    const found = await inTx(tx, async (t, own) => {
      const live = await repo.findLive(t, owner);
      if (live) return { id: live.id, dek: unwrapRow(live), own };
      const id = newId('dk', clock.now());
      const dek = newDataKey();
      const wrappedKey = wrapKey(keyring.current.key, keyring.current.version, owner, id, dek);
      const created = await repo.insertIfAbsent(t, {
        id,
        owner,
        kekVersion: keyring.current.version,
        wrappedKey,
        createdAt: clock.now(),
      });
      if (created) return { id, dek, own };
      // Another first encrypt for this owner won the race: use its key.
      const winner = await repo.findLive(t, owner);
      if (!winner) throw new Error('vault: data key vanished while being created');
      return { id: winner.id, dek: unwrapRow(winner), own };
    });
    if (found.own) cache.set(owner, found.id, found.dek);
    return found;
  }

  async function keyForDecrypt(owner: VaultOwner, keyId: string, tx?: Database): Promise<Buffer> {
    const cached = cache.get(owner);
    if (cached && cached.id === keyId) return cached.dek;
    const found = await inTx(tx, async (t, own) => {
      const row = await repo.findById(t, keyId);
      if (!row) throw new VaultError('key_missing');
      // A key of another owner: the ciphertext was moved. Same answer as a tampered one.
      if (row.ownerType !== owner.type || row.ownerId !== owner.id) throw new VaultError('authentication_failed');
      if (row.destroyedAt || !row.wrappedKey) throw new VaultError('key_destroyed');
      return { dek: unwrapRow(row), own };
    });
    if (found.own) cache.set(owner, keyId, found.dek);
    return found.dek;
  }

  return {
    /** Encrypts under the owner's data key (created on first use). Pass `tx` to take part in a transaction. */
    async encrypt(ctx: VaultContext, plaintext: Buffer | string, tx?: Database): Promise<Buffer> {
      const { id, dek } = await keyForEncrypt(ctx.owner, tx);
      return seal(dek, id, ctx, typeof plaintext === 'string' ? Buffer.from(plaintext, 'utf8') : plaintext);
    },

    /**
     * Decrypts a ciphertext made by `encrypt` with the same context. Throws VaultError:
     * reason 'key_destroyed' (code not_found) after crypto-shredding, 'key_missing'
     * (not_found), 'malformed' or 'authentication_failed' (internal_error) when the bytes
     * were altered or belong to another owner, record or field.
     */
    async decrypt(ctx: VaultContext, ciphertext: Buffer, tx?: Database): Promise<Buffer> {
      const parsed = parseCiphertext(ciphertext);
      const dek = await keyForDecrypt(ctx.owner, parsed.keyId, tx);
      return open(dek, parsed, ctx);
    },

    /** `decrypt`, as UTF-8 text. */
    async decryptString(ctx: VaultContext, ciphertext: Buffer, tx?: Database): Promise<string> {
      const parsed = parseCiphertext(ciphertext);
      const dek = await keyForDecrypt(ctx.owner, parsed.keyId, tx);
      return open(dek, parsed, ctx).toString('utf8');
    },

    /**
     * Crypto-shredding: clears the owner's data key so every ciphertext of the owner is
     * unreadable for good. Idempotent. A later encrypt for the same owner gets a new key.
     * Once the destruction commits, every replica is told through the bus to drop the key
     * from memory, so none of them decrypts (or encrypts) with it again.
     */
    async destroyOwnerKey(owner: VaultOwner, tx?: Database): Promise<{ destroyed: number }> {
      cache.forget(owner);
      const ids = await inTx(tx, async (t, own) => {
        const destroyed = await repo.destroy(t, owner, clock.now());
        // In the caller's transaction, the key is gone for others only once it commits:
        // forget it again then (a reader meanwhile still saw it live) and tell the replicas.
        if (!own && destroyed.length > 0) afterCommit(t, () => announceDestroyed(owner));
        return destroyed;
      });
      cache.forget(owner);
      if (ids.length > 0) {
        deps.logger?.info({ ownerType: owner.type, keys: ids }, 'vault data key destroyed');
        if (!tx) await announceDestroyed(owner);
      }
      return { destroyed: ids.length };
    },

    /**
     * Follows destructions on every replica (and drops every cached key after a bus gap, when
     * messages may have been lost); returns the unsubscribe. Called once per process.
     */
    async follow(): Promise<() => Promise<void>> {
      if (!deps.bus) return async () => undefined;
      return deps.bus.subscribe(
        VAULT_CHANNEL,
        (message) => {
          const owner = parseOwner(message);
          if (owner) cache.forget(owner);
          else deps.logger?.warn('vault: ignored a malformed message');
        },
        () => cache.clear(),
      );
    },

    /**
     * Rewraps every live data key under the current KEK version, `rotateBatchSize` keys per
     * transaction. Idempotent and safe to run from several processes at once. Afterwards
     * older KEK versions can leave the keyring.
     */
    async rotateKek(): Promise<{ rewrapped: number; kekVersion: number }> {
      const { version, key } = keyring.current;
      let rewrapped = 0;
      for (;;) {
        const n = await deps.db.system(async (t) => {
          const rows = await repo.lockStale(t, version, batchSize);
          for (const row of rows) {
            const dek = unwrapRow(row);
            const owner = { type: row.ownerType, id: row.ownerId };
            await repo.rewrap(t, row.id, version, wrapKey(key, version, owner, row.id, dek), clock.now());
            dek.fill(0);
          }
          return rows.length;
        });
        rewrapped += n;
        if (n < batchSize) break;
      }
      if (rewrapped > 0) deps.logger?.info({ rewrapped, kekVersion: version }, 'vault data keys rewrapped');
      return { rewrapped, kekVersion: version };
    },

    /** Data keys per KEK version: an old version may leave the keyring once it has no live keys. */
    async status(): Promise<{
      kekVersion: number;
      keyringVersions: number[];
      keys: { kekVersion: number; live: number; destroyed: number }[];
    }> {
      const keys = await deps.db.system((t) => repo.countByKekVersion(t));
      return {
        kekVersion: keyring.current.version,
        keyringVersions: [...keyring.all.keys()].sort((a, b) => a - b),
        keys,
      };
    },

    /**
     * The pseudonym of an id (keyed by the KEK; see vault.pseudonyms.ts): what records kept
     * after an erasure show instead of the erased user's id.
     */
    pseudonym: pseudonymizer(keyring),

    /** Drops every unwrapped key held in memory (tests, shutdown). */
    clearCache(): void {
      cache.clear();
    },
  };
}

export type VaultService = ReturnType<typeof createVaultService>;
