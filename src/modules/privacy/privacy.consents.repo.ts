import { and, desc, eq, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { type ConsentRow, type ObjectionRow, privacyConsents, privacyObjections } from './privacy.consents.tables.ts';

/** Every SQL statement on privacy_consents and privacy_objections. */
export const consentsRepo = {
  /**
   * Serialises changes to one user's consents and objections for the rest of the
   * transaction, so the "latest row" each change is compared with is the real latest.
   */
  async lockUser(tx: Database, userId: string): Promise<void> {
    await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${`privacy.choices:${userId}`}, 0))`);
  },

  async insertConsent(tx: Database, row: ConsentRow): Promise<void> {
    await tx.insert(privacyConsents).values(row);
  },

  async insertObjection(tx: Database, row: ObjectionRow): Promise<void> {
    await tx.insert(privacyObjections).values(row);
  },

  /** The user's consent changes, newest first (the first per purpose is its state). */
  async consents(tx: Database, userId: string, purpose?: string): Promise<ConsentRow[]> {
    return tx
      .select()
      .from(privacyConsents)
      .where(
        purpose
          ? and(eq(privacyConsents.userId, userId), eq(privacyConsents.purpose, purpose))
          : eq(privacyConsents.userId, userId),
      )
      .orderBy(desc(privacyConsents.at), desc(privacyConsents.id));
  },

  /** The latest consent change of one purpose, if any. */
  async latestConsent(tx: Database, userId: string, purpose: string): Promise<ConsentRow | null> {
    const rows = await tx
      .select()
      .from(privacyConsents)
      .where(and(eq(privacyConsents.userId, userId), eq(privacyConsents.purpose, purpose)))
      .orderBy(desc(privacyConsents.at), desc(privacyConsents.id))
      .limit(1);
    return rows[0] ?? null;
  },

  /** The user's objection changes, newest first (the first per purpose is its state). */
  async objections(tx: Database, userId: string): Promise<ObjectionRow[]> {
    return tx
      .select()
      .from(privacyObjections)
      .where(eq(privacyObjections.userId, userId))
      .orderBy(desc(privacyObjections.at), desc(privacyObjections.id));
  },
};

export type ConsentsRepo = typeof consentsRepo;
