import { pgTable, text, timestamp } from 'drizzle-orm/pg-core';
import { col, mapTable } from '../../platform/db/datamap.ts';

export const emailOutbox = pgTable('email_outbox', {
  id: text('id').primaryKey(),
  toAddress: text('to_address').notNull(),
  subject: text('subject').notNull(),
  bodyText: text('body_text').notNull(),
  tag: text('tag').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull(),
});

/** The notifications module's entries in the data map. */
export const notificationsTables = [
  mapTable(emailOutbox, {
    purpose: 'Outgoing email held for the operator when no SMTP server is configured',
    basis: 'contract',
    retention: 'outbox_30_days',
    subject: 'user',
    columns: {
      id: col('identifier', false),
      toAddress: col('communication', true),
      subject: col('communication', true),
      bodyText: col('communication', true, { secret: true, purpose: 'May carry single-use links' }),
      tag: col('communication', false),
      createdAt: col('communication', true),
    },
  }),
];
