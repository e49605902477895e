import { getTableColumns, getTableName, type SQL } from 'drizzle-orm';
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

/**
 * Retention classes. The privacy module's retention job (`privacy.retention.ts`) enforces
 * each one on every table the map puts in it, so a new table gets retention by declaring
 * its class (and, for a time-based class, the column its window counts from).
 */
export type RetentionClass =
  | 'account_lifetime' // until the account is deleted
  | 'workspace_lifetime' // until the workspace is deleted
  | 'until_expiry' // deleted as soon as it expires or is used (sessions, tokens): `expiredWhen`
  | 'logs_90_days' // request (API) logs and agent run logs: 90 days
  | 'security_13_months'
  | 'audit_13_months' // audit events and their checkpoints: 13 months, or the workspace plan's auditRetentionMonths
  | 'usage_13_months' // per-call rows rolled up into daily aggregates (no key or user) after 90 days; those kept 13 months
  | 'outbox_30_days'
  | 'billing_7_years' // ledger, reservations, plans: kept for tax and accounting law, also after deletion
  | 'operational'; // platform bookkeeping, no personal data

type ColumnFacts = {
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
  /**
   * Whose personal data the column is: the (SQL) name of the `subject` or `subject_email`
   * column of the same table naming that person. Default: the table's only such column.
   * The export shows the value only to that person.
   */
  exportOf?: string;
  /** What erasing the person does to the column (default: see `eraseRuleOf`). */
  erase?: EraseRule;
  /**
   * Only a workspace's export (for its owner) shows the column; a user's export lists it as
   * not exported. For content that may carry other members' data, e.g. a run's context,
   * which holds the conversation of the run it continues, whoever started that one.
   */
  workspaceExportOnly?: boolean;
};

/**
 * One column's entry. A `file` column says how to open it (`exportFile`); no other column
 * may, so the type demands the one with the other.
 */
export type ColumnEntry = ColumnFacts &
  (
    | {
        /** How the export treats the column (default: see `exportRuleOf`). */
        export?: Exclude<ExportRule, 'file'>;
        exportFile?: undefined;
      }
    | { export: 'file'; exportFile: ExportFile }
  );

/** A vault context (owner, record, field) as the vault binds a ciphertext to it. */
export type SealedIn = {
  owner: { type: 'user' | 'workspace' | 'platform'; id: string };
  record: string;
  field: string;
};

/**
 * How exports open the table's `decrypt` columns, declared by the module that encrypts them.
 * `context` gets the row as the export reads it (every exported column by its SQL name, as
 * JSON values) and the column's SQL name, and answers the vault context the value was
 * encrypted under.
 */
export type ExportDecryption = {
  context(row: Readonly<Record<string, unknown>>, column: string): SealedIn;
  /** The plaintext is JSON text: the archive shows it parsed. Otherwise as UTF-8 text. */
  json: boolean;
};

/**
 * How exports open a `file` column (vault ciphertext of a whole file, e.g. an uploaded PDF),
 * declared by the module that encrypts it. Both functions get the row as the export reads it
 * (every exported column by its SQL name, as JSON values).
 */
export type ExportFile = {
  /** The vault context the file was encrypted under (`column`: the column's SQL name). */
  context(row: Readonly<Record<string, unknown>>, column: string): SealedIn;
  /**
   * Where the file goes in the archive: `files/<module>/<record>/<name>`. `record` is the id of
   * the record the file belongs to; `name` the file's name as stored (the export cleans both).
   */
  file(row: Readonly<Record<string, unknown>>): { record: string; name: string };
};

/**
 * How an export of personal data (a user's, or a workspace's for its owner) treats a column:
 * - `include`: exported; when it is personal data, only to the person it belongs to (`exportOf`);
 * - `never`: never exported, even to its owner (secrets: hashes, ciphertext, wrapped keys);
 * - `subject`: holds a user id; the export finds a user's rows through it, and other
 *   people's user ids in it become pseudonyms;
 * - `subject_email`: holds an email address; rows with the requester's address are theirs,
 *   other addresses are withheld;
 * - `workspace`: holds a workspace id; a workspace export finds the workspace's rows through it;
 * - `scrubbed`: structured data about a change rather than a person (audit diffs): exported
 *   with other people's user ids turned into pseudonyms and their email addresses withheld;
 * - `alias`: another identifier of the user the row names (the pseudonym audit events name
 *   them by): the export also finds the user's rows through its values;
 * - `decrypt`: vault ciphertext of content the row's owner may see (agent runs' input and
 *   output): exported decrypted, through the table's `exportDecrypt`, and scrubbed like
 *   `scrubbed`; a value whose data key was destroyed is exported as withheld, with the reason;
 * - `file`: vault ciphertext of a whole file (documents' originals, possibly binary): exported
 *   decrypted as a file of its own in the archive, through the column's `exportFile`, its bytes
 *   as they are (not scrubbed: mark the column `workspaceExportOnly` when they may hold other
 *   members' data); the row shows the file's path in the archive instead of the ciphertext. A
 *   file whose data key was destroyed is left out, and the row shows the reason instead.
 */
export type ExportRule =
  | 'include'
  | 'never'
  | 'subject'
  | 'subject_email'
  | 'workspace'
  | 'scrubbed'
  | 'alias'
  | 'decrypt'
  | 'file';

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

/**
 * A column's export rule with the defaults applied: secrets are `never`; personal
 * identifiers (user ids) are `subject`; `workspace_id` is `workspace`; the rest `include`.
 */
export function exportRuleOf(table: Pick<TableEntry, 'columns'>, column: string): ExportRule {
  const c = table.columns[column];
  if (!c) throw new Error(`no column ${column} in the data map entry`);
  if (c.export) return c.export;
  if (c.secret) return 'never';
  if (c.category === 'identifier' && c.personal) return 'subject';
  if (column === 'workspace_id') return 'workspace';
  return 'include';
}

/** Whether exports read the table at all (see `TableEntry.export`). */
export function tableExported(table: Pick<TableEntry, 'export' | 'subject'>): boolean {
  return (table.export ?? (table.subject === 'none' ? 'never' : 'include')) === 'include';
}

export type TableEntry = {
  table: string;
  module: string;
  purpose: string;
  basis: LawfulBasis;
  retention: RetentionClass;
  /** Whose data a row is: drives export and erasure. */
  subject: 'user' | 'workspace' | 'none';
  /**
   * For a time-based retention class (90 days, 13 months, 7 years): the timestamp column the
   * window counts from. Absent = `created_at` when the table has one; a table with neither
   * is kept (the retention run reports it as such).
   */
  retentionFrom?: string;
  /**
   * For `until_expiry`: when a row has expired (or was used), as a condition on the row at
   * the run's time `asOf`. The retention job deletes the rows it matches.
   */
  expiredWhen?: (asOf: Date) => SQL;
  /**
   * Who outside the installation receives this data, by role and name (e.g. the payment
   * processor for payments, the SMTP provider for outgoing mail). Absent = no one but the
   * operator. The privacy notice and the record of processing list them with the
   * registered sub-processors.
   */
  recipients?: readonly string[];
  /** Whether exports include the table (default: yes, unless `subject` is 'none'). */
  export?: 'include' | 'never';
  /** Required when a column's export rule is `decrypt`: how the export decrypts it. */
  exportDecrypt?: ExportDecryption;
  /**
   * Rows that belong to a row of another table (a run's steps and events belong to the run):
   * a user's export also finds them through the rows of `table` it found for the user,
   * where this table's `column` (SQL name) equals that row's `references`. A workspace's
   * export finds them through their own `workspace` column as usual.
   */
  exportWith?: { column: string; table: string; references: string };
  /** The erase rule of the table's columns that name none of their own (see `eraseRuleOf`). */
  erase?: EraseRule;
  columns: Record<string, ColumnEntry>;
};

/** `Omit` for each member of a union (keeps `ColumnEntry`'s `file` pairing). */
type OmitEach<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** Shorthand for a column entry. */
export function col(
  category: DataCategory,
  personal: boolean,
  extra: OmitEach<ColumnEntry, 'category' | 'personal'> = {},
): ColumnEntry {
  return { category, personal, ...extra };
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

/**
 * What erasing a person (their account, after the grace period) does to a column:
 * - `delete`: on a column naming the person (a `subject` or `subject_email` column), the
 *   rows naming them are deleted; on another column, the value goes with its row;
 * - `anonymise`: a column naming the person gets their pseudonym instead (or null where
 *   it is a foreign key); another personal column of the person's rows becomes null where
 *   it may;
 * - `legal_hold`: kept as it is for as long as the law requires (billing records);
 * - `keep`: kept: not personal data, or personal data already stored only as a pseudonym
 *   or keyed hash (audit actors, throttling keys).
 *
 * Erasing a workspace deletes the rows naming it (its `workspace` column), except tables
 * whose rule is `legal_hold` or `keep`.
 */
export type EraseRule = 'delete' | 'anonymise' | 'legal_hold' | 'keep';

/**
 * A column's erase rule with the defaults applied, in this order: the column's `erase`;
 * the table's `erase`; billing records (`billing_7_years`) are `legal_hold`, except the
 * columns naming a person, which are `anonymise`d (the record stays, detached from the
 * person); a column that is not personal data is `keep`; rows about one user (`subject:
 * 'user'`) are `delete`d, or `anonymise`d when kept for a legal obligation (the record of
 * a privacy request outlives the account); elsewhere a column naming a person is
 * `anonymise`d. Null: no rule applies, and the data map test asks for an explicit one.
 */
export function eraseRuleOf(table: TableEntry, column: string): EraseRule | null {
  const c = table.columns[column];
  if (!c) throw new Error(`no column ${column} in the data map entry of ${table.table}`);
  if (c.erase) return c.erase;
  if (table.erase) return table.erase;
  const ref = exportRuleOf(table, column);
  const namesPerson = ref === 'subject' || ref === 'subject_email';
  if ((c.retention ?? table.retention) === 'billing_7_years') return namesPerson ? 'anonymise' : 'legal_hold';
  if (!c.personal) return 'keep';
  if (table.subject === 'user') return table.basis === 'legal_obligation' ? 'anonymise' : 'delete';
  if (namesPerson) return 'anonymise';
  return null;
}
