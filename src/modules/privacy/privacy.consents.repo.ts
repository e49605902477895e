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

  /**
   * Serialises changes to these users' choices for the rest of the transaction, in one
   * statement and always in the same order (two such transactions never deadlock).
   */
  async lockUsers(tx: Database, userIds: readonly string[]): Promise<void> {
    if (userIds.length === 0) return;
    const keys = [...new Set(userIds)].sort().map((id) => sql`${`privacy.choices:${id}`}`);
    await tx.execute(
      sql`select pg_advisory_xact_lock(hashtextextended(k, 0)) from (select unnest(array[${sql.join(keys, sql`, `)}]::text[]) as k order by 1) s`,
    );
  },

  /** Every user whose latest word on a purpose is an objection, with the purpose. */
  async currentObjections(tx: Database): Promise<Array<{ userId: string; purpose: string }>> {
    const res = (await tx.execute(
      sql`select user_id, purpose from (
            select distinct on (user_id, purpose) user_id, purpose, objected from privacy_objections
            order by user_id, purpose, at desc, id desc
          ) latest where objected`,
    )) as unknown as { rows: Array<{ user_id: string; purpose: string }> };
    return res.rows.map((r) => ({ userId: r.user_id, purpose: r.purpose }));
  },

  /** Of `userIds`, those whose latest word on `purpose` is an objection. */
  async objectingAmong(tx: Database, userIds: readonly string[], purpose: string): Promise<string[]> {
    if (userIds.length === 0) return [];
    const ids = sql.join(
      userIds.map((id) => sql`${id}`),
      sql`, `,
    );
    const res = (await tx.execute(
      sql`select user_id from (
            select distinct on (user_id) user_id, objected from privacy_objections
            where purpose = ${purpose} and user_id in (${ids})
            order by user_id, at desc, id desc
          ) latest where objected`,
    )) as unknown as { rows: Array<{ user_id: string }> };
    return res.rows.map((r) => r.user_id);
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
