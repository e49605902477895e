import { pgTable, text } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

// Account deletions (see migrations/0026_privacy_erasure.sql).

export const DELETION_STATUSES = ['scheduled', 'cancelled', 'erased'] as const;
export type DeletionStatus = (typeof DELETION_STATUSES)[number];

export const accountDeletions = pgTable('account_deletions', {
  id: text('id').primaryKey(),
  userId: text('user_id').notNull(),
  requestId: text('request_id'),
  status: text('status', { enum: DELETION_STATUSES }).notNull(),
  requestedAt: ts('requested_at').notNull(),
  eraseAfter: ts('erase_after').notNull(),
  cancelTokenHash: text('cancel_token_hash'),
  cancelledAt: ts('cancelled_at'),
  erasedAt: ts('erased_at'),
});

export type AccountDeletionRow = typeof accountDeletions.$inferSelect;

export const erasureTables = [
  mapTable(accountDeletions, {
    purpose:
      'Carrying out account deletions after their grace period, letting the user cancel until then, and showing that each was carried out',
    basis: 'legal_obligation',
    retention: 'account_lifetime',
    subject: 'user',
    columns: {
      id: col('identifier', false),
      userId: col('identifier', true, { purpose: 'The account to delete; its pseudonym once erased' }),
      requestId: col('identifier', false, { purpose: 'The privacy request that tracks the deletion' }),
      status: col('account', true),
      requestedAt: col('account', true),
      eraseAfter: col('account', true, { purpose: 'The end of the grace period: erasure runs after it' }),
      cancelTokenHash: col('credential', true, {
        secret: true,
        purpose: 'SHA-256 of the emailed cancel link, until the deletion is cancelled or carried out',
      }),
      cancelledAt: col('account', true),
      erasedAt: col('account', true, { purpose: 'When the account was erased' }),
    },
  }),
];
