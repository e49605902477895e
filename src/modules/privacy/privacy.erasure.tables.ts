import { integer, pgTable, text } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

// Account deletions (see migrations/0026_privacy_erasure.sql and 0028_erasure_attempts.sql).

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
  attempts: integer('attempts').notNull(),
  lastErrorAt: ts('last_error_at'),
  failureAlertedAt: ts('failure_alerted_at'),
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
      // The status and dates stay (under the pseudonym): they are the record that the
      // deletion was carried out, and the table's checks require them.
      status: col('account', true, { erase: 'keep' }),
      requestedAt: col('account', true, { erase: 'keep' }),
      eraseAfter: col('account', true, {
        purpose: 'The end of the grace period: erasure runs after it',
        erase: 'keep',
      }),
      // Kept by erasure: cancelling or carrying out the deletion clears it (a check requires that).
      cancelTokenHash: col('credential', true, {
        secret: true,
        erase: 'keep',
        purpose: 'SHA-256 of the emailed cancel link, until the deletion is cancelled or carried out',
      }),
      cancelledAt: col('account', true, { erase: 'keep' }),
      erasedAt: col('account', true, { purpose: 'When the account was erased', erase: 'keep' }),
      attempts: col('operational', false, {
        purpose: 'How many times the erasure failed (it is retried with a backoff)',
      }),
      lastErrorAt: col('operational', false, { purpose: 'When the erasure last failed' }),
      failureAlertedAt: col('operational', false, {
        purpose: 'When the operators were told the erasure fails (once per deletion)',
      }),
    },
  }),
];
