import { pgTable, text } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

// Privacy requests (see migrations/0022_privacy_core.sql).

/** What a data subject can ask for (GDPR Art. 15-21). */
export const REQUEST_TYPES = ['access', 'portability', 'erasure', 'rectification', 'restriction', 'objection'] as const;
export type RequestType = (typeof REQUEST_TYPES)[number];

export const REQUEST_STATUSES = ['received', 'in_progress', 'completed', 'rejected', 'cancelled'] as const;
export type RequestStatus = (typeof REQUEST_STATUSES)[number];

/** Statuses of a request still to be answered (the one-month deadline runs). */
export const OPEN_STATUSES: readonly RequestStatus[] = ['received', 'in_progress'];

export const privacyRequests = pgTable('privacy_requests', {
  id: text('id').primaryKey(),
  type: text('type', { enum: REQUEST_TYPES }).notNull(),
  userId: text('user_id').notNull(),
  workspaceId: text('workspace_id'),
  status: text('status', { enum: REQUEST_STATUSES }).notNull(),
  details: text('details'),
  outcome: text('outcome'),
  receivedAt: ts('received_at').notNull(),
  dueAt: ts('due_at').notNull(),
  completedAt: ts('completed_at'),
  overdueAlertedAt: ts('overdue_alerted_at'),
  updatedAt: ts('updated_at').notNull(),
});

export type PrivacyRequestRow = typeof privacyRequests.$inferSelect;

export const requestTables = [
  mapTable(privacyRequests, {
    purpose:
      "Answering data subjects' requests (access, export, erasure, rectification, restriction, objection) within the legal deadline, and showing that they were answered",
    basis: 'legal_obligation',
    retention: 'account_lifetime',
    subject: 'user',
    columns: {
      id: col('identifier', false),
      // Erasure keeps the type, status and dates (under the pseudonym): they show that the
      // request was answered in time, and the table's checks require them. The free text goes.
      type: col('account', true, { purpose: 'Which right the subject exercised', erase: 'keep' }),
      userId: col('identifier', true, { purpose: 'The data subject who made the request' }),
      workspaceId: col('identifier', false, { purpose: 'The workspace the request is about, when it is about one' }),
      status: col('account', true, { erase: 'keep' }),
      details: col('account', true, { purpose: 'What the subject asked to be corrected, in their words' }),
      outcome: col('account', true, { purpose: 'How the request was answered' }),
      receivedAt: col('account', true, { erase: 'keep' }),
      dueAt: col('account', false, { purpose: 'The legal deadline: one month after receipt' }),
      completedAt: col('account', true, { erase: 'keep' }),
      overdueAlertedAt: col('operational', false, {
        purpose: 'When the operators were told the request is overdue (once)',
      }),
      updatedAt: col('operational', false),
    },
  }),
];
