import { bigint, date, pgTable, primaryKey, text } from 'drizzle-orm/pg-core';
import { col, mapTable } from '../../platform/db/datamap.ts';

// Product analytics (see migrations/0032_feature_uses.sql).

/**
 * How often an account used a feature on a UTC day. A feature is a name derived from the
 * matched route (`keys.create`, `gateway.chat`): it carries no content and no id.
 */
export const featureUses = pgTable(
  'feature_uses',
  {
    userId: text('user_id').notNull(),
    day: date('day', { mode: 'string' }).notNull(),
    feature: text('feature').notNull(),
    uses: bigint('uses', { mode: 'number' }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.day, t.feature] })],
);
export type FeatureUseRow = typeof featureUses.$inferSelect;

const figure = col('usage_metadata', true);

export const analyticsTables = [
  mapTable(featureUses, {
    purpose:
      'Counting how features are used (per account, per day, never content) to decide what to build; stops for a user who objects (product_analytics)',
    basis: 'legitimate_interest',
    retention: 'usage_13_months',
    retentionFrom: 'day',
    subject: 'user',
    erase: 'delete',
    export: 'include',
    columns: {
      userId: col('identifier', true),
      day: figure,
      feature: figure,
      uses: figure,
    },
  }),
];
