import { and, asc, eq, gt, inArray, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { type BudgetPeriodRow, type BudgetRow, budgetPeriods, budgets } from './billing.budgets.tables.ts';
import { creditBalances } from './billing.tables.ts';

/** Every SQL statement on budgets and their periods outside the ledger's batches. */
export const budgetsRepo = {
  async list(tx: Database, workspaceId: string): Promise<BudgetRow[]> {
    return tx.select().from(budgets).where(eq(budgets.workspaceId, workspaceId)).orderBy(asc(budgets.id));
  },

  async find(tx: Database, workspaceId: string, id: string): Promise<BudgetRow | null> {
    const rows = await tx
      .select()
      .from(budgets)
      .where(and(eq(budgets.workspaceId, workspaceId), eq(budgets.id, id)));
    return rows[0] ?? null;
  },

  /** The budget of this scope (workspace or key) and period, if any. */
  async findScope(
    tx: Database,
    workspaceId: string,
    keyId: string | null,
    period: BudgetRow['period'],
  ): Promise<BudgetRow | null> {
    const rows = await tx
      .select()
      .from(budgets)
      .where(
        and(
          eq(budgets.workspaceId, workspaceId),
          sql`coalesce(${budgets.keyId}, '') = ${keyId ?? ''}`,
          eq(budgets.period, period),
        ),
      );
    return rows[0] ?? null;
  },

  async insert(tx: Database, row: BudgetRow): Promise<void> {
    await tx.insert(budgets).values(row);
  },

  async updateLimit(tx: Database, workspaceId: string, id: string, limitMicros: number, at: Date): Promise<void> {
    await tx
      .update(budgets)
      .set({ limitMicros, updatedAt: at })
      .where(and(eq(budgets.workspaceId, workspaceId), eq(budgets.id, id)));
  },

  async delete(tx: Database, workspaceId: string, id: string): Promise<void> {
    await tx
      .delete(budgetPeriods)
      .where(and(eq(budgetPeriods.workspaceId, workspaceId), eq(budgetPeriods.budgetId, id)));
    await tx.delete(budgets).where(and(eq(budgets.workspaceId, workspaceId), eq(budgets.id, id)));
  },

  /**
   * Locks the workspace's balance row (creating it if needed): budget changes take it
   * first, as the ledger's batches do, so two changes of one workspace run one at a time
   * and a batch never sees the budgets and their count disagree.
   */
  async lockBalance(tx: Database, workspaceId: string, now: Date): Promise<void> {
    await tx
      .insert(creditBalances)
      .values({ workspaceId, availableMicros: 0, heldMicros: 0, updatedAt: now, budgetCount: 0 })
      .onConflictDoNothing();
    await tx.select().from(creditBalances).where(eq(creditBalances.workspaceId, workspaceId)).for('update');
  },

  async addToCount(tx: Database, workspaceId: string, delta: 1 | -1): Promise<void> {
    await tx
      .update(creditBalances)
      .set({ budgetCount: sql`greatest(${creditBalances.budgetCount} + ${delta}, 0)` })
      .where(eq(creditBalances.workspaceId, workspaceId));
  },

  async periodsOf(tx: Database, workspaceId: string, keys: Array<{ budgetId: string; start: Date }>) {
    if (keys.length === 0) return [];
    const ids = [...new Set(keys.map((k) => k.budgetId))];
    const rows = await tx
      .select()
      .from(budgetPeriods)
      .where(and(eq(budgetPeriods.workspaceId, workspaceId), inArray(budgetPeriods.budgetId, ids)));
    return rows.filter((r) =>
      keys.some((k) => k.budgetId === r.budgetId && k.start.getTime() === r.periodStart.getTime()),
    );
  },

  /**
   * A budget's limit changed: the current period's thresholds are measured against the new
   * limit (a raised limit can alert again at its own 50/80/100 %; a lowered one alerts for
   * what it now passes).
   */
  async rebaseAlerts(tx: Database, workspaceId: string, budgetId: string, start: Date, reached: number) {
    await tx
      .update(budgetPeriods)
      .set({ reachedPct: reached, notifiedPct: sql`least(${budgetPeriods.notifiedPct}, ${reached})` })
      .where(
        and(
          eq(budgetPeriods.workspaceId, workspaceId),
          eq(budgetPeriods.budgetId, budgetId),
          eq(budgetPeriods.periodStart, start),
        ),
      );
  },

  /** Periods whose spending reached an alert threshold nobody was told about yet (system scope). */
  async unnotified(tx: Database, limit: number): Promise<Array<BudgetPeriodRow & { budget: BudgetRow }>> {
    const rows = await tx
      .select()
      .from(budgetPeriods)
      .innerJoin(budgets, eq(budgets.id, budgetPeriods.budgetId))
      .where(gt(budgetPeriods.reachedPct, budgetPeriods.notifiedPct))
      .orderBy(asc(budgetPeriods.workspaceId))
      .limit(limit);
    return rows.map((r) => ({ ...r.budget_periods, budget: r.budgets }));
  },

  /**
   * Claims the alert for `pct` (before it is sent: a second worker, or a rerun after a
   * crash, finds it claimed and sends nothing); false when it was claimed already.
   */
  async claimAlert(tx: Database, workspaceId: string, budgetId: string, start: Date, pct: number): Promise<boolean> {
    const rows = await tx
      .update(budgetPeriods)
      .set({ notifiedPct: pct })
      .where(
        and(
          eq(budgetPeriods.workspaceId, workspaceId),
          eq(budgetPeriods.budgetId, budgetId),
          eq(budgetPeriods.periodStart, start),
          sql`${budgetPeriods.notifiedPct} < ${pct}`,
        ),
      )
      .returning({ id: budgetPeriods.budgetId });
    return rows.length > 0;
  },
};

export type BudgetsRepo = typeof budgetsRepo;
