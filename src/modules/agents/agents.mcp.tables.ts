import { boolean, pgTable, text, unique } from 'drizzle-orm/pg-core';
import { bytea, ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

/** A Model Context Protocol server a workspace connects for its agents (see migrations/0034_agent_tools.sql). */
export const agentMcpServers = pgTable(
  'agent_mcp_servers',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id').notNull(),
    name: text('name').notNull(),
    transport: text('transport', { enum: ['http', 'stdio'] }).notNull(),
    url: text('url'),
    command: text('command'),
    args: text('args').array().notNull(),
    headerNames: text('header_names').array().notNull(),
    headersCiphertext: bytea('headers_ciphertext'),
    enabled: boolean('enabled').notNull(),
    createdBy: text('created_by'),
    createdAt: ts('created_at').notNull(),
    updatedAt: ts('updated_at').notNull(),
  },
  (t) => [unique().on(t.workspaceId, t.name)],
);

export type McpServerRow = typeof agentMcpServers.$inferSelect;

export const agentMcpTables = [
  mapTable(agentMcpServers, {
    purpose: 'MCP servers a workspace connects so its agents can call their tools',
    basis: 'contract',
    retention: 'workspace_lifetime',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      name: col('tenancy', false, { purpose: 'Name agent definitions use to reference the server' }),
      transport: col('tenancy', false, { purpose: 'How Berth talks to the server (streamable HTTP or stdio)' }),
      url: col('tenancy', false, { purpose: 'Where the server is reached' }),
      command: col('tenancy', false, { purpose: 'The program started for a stdio server' }),
      args: col('tenancy', false, { purpose: "The stdio program's arguments" }),
      headerNames: col('tenancy', false, { purpose: 'Names of the extra headers sent to the server' }),
      headersCiphertext: col('credential', false, {
        secret: true,
        purpose: 'Extra headers sent to the server (may hold credentials), vault ciphertext',
      }),
      enabled: col('tenancy', false),
      createdBy: col('identifier', true, { purpose: 'The member who connected the server' }),
      createdAt: col('tenancy', false),
      updatedAt: col('tenancy', false),
    },
  }),
];
