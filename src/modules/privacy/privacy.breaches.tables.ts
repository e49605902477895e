import { integer, pgTable, text } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

// The breach register, Art. 33(5) GDPR (see migrations/0023_privacy_documents.sql).

export const breaches = pgTable('privacy_breaches', {
  id: text('id').primaryKey(),
  description: text('description').notNull(),
  dataCategories: text('data_categories').array().notNull(),
  subjectsCount: integer('subjects_count'),
  awareAt: ts('aware_at').notNull(),
  notifyDeadline: ts('notify_deadline').notNull(),
  authorityNotifiedAt: ts('authority_notified_at'),
  subjectsNotifiedAt: ts('subjects_notified_at'),
  measures: text('measures'),
  createdBy: text('created_by'),
  createdAt: ts('created_at').notNull(),
  updatedAt: ts('updated_at').notNull(),
});

export type BreachRow = typeof breaches.$inferSelect;

const register = (purpose?: string) => col('security', false, purpose ? { purpose } : {});

export const breachTables = [
  mapTable(breaches, {
    purpose: 'The register of personal data breaches: facts, effects and remedial action, as the law requires',
    basis: 'legal_obligation',
    retention: 'operational',
    subject: 'none',
    columns: {
      id: col('identifier', false),
      description: register('What happened, described by the operator (kept free of the affected people’s data)'),
      dataCategories: register('Which data map categories were affected'),
      subjectsCount: register('Approximately how many people were affected'),
      awareAt: register('When the operator became aware of the breach'),
      notifyDeadline: register('72 hours after awareness: when the supervisory authority must have been told'),
      authorityNotifiedAt: register(),
      subjectsNotifiedAt: register(),
      measures: register('Measures taken or proposed to address the breach and mitigate its effects'),
      createdBy: col('identifier', true, { purpose: 'The operator who recorded it, for accountability' }),
      createdAt: register(),
      updatedAt: register(),
    },
  }),
];
