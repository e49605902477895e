import { and, asc, eq, isNotNull, isNull, ne, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import type { VaultOwner } from './vault.crypto.ts';
import { type DataKeyRow, vaultDataKeys as k } from './vault.tables.ts';

/** Every SQL statement on vault_data_keys. Each takes the transaction it runs in. */
export const vaultRepo = {
  async findLive(tx: Database, owner: VaultOwner): Promise<DataKeyRow | null> {
    const rows = await tx
      .select()
      .from(k)
      .where(and(eq(k.ownerType, owner.type), eq(k.ownerId, owner.id), isNull(k.destroyedAt)))
      .limit(1);
    return rows[0] ?? null;
  },

  async findById(tx: Database, id: string): Promise<DataKeyRow | null> {
    const rows = await tx.select().from(k).where(eq(k.id, id)).limit(1);
    return rows[0] ?? null;
  },

  /** Inserts a new live key unless the owner already has one (two first encrypts racing). */
  async insertIfAbsent(
    tx: Database,
    row: { id: string; owner: VaultOwner; kekVersion: number; wrappedKey: Buffer; createdAt: Date },
  ): Promise<boolean> {
    const inserted = await tx
      .insert(k)
      .values({
        id: row.id,
        ownerType: row.owner.type,
        ownerId: row.owner.id,
        kekVersion: row.kekVersion,
        wrappedKey: row.wrappedKey,
        createdAt: row.createdAt,
      })
      .onConflictDoNothing()
      .returning({ id: k.id });
    return inserted.length === 1;
  },

  /** Crypto-shredding: clears the key material of the owner's live key(s). */
  async destroy(tx: Database, owner: VaultOwner, at: Date): Promise<string[]> {
    const rows = await tx
      .update(k)
      .set({ wrappedKey: null, destroyedAt: at })
      .where(and(eq(k.ownerType, owner.type), eq(k.ownerId, owner.id), isNull(k.destroyedAt)))
      .returning({ id: k.id });
    return rows.map((r) => r.id);
  },

  /** Live keys not yet wrapped under `kekVersion`, locked for this transaction, skipping ones another rotator holds. */
  async lockStale(tx: Database, kekVersion: number, limit: number): Promise<DataKeyRow[]> {
    return tx
      .select()
      .from(k)
      .where(and(isNull(k.destroyedAt), isNotNull(k.wrappedKey), ne(k.kekVersion, kekVersion)))
      .orderBy(asc(k.id))
      .limit(limit)
      .for('update', { skipLocked: true });
  },

  async rewrap(tx: Database, id: string, kekVersion: number, wrappedKey: Buffer, at: Date): Promise<void> {
    await tx.update(k).set({ kekVersion, wrappedKey, rotatedAt: at }).where(eq(k.id, id));
  },

  async countByKekVersion(tx: Database): Promise<{ kekVersion: number; live: number; destroyed: number }[]> {
    const rows = await tx
      .select({
        kekVersion: k.kekVersion,
        live: sql<number>`count(*) filter (where ${k.destroyedAt} is null)::int`,
        destroyed: sql<number>`count(*) filter (where ${k.destroyedAt} is not null)::int`,
      })
      .from(k)
      .groupBy(k.kekVersion)
      .orderBy(asc(k.kekVersion));
    return rows.map((r) => ({ kekVersion: r.kekVersion, live: Number(r.live), destroyed: Number(r.destroyed) }));
  },
};

export type VaultRepo = typeof vaultRepo;
