import { integer, pgTable, text } from 'drizzle-orm/pg-core';
import { bytea, ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

/**
 * One data key (DEK) per owner, stored only wrapped under a key-encryption key version.
 * `wrappedKey` is null exactly when the key was destroyed (crypto-shredding).
 */
export const vaultDataKeys = pgTable('vault_data_keys', {
  id: text('id').primaryKey(),
  ownerType: text('owner_type', { enum: ['user', 'workspace', 'platform'] }).notNull(),
  ownerId: text('owner_id').notNull(),
  kekVersion: integer('kek_version').notNull(),
  wrappedKey: bytea('wrapped_key'),
  createdAt: ts('created_at').notNull(),
  rotatedAt: ts('rotated_at'),
  destroyedAt: ts('destroyed_at'),
});

export type DataKeyRow = typeof vaultDataKeys.$inferSelect;

/** The data map entries of the tables this module owns. */
export const vaultTables = [
  mapTable(vaultDataKeys, {
    purpose:
      'Per-owner data keys that encrypt stored secrets, wrapped by a key-encryption key kept outside the database; destroying one makes its secrets unreadable',
    basis: 'legitimate_interest',
    retention: 'operational',
    subject: 'none',
    columns: {
      id: col('identifier', false),
      ownerType: col('operational', false, {
        purpose: 'Whether the key belongs to a user, a workspace or the platform',
      }),
      ownerId: col('identifier', true, { purpose: 'The user or workspace whose secrets this key encrypts' }),
      kekVersion: col('operational', false, { purpose: 'Which key-encryption key version wraps the key' }),
      wrappedKey: col('credential', false, {
        purpose: 'The data key, encrypted; cleared when the key is destroyed',
        secret: true,
      }),
      createdAt: col('operational', false),
      rotatedAt: col('operational', false, { purpose: 'When the key was last rewrapped under a newer KEK' }),
      destroyedAt: col('operational', false, { purpose: 'When the key was destroyed (crypto-shredding)' }),
    },
  }),
];
