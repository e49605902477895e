import { and, asc, desc, eq, isNull, or } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import {
  oauthAuthorizations as az,
  oauthConnections as c,
  type OAuthAuthorizationRow,
  type OAuthConnectionRow,
  type OAuthProviderRow,
  type OAuthTokensRow,
  oauthProviders as p,
  oauthConnectionTokens as t,
} from './vault.connections.tables.ts';

/** Every SQL statement on the OAuth connection tables. Each takes the transaction it runs in. */
export const connectionsRepo = {
  async insertProvider(tx: Database, row: OAuthProviderRow): Promise<void> {
    await tx.insert(p).values(row);
  },

  async findProvider(tx: Database, workspaceId: string, id: string): Promise<OAuthProviderRow | null> {
    const rows = await tx
      .select()
      .from(p)
      .where(and(eq(p.workspaceId, workspaceId), eq(p.id, id)))
      .limit(1);
    return rows[0] ?? null;
  },

  async findProviderByName(tx: Database, workspaceId: string, name: string): Promise<OAuthProviderRow | null> {
    const rows = await tx
      .select()
      .from(p)
      .where(and(eq(p.workspaceId, workspaceId), eq(p.name, name)))
      .limit(1);
    return rows[0] ?? null;
  },

  async listProviders(tx: Database, workspaceId: string): Promise<OAuthProviderRow[]> {
    return tx.select().from(p).where(eq(p.workspaceId, workspaceId)).orderBy(asc(p.name));
  },

  async setProviderApiHosts(tx: Database, workspaceId: string, id: string, apiHosts: string[]): Promise<void> {
    await tx
      .update(p)
      .set({ apiHosts })
      .where(and(eq(p.workspaceId, workspaceId), eq(p.id, id)));
  },

  async deleteProvider(tx: Database, workspaceId: string, id: string): Promise<void> {
    await tx.delete(p).where(and(eq(p.workspaceId, workspaceId), eq(p.id, id)));
  },

  async insertAuthorization(tx: Database, row: OAuthAuthorizationRow): Promise<void> {
    await tx.insert(az).values(row);
  },

  /** The authorization a callback's state names, locked so two callbacks with one state use it once. */
  async lockAuthorization(tx: Database, stateHash: string): Promise<OAuthAuthorizationRow | null> {
    const rows = await tx.select().from(az).where(eq(az.stateHash, stateHash)).for('update');
    return rows[0] ?? null;
  },

  async markAuthorizationUsed(tx: Database, id: string, at: Date): Promise<void> {
    await tx.update(az).set({ usedAt: at }).where(eq(az.id, id));
  },

  /** A removed member's authorizations in progress in the workspace: they can no longer finish. */
  async deleteAuthorizationsOf(tx: Database, workspaceId: string, userId: string): Promise<void> {
    await tx.delete(az).where(and(eq(az.workspaceId, workspaceId), eq(az.userId, userId)));
  },

  async insertConnection(tx: Database, row: OAuthConnectionRow, tokens: OAuthTokensRow): Promise<void> {
    await tx.insert(c).values(row);
    await tx.insert(t).values(tokens);
  },

  async findConnection(tx: Database, workspaceId: string, id: string): Promise<OAuthConnectionRow | null> {
    const rows = await tx
      .select()
      .from(c)
      .where(and(eq(c.workspaceId, workspaceId), eq(c.id, id)))
      .limit(1);
    return rows[0] ?? null;
  },

  /** The connections a member may use: their own and the workspace's shared ones. */
  async listUsable(
    tx: Database,
    workspaceId: string,
    userId: string,
  ): Promise<Array<OAuthConnectionRow & { providerName: string }>> {
    const rows = await tx
      .select({ connection: c, providerName: p.name })
      .from(c)
      .innerJoin(p, eq(p.id, c.providerId))
      .where(and(eq(c.workspaceId, workspaceId), or(eq(c.userId, userId), eq(c.shared, true))))
      .orderBy(asc(c.id));
    return rows.map((r) => ({ ...r.connection, providerName: r.providerName }));
  },

  async listByProvider(tx: Database, workspaceId: string, providerId: string): Promise<OAuthConnectionRow[]> {
    return tx
      .select()
      .from(c)
      .where(and(eq(c.workspaceId, workspaceId), eq(c.providerId, providerId)));
  },

  /** The user's connections in a workspace (theirs, shared or not). */
  async listByUser(tx: Database, workspaceId: string, userId: string): Promise<OAuthConnectionRow[]> {
    return tx
      .select()
      .from(c)
      .where(and(eq(c.workspaceId, workspaceId), eq(c.userId, userId)));
  },

  /** Every connection of the user, in every workspace (a `db.system` transaction: erasure). */
  async listByUserEverywhere(tx: Database, userId: string): Promise<OAuthConnectionRow[]> {
    return tx.select().from(c).where(eq(c.userId, userId));
  },

  async listByWorkspace(tx: Database, workspaceId: string): Promise<OAuthConnectionRow[]> {
    return tx.select().from(c).where(eq(c.workspaceId, workspaceId));
  },

  /**
   * The connections named `name` a member may use: their own and the workspace's shared
   * ones, active first, then the newest.
   */
  async listNamed(tx: Database, workspaceId: string, userId: string, name: string): Promise<OAuthConnectionRow[]> {
    return tx
      .select()
      .from(c)
      .where(and(eq(c.workspaceId, workspaceId), eq(c.name, name), or(eq(c.userId, userId), eq(c.shared, true))))
      .orderBy(asc(c.status), desc(c.createdAt), asc(c.id));
  },

  /** Whether an active connection already holds the name: among the user's own, or among the shared ones. */
  async nameTaken(
    tx: Database,
    workspaceId: string,
    name: string,
    among: { userId: string } | { shared: true },
    except?: string,
  ): Promise<boolean> {
    const rows = await tx
      .select({ id: c.id })
      .from(c)
      .where(
        and(
          eq(c.workspaceId, workspaceId),
          eq(c.name, name),
          eq(c.status, 'active'),
          'userId' in among ? eq(c.userId, among.userId) : eq(c.shared, true),
        ),
      );
    return rows.some((r) => r.id !== except);
  },

  /** Takes the refresh lease: only one caller at a time renews a connection's tokens. */
  async claimLease(tx: Database, workspaceId: string, id: string, leaseId: string, until: Date): Promise<void> {
    await tx
      .update(c)
      .set({ refreshLeaseId: leaseId, refreshLeaseUntil: until })
      .where(and(eq(c.workspaceId, workspaceId), eq(c.id, id)));
  },

  /** Gives the lease back (only if it is still this caller's). */
  async releaseLease(tx: Database, workspaceId: string, id: string, leaseId: string): Promise<void> {
    await tx
      .update(c)
      .set({ refreshLeaseId: null, refreshLeaseUntil: null })
      .where(and(eq(c.workspaceId, workspaceId), eq(c.id, id), eq(c.refreshLeaseId, leaseId)));
  },

  async findTokens(tx: Database, workspaceId: string, connectionId: string): Promise<OAuthTokensRow | null> {
    const rows = await tx
      .select()
      .from(t)
      .where(and(eq(t.workspaceId, workspaceId), eq(t.connectionId, connectionId)))
      .limit(1);
    return rows[0] ?? null;
  },

  /**
   * The connection row locked for a short change (claiming or ending a refresh lease,
   * sharing, deleting): never held while a provider is called.
   */
  async lockConnection(tx: Database, workspaceId: string, id: string): Promise<OAuthConnectionRow | null> {
    const rows = await tx
      .select()
      .from(c)
      .where(and(eq(c.workspaceId, workspaceId), eq(c.id, id)))
      .for('update');
    return rows[0] ?? null;
  },

  async saveRefreshed(
    tx: Database,
    workspaceId: string,
    id: string,
    patch: {
      accessTokenCiphertext: Buffer;
      refreshTokenCiphertext: Buffer | null;
      expiresAt: Date | null;
      scopes: string[];
      at: Date;
    },
  ): Promise<void> {
    await tx
      .update(c)
      .set({
        expiresAt: patch.expiresAt,
        scopes: patch.scopes,
        refreshedAt: patch.at,
        updatedAt: patch.at,
        refreshLeaseId: null,
        refreshLeaseUntil: null,
      })
      .where(and(eq(c.workspaceId, workspaceId), eq(c.id, id)));
    await tx
      .update(t)
      .set({
        accessTokenCiphertext: patch.accessTokenCiphertext,
        refreshTokenCiphertext: patch.refreshTokenCiphertext,
        updatedAt: patch.at,
      })
      .where(and(eq(t.workspaceId, workspaceId), eq(t.connectionId, id)));
  },

  async markBroken(tx: Database, workspaceId: string, id: string, at: Date): Promise<boolean> {
    const rows = await tx
      .update(c)
      .set({ status: 'broken', brokenAt: at, updatedAt: at, refreshLeaseId: null, refreshLeaseUntil: null })
      .where(and(eq(c.workspaceId, workspaceId), eq(c.id, id), isNull(c.brokenAt)))
      .returning({ id: c.id });
    return rows.length === 1;
  },

  async setShared(tx: Database, workspaceId: string, id: string, shared: boolean, at: Date): Promise<void> {
    await tx
      .update(c)
      .set({ shared, updatedAt: at })
      .where(and(eq(c.workspaceId, workspaceId), eq(c.id, id)));
  },

  /** Deletes the connection and its tokens (explicitly, not only by cascade: the ciphertext row must go now). */
  async deleteConnection(tx: Database, workspaceId: string, id: string): Promise<void> {
    await tx.delete(t).where(and(eq(t.workspaceId, workspaceId), eq(t.connectionId, id)));
    await tx.delete(c).where(and(eq(c.workspaceId, workspaceId), eq(c.id, id)));
  },
};

export type ConnectionsRepo = typeof connectionsRepo;
