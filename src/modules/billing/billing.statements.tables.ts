import { bigint, integer, jsonb, pgTable, primaryKey, text, unique } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

// Closed monthly statements (see migrations/0018_billing_statements.sql).

/** One line of a statement's usage breakdown: a model, or an API key (`''` for calls without one). */
export type UsageLine = {
  name: string;
  requests: number;
  errors: number;
  inputTokens: number;
  outputTokens: number;
  cachedTokens: number;
  reasoningTokens: number;
  costMicros: number;
};

export type StatementBreakdown = { models: UsageLine[]; keys: UsageLine[] };

export const billingStatements = pgTable(
  'billing_statements',
  {
    workspaceId: text('workspace_id').notNull(),
    period: text('period').notNull(),
    number: text('number').notNull().unique(),
    seq: integer('seq').notNull(),
    periodStart: ts('period_start').notNull(),
    periodEnd: ts('period_end').notNull(),
    openingMicros: bigint('opening_micros', { mode: 'number' }).notNull(),
    grantedMicros: bigint('granted_micros', { mode: 'number' }).notNull(),
    boughtMicros: bigint('bought_micros', { mode: 'number' }).notNull(),
    refundedMicros: bigint('refunded_micros', { mode: 'number' }).notNull(),
    adjustedMicros: bigint('adjusted_micros', { mode: 'number' }).notNull(),
    expiredMicros: bigint('expired_micros', { mode: 'number' }).notNull(),
    usedMicros: bigint('used_micros', { mode: 'number' }).notNull(),
    closingMicros: bigint('closing_micros', { mode: 'number' }).notNull(),
    settlements: integer('settlements').notNull(),
    usageCostMicros: bigint('usage_cost_micros', { mode: 'number' }).notNull(),
    usageRequests: integer('usage_requests').notNull(),
    breakdown: jsonb('breakdown').$type<StatementBreakdown>().notNull(),
    closedAt: ts('closed_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.workspaceId, t.period] }), unique().on(t.period, t.seq)],
);

export type StatementRow = typeof billingStatements.$inferSelect;

const billing = (purpose?: string) => col('billing', false, purpose ? { purpose } : {});

export const statementTables = [
  mapTable(billingStatements, {
    purpose: "A workspace's monthly statement: credits granted, bought, refunded, adjusted, expired and used",
    basis: 'legal_obligation',
    retention: 'billing_7_years',
    // 7 years after the month it covers ended.
    retentionFrom: 'period_end',
    subject: 'workspace',
    columns: {
      workspaceId: col('identifier', false),
      period: billing('The calendar month (UTC) the statement covers'),
      number: col('identifier', false, { purpose: "The statement's number, sequential per month" }),
      seq: billing('Numbers the statements of a month without gaps'),
      periodStart: billing(),
      periodEnd: billing(),
      openingMicros: billing(),
      grantedMicros: billing(),
      boughtMicros: billing(),
      refundedMicros: billing(),
      adjustedMicros: billing(),
      expiredMicros: billing(),
      usedMicros: billing(),
      closingMicros: billing(),
      settlements: billing(
        'How many settlements the ledger made in the month (a credit lease settles many calls in one)',
      ),
      usageCostMicros: billing('The metered cost of the usage events, compared with the ledger'),
      usageRequests: billing(),
      breakdown: col('usage_metadata', false, {
        purpose: 'Requests, tokens and cost per model and per API key, copied from the usage events when closed',
      }),
      closedAt: billing(),
    },
  }),
];
