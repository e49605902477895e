import { lte } from 'drizzle-orm';
import { pgTable, text } from 'drizzle-orm/pg-core';
import { bytea, ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

/**
 * Outgoing email held for the operator when no SMTP server is configured. Bodies carry
 * single-use links, so they are stored only as vault ciphertext, and a row lives only as
 * long as the link in it (`expiresAt`); a used link's row is deleted at once (`ref`).
 */
export const emailOutbox = pgTable('email_outbox', {
  id: text('id').primaryKey(),
  toAddress: text('to_address').notNull(),
  subject: text('subject').notNull(),
  bodyCiphertext: bytea('body_ciphertext').notNull(),
  userId: text('user_id'),
  ref: text('ref'),
  tag: text('tag').notNull(),
  createdAt: ts('created_at').notNull(),
  expiresAt: ts('expires_at').notNull(),
});

export type OutboxRow = typeof emailOutbox.$inferSelect;

/** Who receives outgoing mail outside the installation (the data map's `recipients`). */
export const MAIL_RELAY = ['Email delivery provider (the SMTP server the operator configures in SMTP_URL)'] as const;

/** The notifications module's entries in the data map. */
export const notificationsTables = [
  mapTable(emailOutbox, {
    purpose: 'Outgoing email held for the operator when no SMTP server is configured',
    basis: 'contract',
    retention: 'until_expiry',
    expiredWhen: (asOf) => lte(emailOutbox.expiresAt, asOf),
    subject: 'user',
    recipients: MAIL_RELAY,
    columns: {
      id: col('identifier', false),
      // Mail held for an address is its addressee's, with an account or without one (yet):
      // export finds it and erasure deletes it by the address as well as by the account.
      toAddress: col('communication', true, {
        purpose: 'Who the message is for',
        export: 'subject_email',
        erase: 'delete',
      }),
      subject: col('communication', true, { exportOf: 'to_address' }),
      bodyCiphertext: col('communication', true, {
        secret: true,
        purpose: 'The message body, vault ciphertext (it may carry a single-use link)',
      }),
      userId: col('identifier', true, {
        purpose: 'The recipient account, when there is one (its key encrypts the body)',
      }),
      ref: col('identifier', false, {
        purpose: 'The token the message carries, so the row goes when the token is used',
      }),
      tag: col('communication', false),
      createdAt: col('communication', true, { exportOf: 'to_address' }),
      expiresAt: col('communication', false, { purpose: 'When the link in the message expires; the row goes then' }),
    },
  }),
];
