import { pgTable, primaryKey, text } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

// The sub-processor registry (see migrations/0023_privacy_documents.sql).

export const subprocessors = pgTable('privacy_subprocessors', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  purpose: text('purpose').notNull(),
  dataCategories: text('data_categories').array().notNull(),
  region: text('region').notNull(),
  noticeAt: ts('notice_at').notNull(),
  effectiveAt: ts('effective_at').notNull(),
  replaces: text('replaces'),
  retiredAt: ts('retired_at'),
  noticesDoneAt: ts('notices_done_at'),
  createdBy: text('created_by'),
  createdAt: ts('created_at').notNull(),
});

/** One owner's notice of one sub-processor: claimed before it is sent, so it goes out once. */
export const subprocessorNotices = pgTable(
  'privacy_subprocessor_notices',
  {
    subprocessorId: text('subprocessor_id').notNull(),
    userId: text('user_id').notNull(),
    claimedAt: ts('claimed_at').notNull(),
    sentAt: ts('sent_at'),
  },
  (t) => [primaryKey({ columns: [t.subprocessorId, t.userId] })],
);

/** A workspace's objection to a sub-processor, made by its owner (one per workspace and sub-processor). */
export const subprocessorObjections = pgTable(
  'privacy_subprocessor_objections',
  {
    workspaceId: text('workspace_id').notNull(),
    subprocessorId: text('subprocessor_id').notNull(),
    userId: text('user_id'),
    reason: text('reason'),
    createdAt: ts('created_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.workspaceId, t.subprocessorId] })],
);

export type SubprocessorRow = typeof subprocessors.$inferSelect;
export type ObjectionRow = typeof subprocessorObjections.$inferSelect;

const registry = (purpose?: string) => col('operational', false, purpose ? { purpose } : {});

export const subprocessorTables = [
  mapTable(subprocessors, {
    purpose: 'The public registry of sub-processors: who receives which data, where, and from when',
    basis: 'legal_obligation',
    retention: 'operational',
    subject: 'none',
    columns: {
      id: col('identifier', false),
      name: registry(),
      purpose: registry('What the sub-processor does with the data it receives'),
      dataCategories: registry('Which data map categories it receives'),
      region: registry('Where it processes the data'),
      noticeAt: registry('When workspace owners were notified (registration)'),
      effectiveAt: registry('From when it may process data: at least 30 days after the notice'),
      replaces: col('identifier', false, { purpose: 'The sub-processor this one replaces' }),
      retiredAt: registry('From when it no longer processes data'),
      noticesDoneAt: registry('When every workspace owner had been sent the notice'),
      createdBy: col('identifier', true, { purpose: 'The operator who registered it, for accountability' }),
      createdAt: registry(),
    },
  }),
  mapTable(subprocessorNotices, {
    purpose: 'Which workspace owners were sent the notice of a new sub-processor, so each gets it once',
    basis: 'legal_obligation',
    retention: 'account_lifetime',
    subject: 'user',
    columns: {
      subprocessorId: col('identifier', false),
      userId: col('identifier', true),
      claimedAt: col('communication', true, { purpose: 'When the notice to this owner was claimed for sending' }),
      sentAt: col('communication', true, { purpose: 'When the mailer accepted the notice to this owner' }),
    },
  }),
  mapTable(subprocessorObjections, {
    purpose: "A workspace owner's objection to a new sub-processor, recorded for the operator to answer",
    basis: 'legal_obligation',
    retention: 'workspace_lifetime',
    subject: 'workspace',
    columns: {
      workspaceId: col('identifier', false),
      subprocessorId: col('identifier', false),
      userId: col('identifier', true, { purpose: 'The owner who objected' }),
      // Erasing the owner keeps the objection (by pseudonym) but not their words.
      reason: col('content', true, {
        purpose: "The owner's reasons for objecting, in their words",
        erase: 'anonymise',
      }),
      createdAt: col('tenancy', false),
    },
  }),
];
