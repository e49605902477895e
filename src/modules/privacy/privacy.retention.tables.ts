import { bigint, boolean, integer, pgTable, primaryKey, text } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

// Retention runs (see migrations/0024_retention.sql).

export const RUN_TRIGGERS = ['schedule', 'operator'] as const;
export const RUN_STATUSES = ['running', 'completed', 'failed'] as const;
/** How a retention class applied to one table in a run. */
export const RESULT_RULES = ['expired', 'older_than', 'rollup', 'audit', 'with_events', 'kept'] as const;
export type ResultRule = (typeof RESULT_RULES)[number];

export const retentionRuns = pgTable('retention_runs', {
  id: text('id').primaryKey(),
  asOf: ts('as_of').notNull(),
  dryRun: boolean('dry_run').notNull(),
  trigger: text('trigger', { enum: RUN_TRIGGERS }).notNull(),
  startedBy: text('started_by'),
  startedAt: ts('started_at').notNull(),
  finishedAt: ts('finished_at'),
  status: text('status', { enum: RUN_STATUSES }).notNull(),
  errorCode: text('error_code'),
});
export type RetentionRunRow = typeof retentionRuns.$inferSelect;

export const retentionRunResults = pgTable(
  'retention_run_results',
  {
    runId: text('run_id').notNull(),
    retentionClass: text('retention_class').notNull(),
    tableName: text('table_name').notNull(),
    rule: text('rule', { enum: RESULT_RULES }).notNull(),
    rowsDeleted: bigint('rows_deleted', { mode: 'number' }).notNull(),
    rowsRolledUp: bigint('rows_rolled_up', { mode: 'number' }).notNull(),
    partitionsDropped: integer('partitions_dropped').notNull(),
    cutoff: ts('cutoff'),
  },
  (t) => [primaryKey({ columns: [t.runId, t.retentionClass, t.tableName] })],
);
export type RetentionResultRow = typeof retentionRunResults.$inferSelect;

const run = (purpose?: string) => col('operational', false, purpose ? { purpose } : {});

export const retentionTables = [
  mapTable(retentionRuns, {
    purpose: 'Showing that retention is enforced: when each retention run ran, as of when, and who started it',
    basis: 'legal_obligation',
    retention: 'security_13_months',
    retentionFrom: 'started_at',
    subject: 'none',
    columns: {
      id: col('identifier', false),
      asOf: run('The time the run applied the retention windows at'),
      dryRun: run('A preview that removed nothing'),
      trigger: run('The schedule, or an operator'),
      startedBy: col('identifier', true, { purpose: 'The operator who started the run, for accountability' }),
      startedAt: run(),
      finishedAt: run(),
      status: run(),
      errorCode: run('Why a run failed, as a stable code'),
    },
  }),
  mapTable(retentionRunResults, {
    purpose: 'What each retention run removed (or would remove), per data class and table: counts only',
    basis: 'legal_obligation',
    // No personal data; deleted with their run (foreign key, on delete cascade).
    retention: 'operational',
    subject: 'none',
    columns: {
      runId: col('identifier', false),
      retentionClass: run(),
      tableName: run(),
      rule: run('How the class applied to the table'),
      rowsDeleted: run(),
      rowsRolledUp: run(),
      partitionsDropped: run(),
      cutoff: run('Rows older than this expired'),
    },
  }),
];
