import { and, desc, eq, inArray, isNull, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { type ApiKeyRow, type ApiKeySecretRow, apiKeySecrets, apiKeys } from './keys.tables.ts';

export type KeyPatch = Partial<
  Pick<
    ApiKeyRow,
    | 'name'
    | 'scopes'
    | 'allowedModels'
    | 'rateLimitRpm'
    | 'rateLimitTpm'
    | 'spendLimitMicros'
    | 'spendLimitPeriod'
    | 'ipAllowlist'
    | 'expiresAt'
  >
> & { updatedAt: Date };

/**
 * Every SQL statement on the keys module's tables. Each runs on the transaction it is given
 * and names the workspace in every query, except the two that legitimately span workspaces
 * (the lookup by hash that authenticates a request, and the batched last-used update),
 * which run inside `db.system`.
 */
export const keysRepo = {
  async insertKey(tx: Database, row: ApiKeyRow): Promise<void> {
    await tx.insert(apiKeys).values(row);
  },

  async insertSecret(tx: Database, row: ApiKeySecretRow): Promise<void> {
    await tx.insert(apiKeySecrets).values(row);
  },

  async findKey(tx: Database, workspaceId: string, keyId: string): Promise<ApiKeyRow | null> {
    const rows = await tx
      .select()
      .from(apiKeys)
      .where(and(eq(apiKeys.workspaceId, workspaceId), eq(apiKeys.id, keyId)))
      .limit(1);
    return rows[0] ?? null;
  },

  /** The key, locked until the transaction ends (serialises update, revoke and roll). */
  async lockKey(tx: Database, workspaceId: string, keyId: string): Promise<ApiKeyRow | null> {
    const rows = await tx
      .select()
      .from(apiKeys)
      .where(and(eq(apiKeys.workspaceId, workspaceId), eq(apiKeys.id, keyId)))
      .for('update');
    return rows[0] ?? null;
  },

  /** Keys of the workspace, newest first; only `createdBy`'s when given. */
  async listKeys(tx: Database, workspaceId: string, createdBy?: string): Promise<ApiKeyRow[]> {
    return tx
      .select()
      .from(apiKeys)
      .where(
        and(
          eq(apiKeys.workspaceId, workspaceId),
          createdBy === undefined ? undefined : eq(apiKeys.createdBy, createdBy),
        ),
      )
      .orderBy(desc(apiKeys.createdAt), desc(apiKeys.id));
  },

  /**
   * Ids of the keys `userId` created, in every workspace (a db.system() transaction): what
   * replicas drop from their caches when the account is disabled.
   */
  /** The workspaces where a user created keys that are not revoked yet (system work). */
  async workspacesOfLiveKeys(tx: Database, userId: string): Promise<string[]> {
    const rows = await tx
      .selectDistinct({ workspaceId: apiKeys.workspaceId })
      .from(apiKeys)
      .where(and(eq(apiKeys.createdBy, userId), isNull(apiKeys.revokedAt)));
    return rows.map((r) => r.workspaceId);
  },

  async keyIdsOfCreator(tx: Database, userId: string): Promise<string[]> {
    const rows = await tx.select({ id: apiKeys.id }).from(apiKeys).where(eq(apiKeys.createdBy, userId));
    return rows.map((r) => r.id);
  },

  /** Every secret of these keys, newest first. */
  async secretsOf(tx: Database, workspaceId: string, keyIds: string[]): Promise<ApiKeySecretRow[]> {
    if (keyIds.length === 0) return [];
    return (
      tx
        .select()
        .from(apiKeySecrets)
        .where(and(eq(apiKeySecrets.workspaceId, workspaceId), inArray(apiKeySecrets.keyId, keyIds)))
        // Within one instant, the secret a roll just made (no expiry) comes before the one it replaced.
        .orderBy(
          desc(apiKeySecrets.createdAt),
          sql`${apiKeySecrets.expiresAt} is null desc`,
          sql`${apiKeySecrets.expiresAt} desc nulls first`,
          desc(apiKeySecrets.id),
        )
    );
  },

  async updateKey(tx: Database, workspaceId: string, keyId: string, patch: KeyPatch): Promise<ApiKeyRow | null> {
    const rows = await tx
      .update(apiKeys)
      .set(patch)
      .where(and(eq(apiKeys.workspaceId, workspaceId), eq(apiKeys.id, keyId)))
      .returning();
    return rows[0] ?? null;
  },

  /** Revokes keys (and their secrets) that are not revoked yet; returns the ids it revoked. */
  async revokeKeys(
    tx: Database,
    workspaceId: string,
    where: { keyId: string } | { createdBy: string },
    at: Date,
    by: string | null,
  ): Promise<string[]> {
    const target = 'keyId' in where ? eq(apiKeys.id, where.keyId) : eq(apiKeys.createdBy, where.createdBy);
    const rows = await tx
      .update(apiKeys)
      .set({ revokedAt: at, revokedBy: by, updatedAt: at })
      .where(and(eq(apiKeys.workspaceId, workspaceId), target, isNull(apiKeys.revokedAt)))
      .returning({ id: apiKeys.id });
    const ids = rows.map((r) => r.id);
    if (ids.length > 0) {
      await tx
        .update(apiKeySecrets)
        .set({ revokedAt: at })
        .where(
          and(
            eq(apiKeySecrets.workspaceId, workspaceId),
            inArray(apiKeySecrets.keyId, ids),
            isNull(apiKeySecrets.revokedAt),
          ),
        );
    }
    return ids;
  },

  /** Gives the key's working secrets an expiry no later than `at` (the end of a roll's grace period). */
  async expireSecrets(tx: Database, workspaceId: string, keyId: string, at: Date): Promise<void> {
    await tx
      .update(apiKeySecrets)
      .set({ expiresAt: sql`least(coalesce(${apiKeySecrets.expiresAt}, ${at}), ${at})` })
      .where(
        and(
          eq(apiKeySecrets.workspaceId, workspaceId),
          eq(apiKeySecrets.keyId, keyId),
          isNull(apiKeySecrets.revokedAt),
        ),
      );
  },

  /** The secret with this hash and its key: authenticates a request (spans workspaces: run in `db.system`). */
  async findByHash(tx: Database, hash: string): Promise<{ key: ApiKeyRow; secret: ApiKeySecretRow } | null> {
    const rows = await tx
      .select({ key: apiKeys, secret: apiKeySecrets })
      .from(apiKeySecrets)
      .innerJoin(apiKeys, and(eq(apiKeys.id, apiKeySecrets.keyId), eq(apiKeys.workspaceId, apiKeySecrets.workspaceId)))
      .where(eq(apiKeySecrets.hash, hash))
      .limit(1);
    return rows[0] ?? null;
  },

  /** Records when keys were last used, in one statement; never moves a time backwards (run in `db.system`). */
  async touchLastUsed(tx: Database, entries: Array<{ id: string; at: Date }>): Promise<void> {
    if (entries.length === 0) return;
    const json = JSON.stringify(entries.map((e) => ({ id: e.id, at: e.at.toISOString() })));
    await tx.execute(sql`
      update api_keys k set last_used_at = u.at
        from jsonb_to_recordset(${json}::jsonb) as u(id text, at timestamptz)
       where k.id = u.id and (k.last_used_at is null or k.last_used_at < u.at)`);
  },
};

export type KeysRepo = typeof keysRepo;
