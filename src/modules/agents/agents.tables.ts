import { index, integer, json, pgTable, text, unique } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';
import type { AgentDefinition } from './agents.schemas.ts';

// Agent definitions and their published versions (see migrations/0033_agents.sql).

export const agents = pgTable(
  'agents',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id').notNull(),
    name: text('name').notNull(),
    draft: json('draft').$type<AgentDefinition>().notNull(),
    latestVersion: integer('latest_version').notNull(),
    createdAt: ts('created_at').notNull(),
    updatedAt: ts('updated_at').notNull(),
    archivedAt: ts('archived_at'),
  },
  (t) => [index('agents_workspace_idx').on(t.workspaceId, t.id)],
);

export const agentVersions = pgTable(
  'agent_versions',
  {
    id: text('id').primaryKey(),
    agentId: text('agent_id').notNull(),
    workspaceId: text('workspace_id').notNull(),
    version: integer('version').notNull(),
    definition: json('definition').$type<AgentDefinition>().notNull(),
    createdBy: text('created_by'),
    createdAt: ts('created_at').notNull(),
  },
  (t) => [unique().on(t.agentId, t.version)],
);

export type AgentRow = typeof agents.$inferSelect;
export type AgentVersionRow = typeof agentVersions.$inferSelect;

/** The data map entries of the definitions' tables. */
export const agentTables = [
  mapTable(agents, {
    purpose: "The workspace's agents: each one's editable draft definition (model, instructions, tools, limits)",
    basis: 'contract',
    retention: 'workspace_lifetime',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      name: col('content', false, { purpose: 'The name the workspace gave the agent' }),
      draft: col('content', false, {
        purpose: 'The agent definition being edited (customer content, never logged; secrets are never in it)',
      }),
      latestVersion: col('tenancy', false, { purpose: 'The number of the latest published version' }),
      createdAt: col('tenancy', false),
      updatedAt: col('tenancy', false),
      archivedAt: col('tenancy', false, { purpose: 'When the agent was archived (kept for its runs and versions)' }),
    },
  }),
  mapTable(agentVersions, {
    purpose: 'Published, immutable versions of agent definitions, which runs pin',
    basis: 'contract',
    retention: 'workspace_lifetime',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      agentId: col('identifier', false),
      workspaceId: col('identifier', false),
      version: col('tenancy', false, { purpose: 'The version number, 1, 2, 3... per agent' }),
      definition: col('content', false, {
        purpose: 'The agent definition as published (customer content, never logged; secrets are never in it)',
      }),
      createdBy: col('identifier', true, { purpose: 'The member who published the version' }),
      createdAt: col('tenancy', false),
    },
  }),
];
