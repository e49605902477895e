import { bigint, integer, pgTable, primaryKey, text } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

// Budgets (see migrations/0017_budgets.sql): spend limits per workspace or API key, per day or month.

export const BUDGET_PERIODS = ['day', 'month'] as const;
export type BudgetPeriod = (typeof BUDGET_PERIODS)[number];

export const budgets = pgTable('budgets', {
  id: text('id').primaryKey(),
  workspaceId: text('workspace_id').notNull(),
  keyId: text('key_id'),
  period: text('period', { enum: BUDGET_PERIODS }).notNull(),
  limitMicros: bigint('limit_micros', { mode: 'number' }).notNull(),
  createdBy: text('created_by'),
  createdAt: ts('created_at').notNull(),
  updatedAt: ts('updated_at').notNull(),
});

export const budgetPeriods = pgTable(
  'budget_periods',
  {
    budgetId: text('budget_id').notNull(),
    workspaceId: text('workspace_id').notNull(),
    periodStart: ts('period_start').notNull(),
    spentMicros: bigint('spent_micros', { mode: 'number' }).notNull(),
    heldMicros: bigint('held_micros', { mode: 'number' }).notNull(),
    reachedPct: integer('reached_pct').notNull(),
    notifiedPct: integer('notified_pct').notNull(),
  },
  (t) => [primaryKey({ columns: [t.budgetId, t.periodStart] })],
);

export type BudgetRow = typeof budgets.$inferSelect;
export type BudgetPeriodRow = typeof budgetPeriods.$inferSelect;

const billing = (purpose?: string) => col('billing', false, purpose ? { purpose } : {});

export const budgetTables = [
  mapTable(budgets, {
    purpose: 'Spend limits a workspace sets on itself or on one API key, per day or month',
    basis: 'contract',
    // Current settings: kept while they are set.
    retention: 'billing_7_years',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      keyId: col('identifier', false, { purpose: 'The API key the limit applies to (none: the whole workspace)' }),
      period: billing(),
      limitMicros: billing(),
      createdBy: col('identifier', true, { purpose: 'The member who set the limit' }),
      createdAt: billing(),
      updatedAt: billing(),
    },
  }),
  mapTable(budgetPeriods, {
    purpose: "What each budget's period has spent and holds for calls in flight, and which alerts went out",
    basis: 'contract',
    retention: 'billing_7_years',
    retentionFrom: 'period_start',
    subject: 'workspace',
    columns: {
      budgetId: col('identifier', false),
      workspaceId: col('identifier', false),
      periodStart: billing(),
      spentMicros: billing(),
      heldMicros: billing(),
      reachedPct: billing('The highest alert threshold (50, 80, 100 %) the spending reached'),
      notifiedPct: billing('The highest alert threshold owners and admins were emailed about'),
    },
  }),
];
