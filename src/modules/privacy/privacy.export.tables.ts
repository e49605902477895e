import { lte } from 'drizzle-orm';
import { bigint, integer, pgTable, text } from 'drizzle-orm/pg-core';
import { bytea, ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

// Exports of personal data (see migrations/0025_privacy_exports.sql).

export const EXPORT_KINDS = ['user', 'workspace'] as const;
export type ExportKind = (typeof EXPORT_KINDS)[number];

export const EXPORT_STATUSES = ['pending', 'building', 'ready', 'downloaded', 'failed'] as const;
export type ExportStatus = (typeof EXPORT_STATUSES)[number];

export const privacyExports = pgTable('privacy_exports', {
  id: text('id').primaryKey(),
  kind: text('kind', { enum: EXPORT_KINDS }).notNull(),
  userId: text('user_id').notNull(),
  workspaceId: text('workspace_id'),
  requestId: text('request_id'),
  status: text('status', { enum: EXPORT_STATUSES }).notNull(),
  tokenHash: text('token_hash'),
  archiveCiphertext: bytea('archive_ciphertext'),
  archiveBytes: bigint('archive_bytes', { mode: 'number' }),
  rowCount: integer('row_count'),
  createdAt: ts('created_at').notNull(),
  builtAt: ts('built_at'),
  expiresAt: ts('expires_at'),
  linkSentAt: ts('link_sent_at'),
  downloadedAt: ts('downloaded_at'),
});

export type ExportRow = typeof privacyExports.$inferSelect;

export const exportTables = [
  mapTable(privacyExports, {
    purpose:
      'Preparing the exports of personal data users ask for (access and portability) and handing each over once through an expiring link',
    basis: 'legal_obligation',
    retention: 'until_expiry',
    // 7 days after the archive was built (or the build failed); `privacy.exports-expire` deletes them too.
    expiredWhen: (asOf) => lte(privacyExports.expiresAt, asOf),
    subject: 'user',
    columns: {
      id: col('identifier', false),
      kind: col('account', false, {
        purpose: "Whether the export is of the user's own data or of a workspace they own",
      }),
      // Erasure deletes the person's exports, archive and all (the privacy request stays as the record).
      userId: col('identifier', true, { purpose: 'Who asked for the export (whose data it is)', erase: 'delete' }),
      workspaceId: col('identifier', false, { purpose: 'The workspace exported, for a workspace export' }),
      requestId: col('identifier', false, { purpose: 'The privacy request that tracks the export' }),
      status: col('account', true),
      tokenHash: col('credential', false, { secret: true, purpose: 'SHA-256 of the single-use download token' }),
      archiveCiphertext: col('content', true, {
        secret: true,
        purpose: 'The archive, gzip-compressed and encrypted by the vault under the requester’s data key',
      }),
      archiveBytes: col('account', false, { purpose: 'Size of the archive before compression' }),
      rowCount: col('account', false, { purpose: 'How many records the archive holds' }),
      createdAt: col('account', true),
      builtAt: col('account', true),
      expiresAt: col('account', false, { purpose: 'When the link stops working and the export is deleted' }),
      linkSentAt: col('account', true, { purpose: 'When the download link was mailed' }),
      downloadedAt: col('account', true),
    },
  }),
];
