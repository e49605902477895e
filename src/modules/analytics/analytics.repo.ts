import { and, asc, countDistinct, desc, eq, gte, lte, sql, sum } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { type FeatureUseRow, featureUses } from './analytics.tables.ts';

export type FeatureTotal = { feature: string; uses: number; accounts: number };

/** Every SQL statement on feature_uses. */
export const analyticsRepo = {
  /** Adds the counts to the day's rows (created at their first use), in a stable order. */
  async add(tx: Database, rows: FeatureUseRow[]): Promise<void> {
    if (rows.length === 0) return;
    await tx
      .insert(featureUses)
      .values(rows)
      .onConflictDoUpdate({
        target: [featureUses.userId, featureUses.day, featureUses.feature],
        set: { uses: sql`${featureUses.uses} + excluded.uses` },
      });
  },

  /** Deletes everything counted for the user; returns how many rows went. */
  async deleteUser(tx: Database, userId: string): Promise<number> {
    const gone = await tx.delete(featureUses).where(eq(featureUses.userId, userId)).returning({ day: featureUses.day });
    return gone.length;
  },

  /** Totals per feature over the days `from`..`to` (inclusive): uses and distinct accounts, no identity. */
  async totals(tx: Database, from: string, to: string): Promise<FeatureTotal[]> {
    const rows = await tx
      .select({
        feature: featureUses.feature,
        uses: sum(featureUses.uses).mapWith(Number),
        accounts: countDistinct(featureUses.userId),
      })
      .from(featureUses)
      .where(and(gte(featureUses.day, from), lte(featureUses.day, to)))
      .groupBy(featureUses.feature)
      .orderBy(desc(sum(featureUses.uses)), asc(featureUses.feature));
    return rows.map((r) => ({ feature: r.feature, uses: r.uses, accounts: Number(r.accounts) }));
  },
};

export type AnalyticsRepo = typeof analyticsRepo;
