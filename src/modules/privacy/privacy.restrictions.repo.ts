import { and, desc, eq, isNull } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { privacyRestrictions, type RestrictionRow } from './privacy.restrictions.tables.ts';

/** Every SQL statement on privacy_restrictions. */
export const restrictionsRepo = {
  /** The users whose processing is restricted now. */
  async activeUserIds(tx: Database): Promise<string[]> {
    const rows = await tx
      .select({ userId: privacyRestrictions.userId })
      .from(privacyRestrictions)
      .where(isNull(privacyRestrictions.liftedAt));
    return rows.map((r) => r.userId);
  },

  async active(tx: Database, userId: string): Promise<RestrictionRow | null> {
    const rows = await tx
      .select()
      .from(privacyRestrictions)
      .where(and(eq(privacyRestrictions.userId, userId), isNull(privacyRestrictions.liftedAt)));
    return rows[0] ?? null;
  },

  /** Starts a restriction; null when one is active already (the unique index decides, also under races). */
  async insertUnlessActive(tx: Database, row: RestrictionRow): Promise<RestrictionRow | null> {
    const rows = await tx.insert(privacyRestrictions).values(row).onConflictDoNothing().returning();
    return rows[0] ?? null;
  },

  /** Ends the active restriction; null when there is none. */
  async lift(tx: Database, userId: string, at: Date): Promise<RestrictionRow | null> {
    const rows = await tx
      .update(privacyRestrictions)
      .set({ liftedAt: at })
      .where(and(eq(privacyRestrictions.userId, userId), isNull(privacyRestrictions.liftedAt)))
      .returning();
    return rows[0] ?? null;
  },

  /** The user's restrictions, newest first. */
  async history(tx: Database, userId: string, limit = 100): Promise<RestrictionRow[]> {
    return tx
      .select()
      .from(privacyRestrictions)
      .where(eq(privacyRestrictions.userId, userId))
      .orderBy(desc(privacyRestrictions.restrictedAt), desc(privacyRestrictions.id))
      .limit(limit);
  },
};

export type RestrictionsRepo = typeof restrictionsRepo;
