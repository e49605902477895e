import { bigint, pgTable, text } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

// Promotional credits (see migrations/0019_payments_autotopup_promotions.sql): operator
// grants that expire; what is left of each at its expiry is taken back by the hourly job.

export const promotionalCredits = pgTable('promotional_credits', {
  grantTransactionId: text('grant_transaction_id').primaryKey(),
  workspaceId: text('workspace_id').notNull(),
  amountMicros: bigint('amount_micros', { mode: 'number' }).notNull(),
  expiresAt: ts('expires_at').notNull(),
  expiredMicros: bigint('expired_micros', { mode: 'number' }),
  expiredTransactionId: text('expired_transaction_id'),
  processedAt: ts('processed_at'),
  createdAt: ts('created_at').notNull(),
});

export type PromotionRow = typeof promotionalCredits.$inferSelect;

const billing = (purpose?: string) => col('billing', false, purpose ? { purpose } : {});

export const promotionTables = [
  mapTable(promotionalCredits, {
    purpose: 'Promotional credits granted with an expiry, and what was taken back when they expired',
    basis: 'contract',
    // A processed promotion goes with its grant transaction (billing.retention.ts); one not
    // yet processed is kept, and keeps the ledger from its grant on (its expiry replays it).
    retention: 'billing_7_years',
    subject: 'workspace',
    columns: {
      grantTransactionId: col('identifier', false),
      workspaceId: col('identifier', false),
      amountMicros: billing(),
      expiresAt: billing(),
      expiredMicros: billing(),
      expiredTransactionId: col('identifier', false),
      processedAt: billing(),
      createdAt: billing(),
    },
  }),
];
