import { pgTable, text } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

// Restriction of processing, Art. 18 (see migrations/0022_privacy_core.sql).

export const privacyRestrictions = pgTable('privacy_restrictions', {
  id: text('id').primaryKey(),
  userId: text('user_id').notNull(),
  restrictedAt: ts('restricted_at').notNull(),
  liftedAt: ts('lifted_at'),
});

export type RestrictionRow = typeof privacyRestrictions.$inferSelect;

export const restrictionTables = [
  mapTable(privacyRestrictions, {
    purpose:
      "Honouring a user's restriction of processing: while it lasts, the gateway and agents process nothing new for them",
    basis: 'legal_obligation',
    retention: 'account_lifetime',
    subject: 'user',
    columns: {
      id: col('identifier', false),
      userId: col('identifier', true, { purpose: 'Whose processing is (or was) restricted' }),
      // Kept under the pseudonym: a null lifted_at means "restricted now" (and at most one row may).
      restrictedAt: col('account', true, { erase: 'keep' }),
      liftedAt: col('account', true, {
        purpose: 'When the restriction was lifted (null while it lasts)',
        erase: 'keep',
      }),
    },
  }),
];
