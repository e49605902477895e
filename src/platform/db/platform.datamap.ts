import { col, mapRawTable, type TableEntry } from './datamap.ts';

/** Tables the platform itself owns (not any module's). */
export const platformDataMap: TableEntry[] = [
  mapRawTable('berth_migrations', {
    purpose: 'Records which schema migrations were applied',
    basis: 'legitimate_interest',
    retention: 'operational',
    subject: 'none',
    columns: {
      version: col('operational', false),
      name: col('operational', false),
      checksum: col('operational', false),
      applied_at: col('operational', false),
    },
  })('platform'),
];
