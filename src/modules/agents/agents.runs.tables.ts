import { bigint, integer, pgTable, primaryKey, text } from 'drizzle-orm/pg-core';
import { bytea, ts } from '../../platform/db/columns.ts';
import { col, type ExportDecryption, mapTable } from '../../platform/db/datamap.ts';

// Agent runs, their steps and their events (see migrations/0039_agent_runs.sql). Every
// bytea column is vault ciphertext under the workspace's data key, JSON text inside.

/**
 * The vault context of one piece of a run's content: the workspace's key, bound to the run
 * and the field (`input`, `context`, `output`, `pending`, `step:<seq>`, `event:<type>`).
 */
export const runField = (workspaceId: string, runId: string, field: string) => ({
  owner: { type: 'workspace' as const, id: workspaceId },
  record: runId,
  field,
});

export const RUN_STATUSES = [
  'queued',
  'in_progress',
  'requires_action',
  'completed',
  'failed',
  'cancelled',
  'expired',
  'incomplete',
] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];

export const STOP_REASONS = [
  'end_turn',
  'max_steps',
  'max_tokens',
  'tool_error',
  'llm_error',
  'insufficient_credits',
  'cancelled',
  'timeout',
] as const;
export type StopReason = (typeof STOP_REASONS)[number];

/** Statuses a run leaves no more. */
export const FINISHED: ReadonlySet<RunStatus> = new Set(['completed', 'failed', 'cancelled', 'expired', 'incomplete']);

export const agentRuns = pgTable('agent_runs', {
  id: text('id').primaryKey(),
  workspaceId: text('workspace_id').notNull(),
  agentId: text('agent_id').notNull(),
  agentVersion: integer('agent_version').notNull(),
  userId: text('user_id'),
  keyId: text('key_id'),
  previousRunId: text('previous_run_id'),
  status: text('status').$type<RunStatus>().notNull(),
  stopReason: text('stop_reason').$type<StopReason>(),
  lastErrorCode: text('last_error_code'),
  lastErrorMessage: text('last_error_message'),
  input: bytea('input').notNull(),
  context: bytea('context'),
  output: bytea('output'),
  pending: bytea('pending'),
  modelSteps: integer('model_steps').notNull(),
  toolSteps: integer('tool_steps').notNull(),
  toolFailures: integer('tool_failures').notNull(),
  inputTokens: bigint('input_tokens', { mode: 'number' }).notNull(),
  outputTokens: bigint('output_tokens', { mode: 'number' }).notNull(),
  costMicros: bigint('cost_micros', { mode: 'number' }).notNull(),
  eventSeq: integer('event_seq').notNull(),
  leaseOwner: text('lease_owner'),
  leaseUntil: ts('lease_until'),
  attempts: integer('attempts').notNull(),
  cancelRequestedAt: ts('cancel_requested_at'),
  actionExpiresAt: ts('action_expires_at'),
  deadlineAt: ts('deadline_at'),
  createdAt: ts('created_at').notNull(),
  startedAt: ts('started_at'),
  completedAt: ts('completed_at'),
  updatedAt: ts('updated_at').notNull(),
});
export type AgentRunRow = typeof agentRuns.$inferSelect;

export const agentRunSteps = pgTable(
  'agent_run_steps',
  {
    runId: text('run_id').notNull(),
    workspaceId: text('workspace_id').notNull(),
    runCreatedAt: ts('run_created_at').notNull(),
    seq: integer('seq').notNull(),
    kind: text('kind').$type<'model' | 'tool'>().notNull(),
    status: text('status').$type<'running' | 'completed' | 'failed' | 'denied' | 'interrupted'>().notNull(),
    toolName: text('tool_name'),
    toolCallId: text('tool_call_id'),
    errorCode: text('error_code'),
    content: bytea('content'),
    inputTokens: integer('input_tokens').notNull(),
    outputTokens: integer('output_tokens').notNull(),
    costMicros: bigint('cost_micros', { mode: 'number' }).notNull(),
    latencyMs: integer('latency_ms'),
    startedAt: ts('started_at').notNull(),
    completedAt: ts('completed_at'),
  },
  (t) => [primaryKey({ columns: [t.runId, t.seq, t.runCreatedAt] })],
);
export type AgentRunStepRow = typeof agentRunSteps.$inferSelect;

export const agentRunEvents = pgTable(
  'agent_run_events',
  {
    runId: text('run_id').notNull(),
    workspaceId: text('workspace_id').notNull(),
    runCreatedAt: ts('run_created_at').notNull(),
    seq: integer('seq').notNull(),
    type: text('type').notNull(),
    data: bytea('data').notNull(),
    createdAt: ts('created_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.runId, t.seq, t.runCreatedAt] })],
);
export type AgentRunEventRow = typeof agentRunEvents.$inferSelect;

const meta = (purpose?: string) => col('usage_metadata', false, purpose ? { purpose } : {});
// Ciphertext under the workspace key: exports show it decrypted, as the run API does. Secrets
// and OAuth tokens never reach it: tools send them in request headers only and redact them
// from every result and error handed back to the model.
const content = (purpose: string, extra: { workspaceExportOnly?: boolean } = {}) =>
  col('content', false, { purpose, export: 'decrypt', ...extra });

/** A column of a row as an export reads it (SQL names, JSON values). */
function field(row: Readonly<Record<string, unknown>>, column: string): string {
  const v = row[column];
  if (typeof v !== 'string' && typeof v !== 'number') throw new Error(`the export read no ${column}`);
  return String(v);
}

/** How exports decrypt run content: the engine's contexts, from the exported row. */
const runContent: ExportDecryption = {
  json: true,
  context: (row, column) => runField(field(row, 'workspace_id'), field(row, 'id'), column),
};
const stepContent: ExportDecryption = {
  json: true,
  context: (row) => runField(field(row, 'workspace_id'), field(row, 'run_id'), `step:${field(row, 'seq')}`),
};
const eventContent: ExportDecryption = {
  json: true,
  context: (row) => runField(field(row, 'workspace_id'), field(row, 'run_id'), `event:${field(row, 'type')}`),
};
/** A user's export finds steps and events through the runs they started. */
const ofRun = { column: 'run_id', table: 'agent_runs', references: 'id' };

/** The data map entries of the run tables: task execution logs, 90 days. */
export const agentRunTables = [
  mapTable(agentRuns, {
    purpose: "Runs of the workspace's agents: what was asked, what the agent did and answered, what it cost",
    basis: 'contract',
    retention: 'logs_90_days',
    subject: 'workspace',
    exportDecrypt: runContent,
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      agentId: col('identifier', false),
      agentVersion: meta('The agent version the run pinned'),
      userId: col('identifier', true, { purpose: 'The member who started the run (or whose API key did)' }),
      keyId: col('identifier', false, { purpose: 'The API key that started the run' }),
      previousRunId: col('identifier', false, { purpose: 'The run this one continues' }),
      status: meta(),
      stopReason: meta(),
      lastErrorCode: meta(),
      lastErrorMessage: meta('A fixed message describing the last error (never provider bodies or content)'),
      input: content('The run input (customer content, encrypted with the workspace key)'),
      // It holds the conversation of the run it continues, which another member may have started.
      context: content('The messages the run started from (customer content, encrypted)', {
        workspaceExportOnly: true,
      }),
      output: content('The final answer (customer content, encrypted)'),
      pending: content('Tool calls waiting for approval and the decisions on them (customer content, encrypted)'),
      modelSteps: meta(),
      toolSteps: meta(),
      toolFailures: meta(),
      inputTokens: meta(),
      outputTokens: meta(),
      costMicros: col('billing', false, { purpose: "The run's cost, the sum of its metered model calls" }),
      eventSeq: col('operational', false),
      leaseOwner: col('operational', false, { purpose: 'The worker running the run' }),
      leaseUntil: col('operational', false),
      attempts: col('operational', false),
      cancelRequestedAt: meta(),
      actionExpiresAt: meta(),
      deadlineAt: meta(),
      createdAt: meta(),
      startedAt: meta(),
      completedAt: meta(),
      updatedAt: meta(),
    },
  }),
  mapTable(agentRunSteps, {
    purpose: 'The steps of agent runs: one per model call and per tool call, with usage, latency and status',
    basis: 'contract',
    retention: 'logs_90_days',
    retentionFrom: 'run_created_at',
    subject: 'workspace',
    exportDecrypt: stepContent,
    exportWith: ofRun,
    columns: {
      runId: col('identifier', false),
      workspaceId: col('identifier', false),
      runCreatedAt: meta(),
      seq: meta(),
      kind: meta(),
      status: meta(),
      toolName: meta('The tool called (a name from the agent definition)'),
      toolCallId: col('identifier', false),
      errorCode: meta(),
      content: content('The model message, or the tool arguments and result (customer content, encrypted)'),
      inputTokens: meta(),
      outputTokens: meta(),
      costMicros: col('billing', false),
      latencyMs: meta(),
      startedAt: meta(),
      completedAt: meta(),
    },
  }),
  mapTable(agentRunEvents, {
    purpose: "The events of agent runs, which a run's event stream replays",
    basis: 'contract',
    retention: 'logs_90_days',
    retentionFrom: 'run_created_at',
    subject: 'workspace',
    exportDecrypt: eventContent,
    exportWith: ofRun,
    columns: {
      runId: col('identifier', false),
      workspaceId: col('identifier', false),
      runCreatedAt: meta(),
      seq: meta(),
      type: meta(),
      data: content('The event (customer content, encrypted)'),
      createdAt: meta(),
    },
  }),
];
