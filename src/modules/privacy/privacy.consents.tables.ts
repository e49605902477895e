import { boolean, pgTable, text } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

// Consents (Art. 7) and objections (Art. 21), each change a row (see migrations/0022_privacy_core.sql).

/**
 * What Berth asks consent for. Each is off until the user gives it; withdrawing is one call.
 * The description is what the dashboard shows next to the switch.
 */
export const CONSENT_PURPOSES = {
  marketing_email: 'Emails about new features, offers and events (never needed to use Berth)',
} as const;
export type ConsentPurpose = keyof typeof CONSENT_PURPOSES;
export const CONSENT_PURPOSE_NAMES = Object.keys(CONSENT_PURPOSES) as [ConsentPurpose, ...ConsentPurpose[]];

/**
 * Processing Berth does on its legitimate interest that a user may object to (Art. 21). On
 * until the user objects; an objection stops it for that user from then on. Each purpose
 * names processing Berth really does: `product_analytics` is the analytics module's
 * feature counting (`feature_uses`), which stops counting an objecting user and deletes
 * what it counted for them.
 */
export const OBJECTION_PURPOSES = {
  product_analytics:
    'Counting how features are used (per account, never content) to decide what to build; objecting also deletes what was counted',
} as const;
export type ObjectionPurpose = keyof typeof OBJECTION_PURPOSES;
export const OBJECTION_PURPOSE_NAMES = Object.keys(OBJECTION_PURPOSES) as [ObjectionPurpose, ...ObjectionPurpose[]];

export const privacyConsents = pgTable('privacy_consents', {
  id: text('id').primaryKey(),
  userId: text('user_id').notNull(),
  purpose: text('purpose').notNull(),
  given: boolean('given').notNull(),
  textVersion: text('text_version'),
  at: ts('at').notNull(),
});

export const privacyObjections = pgTable('privacy_objections', {
  id: text('id').primaryKey(),
  userId: text('user_id').notNull(),
  purpose: text('purpose').notNull(),
  objected: boolean('objected').notNull(),
  at: ts('at').notNull(),
});

export type ConsentRow = typeof privacyConsents.$inferSelect;
export type ObjectionRow = typeof privacyObjections.$inferSelect;

export const consentTables = [
  mapTable(privacyConsents, {
    purpose: 'Proof of the consents a user gave and withdrew (what, when, which text they saw)',
    basis: 'legal_obligation',
    retention: 'account_lifetime',
    subject: 'user',
    columns: {
      id: col('identifier', false),
      userId: col('identifier', true),
      // Erasure keeps the history under the pseudonym: the proof of what was consented to, and when.
      purpose: col('account', true, { purpose: 'What the consent is for', erase: 'keep' }),
      given: col('account', true, { purpose: 'Given (true) or withdrawn (false)', erase: 'keep' }),
      textVersion: col('account', false, { purpose: 'The version of the consent text the user saw' }),
      at: col('account', true, { erase: 'keep' }),
    },
  }),
  mapTable(privacyObjections, {
    purpose: "A user's objections to processing based on legitimate interest, and their withdrawal",
    basis: 'legal_obligation',
    retention: 'account_lifetime',
    subject: 'user',
    columns: {
      id: col('identifier', false),
      userId: col('identifier', true),
      purpose: col('account', true, { purpose: 'The processing objected to', erase: 'keep' }),
      objected: col('account', true, { purpose: 'Objected (true) or the objection withdrawn (false)', erase: 'keep' }),
      at: col('account', true, { erase: 'keep' }),
    },
  }),
];
