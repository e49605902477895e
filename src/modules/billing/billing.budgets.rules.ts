import type { BudgetPeriodRow, BudgetRow } from './billing.budgets.tables.ts';

/** The thresholds owners and admins are emailed about, in percent of a budget's limit. */
export const ALERT_THRESHOLDS = [50, 80, 100] as const;

export type BudgetLine = { budget: BudgetRow; period: BudgetPeriodRow };

/** The budgets a call counts against: the workspace's own, and its API key's. */
export function budgetsApplying(budgets: readonly BudgetRow[], keyId: string | null): BudgetRow[] {
  return budgets.filter((b) => b.keyId === null || b.keyId === keyId);
}

/** The highest alert threshold that `spent` reached of `limit` (0 when none). Integer arithmetic only. */
export function reachedPct(spent: number, limit: number): number {
  let reached = 0;
  for (const t of ALERT_THRESHOLDS) if (spent * 100 >= limit * t) reached = t;
  return reached;
}
