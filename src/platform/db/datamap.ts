import { getTableColumns, getTableName } from 'drizzle-orm';
import type { PgTable } from 'drizzle-orm/pg-core';

/**
 * The data map: every table and column Berth stores, with what it is, why it is kept,
 * on what lawful basis and for how long. Each module declares its tables' entries next to
 * their Drizzle definitions; a test compares the map with the live schema, so no column
 * exists that the map does not explain. Retention, export, erasure and the published
 * privacy notice are built from it.
 */
export type DataCategory =
  | 'identifier' // surrogate keys and foreign keys
  | 'account' // who a user is: email, name, status
  | 'credential' // password hashes, token hashes, encrypted secrets
  | 'security' // sign-in history, throttling, security events
  | 'tenancy' // workspaces, memberships, roles, invitations
  | 'usage_metadata' // tokens, latency, status of requests
  | 'billing'
  | 'audit'
  | 'content' // customer content: documents, agent definitions
  | 'communication' // outgoing email
  | 'operational'; // platform bookkeeping: migrations, jobs, keys' wrapping

export type LawfulBasis = 'contract' | 'legitimate_interest' | 'legal_obligation' | 'consent';

/** Retention classes; the privacy module turns each into a scheduled job. */
export type RetentionClass =
  | 'account_lifetime' // until the account is deleted
  | 'workspace_lifetime' // until the workspace is deleted
  | 'until_expiry' // deleted as soon as it expires or is used (sessions, tokens)
  | 'security_13_months'
  | 'audit_13_months' // audit events and their checkpoints (plan-dependent later)
  | 'usage_13_months' // per-call usage events (rolled up into daily aggregates by the privacy issue)
  | 'outbox_30_days'
  | 'billing_7_years' // ledger, reservations, plans: kept for tax and accounting law, also after deletion
  | 'operational'; // platform bookkeeping, no personal data

export type ColumnEntry = {
  category: DataCategory;
  personal: boolean;
  /** Overrides the table's purpose for this column. */
  purpose?: string;
  /** Overrides the table's lawful basis for this column. */
  basis?: LawfulBasis;
  /** Overrides the table's retention class for this column. */
  retention?: RetentionClass;
  /** Secrets are never exported, even to their owner. */
  secret?: boolean;
};

/** Everything the map says about one column, with the table's defaults applied. */
export type ColumnPolicy = {
  table: string;
  column: string;
  module: string;
  category: DataCategory;
  personal: boolean;
  purpose: string;
  basis: LawfulBasis;
  retention: RetentionClass;
  secret: boolean;
  subject: TableEntry['subject'];
};

/** Flattens the map to one policy per column: what the privacy notice, export and erasure read. */
export function columnPolicies(entries: TableEntry[]): ColumnPolicy[] {
  return entries.flatMap((t) =>
    Object.entries(t.columns).map(([column, c]) => ({
      table: t.table,
      column,
      module: t.module,
      category: c.category,
      personal: c.personal,
      purpose: c.purpose ?? t.purpose,
      basis: c.basis ?? t.basis,
      retention: c.retention ?? t.retention,
      secret: c.secret ?? false,
      subject: t.subject,
    })),
  );
}

export type TableEntry = {
  table: string;
  module: string;
  purpose: string;
  basis: LawfulBasis;
  retention: RetentionClass;
  /** Whose data a row is: drives export and erasure. */
  subject: 'user' | 'workspace' | 'none';
  columns: Record<string, ColumnEntry>;
};

/** Shorthand for a column entry. */
export function col(category: DataCategory, personal: boolean, extra: Omit<ColumnEntry, 'category' | 'personal'> = {}) {
  return { category, personal, ...extra } satisfies ColumnEntry;
}

type ColumnKeys<T extends PgTable> = keyof ReturnType<typeof getTableColumns<T>> & string;

/**
 * Declares a Drizzle table's data map entry. The type demands an entry for every column
 * the Drizzle table has; the schema test catches columns only the database has.
 */
export function mapTable<T extends PgTable>(
  table: T,
  entry: Omit<TableEntry, 'table' | 'columns' | 'module'> & { columns: Record<ColumnKeys<T>, ColumnEntry> },
): (module: string) => TableEntry {
  const columns = getTableColumns(table) as Record<string, { name: string }>;
  return (module) => ({
    ...entry,
    module,
    table: getTableName(table),
    columns: Object.fromEntries(
      Object.entries(entry.columns as Record<string, ColumnEntry>).map(([key, value]) => [
        columns[key]?.name ?? key,
        value,
      ]),
    ),
  });
}

/** A table Berth owns without a Drizzle definition (created by SQL only). */
export function mapRawTable(
  table: string,
  entry: Omit<TableEntry, 'table' | 'module'>,
): (module: string) => TableEntry {
  return (module) => ({ ...entry, module, table });
}

export function moduleDataMap(module: string, tables: Array<(module: string) => TableEntry>): TableEntry[] {
  return tables.map((t) => t(module));
}
