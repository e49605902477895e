import { integer, jsonb, pgTable, text } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';
import type { PolicyDocument } from './privacy.notice.schemas.ts';

// The privacy policy's published versions (see migrations/0023_privacy_documents.sql).

export const policyVersions = pgTable('privacy_policy_versions', {
  version: integer('version').primaryKey(),
  contentHash: text('content_hash').notNull(),
  content: jsonb('content').$type<PolicyDocument>().notNull(),
  effectiveAt: ts('effective_at').notNull(),
});

export type PolicyVersionRow = typeof policyVersions.$inferSelect;

export const noticeTables = [
  mapTable(policyVersions, {
    purpose: 'Every version of the published privacy policy, so what people were told at any time can be shown',
    basis: 'legal_obligation',
    retention: 'operational',
    subject: 'none',
    columns: {
      version: col('operational', false),
      contentHash: col('operational', false, {
        purpose: "The SHA-256 of the policy's content: a new version only when it changes",
      }),
      content: col('operational', false, {
        purpose:
          "The policy as published: the data map's categories, purposes and retention, and the controller's public contact",
      }),
      effectiveAt: col('operational', false),
    },
  }),
];
