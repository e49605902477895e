import { type ColumnEntry, col, mapRawTable, type TableEntry } from '../db/datamap.ts';

/**
 * pg-boss's tables (schema `pgboss`, created and migrated by pg-boss itself). Job data
 * carries ids only, never content or secrets, by rule of the Jobs interface; a failed job's
 * output holds only the error's kind (see pgboss.ts). Completed jobs move to the archive
 * after 12 hours and are deleted 7 days later.
 *
 * pg-boss stores each queue's jobs in a partition of `pgboss.job` named `j` + the SHA-224
 * of the queue name (`isJobPartition`); partitions have exactly the columns of `pgboss.job`.
 */
const op = (purpose?: string): ColumnEntry => col('operational', false, purpose ? { purpose } : {});

const jobColumns: Record<string, ColumnEntry> = {
  id: col('identifier', false),
  name: op('Queue the job belongs to'),
  priority: op(),
  data: col('operational', false, { purpose: 'Job parameters: ids of the records to work on, never content' }),
  state: op('created, retry, active, completed, cancelled or failed'),
  retry_limit: op(),
  retry_count: op(),
  retry_delay: op(),
  retry_backoff: op(),
  start_after: op(),
  started_on: op(),
  singleton_key: op('De-duplication key (an id or queue name)'),
  singleton_on: op(),
  expire_in: op(),
  created_on: op(),
  completed_on: op(),
  keep_until: op(),
  output: op('Outcome of the run; for failures only the error kind'),
  dead_letter: op(),
  policy: op(),
};

const common = {
  basis: 'legitimate_interest',
  retention: 'operational',
  subject: 'none',
} as const;

export const jobsDataMap: TableEntry[] = [
  mapRawTable('pgboss.version', {
    ...common,
    purpose: 'Job runner schema version and maintenance timestamps',
    columns: { version: op(), maintained_on: op(), cron_on: op(), monitored_on: op() },
  }),
  mapRawTable('pgboss.queue', {
    ...common,
    purpose: 'Background job queues and their retry and expiry settings',
    columns: {
      name: op(),
      policy: op(),
      retry_limit: op(),
      retry_delay: op(),
      retry_backoff: op(),
      expire_seconds: op(),
      retention_minutes: op(),
      dead_letter: op(),
      partition_name: op(),
      created_on: op(),
      updated_on: op(),
    },
  }),
  mapRawTable('pgboss.schedule', {
    ...common,
    purpose: 'Cron schedules of recurring jobs (retention runs, maintenance)',
    columns: {
      name: op(),
      cron: op(),
      timezone: op(),
      data: op('Parameters of the scheduled job: ids or settings, never content'),
      options: op(),
      created_on: op(),
      updated_on: op(),
    },
  }),
  mapRawTable('pgboss.subscription', {
    ...common,
    purpose: 'Event-to-queue subscriptions of the job runner',
    columns: { event: op(), name: op(), created_on: op(), updated_on: op() },
  }),
  mapRawTable('pgboss.job', {
    ...common,
    purpose: 'Queued, running and recently finished background jobs (ids only, no content)',
    columns: jobColumns,
  }),
  mapRawTable('pgboss.archive', {
    ...common,
    purpose: 'Finished background jobs kept for 7 days for troubleshooting, then deleted',
    columns: { ...jobColumns, archived_on: op() },
  }),
].map((t) => t('platform'));

/** True for pg-boss's per-queue partitions of pgboss.job (`j` + 56 hex characters). */
export function isJobPartition(schema: string, table: string): boolean {
  return schema === 'pgboss' && /^j[0-9a-f]{56}$/.test(table);
}
