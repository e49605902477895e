import type { BudgetPeriod, BudgetPeriodRow, BudgetRow } from './billing.budgets.tables.ts';

/** The thresholds owners and admins are emailed about, in percent of a budget's limit. */
export const ALERT_THRESHOLDS = [50, 80, 100] as const;

export type BudgetLine = { budget: BudgetRow; period: BudgetPeriodRow };

/** The budgets a call counts against: the workspace's own, and its API key's. */
export function budgetsApplying(budgets: readonly BudgetRow[], keyId: string | null): BudgetRow[] {
  return budgets.filter((b) => b.keyId === null || b.keyId === keyId);
}

/** The start of the UTC day or calendar month that `at` falls in. */
export function periodStart(period: BudgetPeriod, at: Date): Date {
  const y = at.getUTCFullYear();
  const m = at.getUTCMonth();
  return period === 'day' ? new Date(Date.UTC(y, m, at.getUTCDate())) : new Date(Date.UTC(y, m, 1));
}

/** When the period that starts at `start` ends (the next one's start). */
export function periodEnd(period: BudgetPeriod, start: Date): Date {
  const y = start.getUTCFullYear();
  const m = start.getUTCMonth();
  return period === 'day' ? new Date(Date.UTC(y, m, start.getUTCDate() + 1)) : new Date(Date.UTC(y, m + 1, 1));
}

/** The highest alert threshold that `spent` reached of `limit` (0 when none). Integer arithmetic only. */
export function reachedPct(spent: number, limit: number): number {
  let reached = 0;
  for (const t of ALERT_THRESHOLDS) if (spent * 100 >= limit * t) reached = t;
  return reached;
}
