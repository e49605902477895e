import { bigint, index, integer, pgTable, text } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

/** An API key: its settings and history. Its secrets are in `api_key_secrets` (see migrations/0006_keys.sql). */
export const apiKeys = pgTable(
  'api_keys',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id').notNull(),
    name: text('name').notNull(),
    scopes: text('scopes').array().notNull(),
    allowedModels: text('allowed_models').array(),
    rateLimitRpm: integer('rate_limit_rpm'),
    rateLimitTpm: integer('rate_limit_tpm'),
    spendLimitMicros: bigint('spend_limit_micros', { mode: 'number' }),
    spendLimitPeriod: text('spend_limit_period', { enum: ['day', 'month'] }),
    ipAllowlist: text('ip_allowlist').array(),
    expiresAt: ts('expires_at'),
    createdBy: text('created_by').notNull(),
    createdAt: ts('created_at').notNull(),
    updatedAt: ts('updated_at').notNull(),
    lastUsedAt: ts('last_used_at'),
    revokedAt: ts('revoked_at'),
    revokedBy: text('revoked_by'),
  },
  (t) => [
    index('api_keys_workspace_idx').on(t.workspaceId, t.createdAt),
    index('api_keys_creator_idx').on(t.workspaceId, t.createdBy),
  ],
);

/** A secret of a key: only the SHA-256 of the whole key, and what lists show of it. */
export const apiKeySecrets = pgTable(
  'api_key_secrets',
  {
    id: text('id').primaryKey(),
    keyId: text('key_id').notNull(),
    workspaceId: text('workspace_id').notNull(),
    hash: text('hash').notNull().unique(),
    displayPrefix: text('display_prefix').notNull(),
    last4: text('last4').notNull(),
    createdAt: ts('created_at').notNull(),
    expiresAt: ts('expires_at'),
    revokedAt: ts('revoked_at'),
  },
  (t) => [index('api_key_secrets_key_idx').on(t.workspaceId, t.keyId)],
);

export type ApiKeyRow = typeof apiKeys.$inferSelect;
export type ApiKeySecretRow = typeof apiKeySecrets.$inferSelect;

/** The data map entries of the tables this module owns. */
export const keysTables = [
  mapTable(apiKeys, {
    purpose: 'API keys members create to reach the gateway and the API from code',
    basis: 'contract',
    retention: 'workspace_lifetime',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      name: col('tenancy', false, { purpose: 'Name the member gave the key' }),
      scopes: col('security', false, { purpose: 'What the key may do' }),
      allowedModels: col('security', false, { purpose: 'Models the key may call' }),
      rateLimitRpm: col('security', false, { purpose: 'Requests per minute the key may make' }),
      rateLimitTpm: col('security', false, { purpose: 'Tokens per minute the key may use' }),
      spendLimitMicros: col('billing', false, { purpose: 'Spend cap of the key, in micro-units' }),
      spendLimitPeriod: col('billing', false, { purpose: 'Period the spend cap applies to' }),
      // The keys of an erased member go with their account (created_by cascades): `delete`.
      ipAllowlist: col('security', true, {
        purpose: 'Network ranges the key may be used from',
        exportOf: 'created_by',
        erase: 'delete',
      }),
      expiresAt: col('security', false),
      createdBy: col('identifier', true, { purpose: 'The member whose rights the key carries' }),
      createdAt: col('tenancy', false),
      updatedAt: col('tenancy', false),
      lastUsedAt: col('usage_metadata', true, {
        purpose: 'When the key was last used (to the minute)',
        exportOf: 'created_by',
        erase: 'delete',
      }),
      revokedAt: col('security', false),
      revokedBy: col('identifier', true, { purpose: 'Which member revoked the key' }),
    },
  }),
  mapTable(apiKeySecrets, {
    purpose: 'Secrets of API keys, stored as SHA-256 only (the plaintext is shown once)',
    basis: 'contract',
    retention: 'workspace_lifetime',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      keyId: col('identifier', false),
      workspaceId: col('identifier', false),
      hash: col('credential', false, { secret: true }),
      displayPrefix: col('security', false, { purpose: 'First characters of the key, shown in lists' }),
      last4: col('security', false, { purpose: 'Last 4 characters of the key, shown in lists' }),
      createdAt: col('security', false),
      expiresAt: col('security', false, { purpose: 'End of the grace period after a roll' }),
      revokedAt: col('security', false),
    },
  }),
];
