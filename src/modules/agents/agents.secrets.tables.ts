import { pgTable, text, unique } from 'drizzle-orm/pg-core';
import { bytea, ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

/** A workspace secret that agent tools reference by name (see migrations/0034_agent_tools.sql). */
export const agentSecrets = pgTable(
  'agent_secrets',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id').notNull(),
    name: text('name').notNull(),
    valueCiphertext: bytea('value_ciphertext').notNull(),
    allowedHosts: text('allowed_hosts').array().notNull(),
    allowedHeaders: text('allowed_headers').array().notNull(),
    createdBy: text('created_by'),
    createdAt: ts('created_at').notNull(),
    updatedAt: ts('updated_at').notNull(),
  },
  (t) => [unique().on(t.workspaceId, t.name)],
);

export type AgentSecretRow = typeof agentSecrets.$inferSelect;

export const agentSecretsTables = [
  mapTable(agentSecrets, {
    purpose: "Secrets a workspace's agent tools send to the services they call (API keys, tokens)",
    basis: 'contract',
    retention: 'workspace_lifetime',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      name: col('tenancy', false, { purpose: 'Name tools use to reference the secret' }),
      valueCiphertext: col('credential', false, {
        secret: true,
        purpose: 'The secret value, vault ciphertext bound to the row (never returned, never exported)',
      }),
      allowedHosts: col('security', false, { purpose: 'The only hosts the secret is ever sent to' }),
      allowedHeaders: col('security', false, { purpose: 'The only request headers the secret is ever sent in' }),
      createdBy: col('identifier', true, { purpose: 'The member who set the secret' }),
      createdAt: col('tenancy', false),
      updatedAt: col('tenancy', false),
    },
  }),
];
