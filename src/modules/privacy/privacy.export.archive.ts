import { createHmac, randomBytes } from 'node:crypto';
import {
  type ExportRule,
  exportRuleOf,
  type SealedIn,
  type TableEntry,
  tableExported,
} from '../../platform/db/datamap.ts';
import { VaultError } from '../vault/index.ts';
import type { SubjectMatch } from './privacy.erasure.repo.ts';

/**
 * What an export reads, derived from the data map alone (no table is named here): per
 * table, the columns it exports and how, and the columns that find the requester's rows.
 * A table the map adds later is exported by declaring its columns, nothing else.
 */
export type ExportColumn = {
  name: string;
  rule: Exclude<ExportRule, 'never'>;
  personal: boolean;
  /** For personal `include` columns: the subject column naming whose data it is (null: undetermined, withheld). */
  ownerColumn: string | null;
  category: string;
  purpose: string;
  basis: string;
  retention: string;
};

export type TablePlan = {
  entry: TableEntry;
  columns: ExportColumn[];
  /** Columns not exported (secrets; content only a workspace's export shows), with why they are kept. */
  notExported: Array<{ column: string; purpose: string; reason?: string }>;
  userColumns: string[];
  /** Columns holding other identifiers of the user a row names (pseudonyms). */
  aliasColumns: string[];
  emailColumns: string[];
  workspaceColumns: string[];
  /** Columns exported decrypted (rule `decrypt`), through the entry's `exportDecrypt`. */
  decryptColumns: string[];
};

/**
 * Who asks: their user id, email and the other identifiers (pseudonyms) the map's `alias`
 * columns hold for them. Rows are found by the address (ignoring case, as erasure finds
 * them) only when `emailVerified`: an unconfirmed address may be someone else's.
 */
export type ExportRequester = { userId: string; email: string; emailVerified?: boolean; aliases: string[] };

/** One condition finding the requester's rows: `column` names `value` (an address matches ignoring case). */
export type ExportMatch = { column: string; value: string; match: SubjectMatch };
export type ExportScope = { kind: 'user' } | { kind: 'workspace'; workspaceId: string };

/** Replaces another person's value in an export. */
export const WITHHELD = '[withheld: personal data of another person]';
/** Replaces encrypted content whose data key was destroyed (crypto-shredding): it exists no more. */
export const WITHHELD_KEY_DESTROYED = '[withheld: its encryption key was destroyed, so it can no longer be read]';
/** Replaces encrypted content the vault refused to decrypt (altered or misplaced ciphertext). */
export const WITHHELD_UNREADABLE = '[withheld: it could not be decrypted]';

const WORKSPACE_ONLY = "Shown only in the workspace's export (to its owner): it may hold other members' data";

/**
 * Per table of the map that exports may read: its columns and match columns. `scope` is the
 * kind of export: a user's leaves out the columns only a workspace's export shows.
 */
export function planExport(map: readonly TableEntry[], scope: ExportScope['kind'] = 'user'): TablePlan[] {
  return map.filter(tableExported).map((entry) => {
    const rules = Object.keys(entry.columns).map((name) => ({ name, rule: exportRuleOf(entry, name) }));
    const byRule = (r: ExportRule) => rules.filter((c) => c.rule === r).map((c) => c.name);
    const userColumns = byRule('subject');
    const emailColumns = byRule('subject_email');
    const subjects = [...userColumns, ...emailColumns];
    const columns: ExportColumn[] = [];
    const notExported: TablePlan['notExported'] = [];
    for (const { name, rule } of rules) {
      const c = entry.columns[name];
      if (!c) continue;
      const purpose = c.purpose ?? entry.purpose;
      if (rule === 'never') {
        notExported.push({ column: name, purpose });
        continue;
      }
      if (c.workspaceExportOnly && scope !== 'workspace') {
        notExported.push({ column: name, purpose, reason: WORKSPACE_ONLY });
        continue;
      }
      if (rule === 'decrypt' && !entry.exportDecrypt) {
        throw new Error(`${entry.table}.${name} is exported decrypted, but the map says not how (exportDecrypt)`);
      }
      const ownerColumn =
        rule === 'include' && c.personal
          ? (c.exportOf ?? (subjects.length === 1 ? (subjects[0] ?? null) : null))
          : null;
      columns.push({
        name,
        rule,
        personal: c.personal,
        ownerColumn,
        category: c.category,
        purpose,
        basis: c.basis ?? entry.basis,
        retention: c.retention ?? entry.retention,
      });
    }
    return {
      entry,
      columns,
      notExported,
      userColumns,
      aliasColumns: byRule('alias'),
      emailColumns,
      workspaceColumns: byRule('workspace'),
      decryptColumns: columns.filter((c) => c.rule === 'decrypt').map((c) => c.name),
    };
  });
}

/** The tables an export of `scope` reads, with the conditions that find its rows. */
export function matchesOf(plan: TablePlan, requester: ExportRequester, scope: ExportScope): ExportMatch[] {
  const exact = (column: string, value: string): ExportMatch => ({ column, value, match: 'exact' });
  if (scope.kind === 'workspace') return plan.workspaceColumns.map((column) => exact(column, scope.workspaceId));
  const ids = [requester.userId, ...requester.aliases];
  const addresses = requester.emailVerified === true ? plan.emailColumns : [];
  return [
    ...plan.userColumns.flatMap((column) => ids.map((value) => exact(column, value))),
    ...plan.aliasColumns.flatMap((column) => requester.aliases.map((value) => exact(column, value))),
    ...addresses.map((column): ExportMatch => ({ column, value: requester.email, match: 'address' })),
  ];
}

const EMAIL = /[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}/g;
/** User ids, and the pseudonyms audit events name users by. */
const PERSON_ID = /\b(?:usr_[0-9A-HJKMNP-TV-Z]{26}|anon_[0-9a-f]{32})\b/g;
const isPersonId = (v: string) => /^(?:usr_[0-9A-HJKMNP-TV-Z]{26}|anon_[0-9a-f]{32})$/.test(v);

/**
 * Shows stored rows (JSON, as Postgres renders them) to the requester, keeping other people
 * out of the archive: their user ids and audit pseudonyms become pseudonyms of the archive
 * (stable within one export, unlinkable across exports: a random key per export, never
 * stored), their email addresses and other personal data are withheld.
 */
export function exportFilter(requester: ExportRequester) {
  const key = randomBytes(32);
  const own = requester.email.toLowerCase();
  const mine = new Set([requester.userId, ...requester.aliases]);
  const pseudonyms = new Map<string, string>();
  const pseudonym = (userId: string) => {
    let p = pseudonyms.get(userId);
    if (!p) {
      p = `person_${createHmac('sha256', key).update(userId).digest('hex').slice(0, 16)}`;
      pseudonyms.set(userId, p);
    }
    return p;
  };
  const scrubText = (s: string) =>
    s
      .replace(PERSON_ID, (id) => (mine.has(id) ? id : pseudonym(id)))
      .replace(EMAIL, (e) => (e.toLowerCase() === own ? e : WITHHELD));

  function json(value: unknown): unknown {
    if (value === null || value === undefined) return null;
    if (typeof value === 'string') return scrubText(value);
    if (Array.isArray(value)) return value.map(json);
    if (typeof value === 'object') {
      return Object.fromEntries(
        Object.entries(value as Record<string, unknown>).map(([k, v]) => [scrubText(k), json(v)]),
      );
    }
    return value;
  }

  const isRequester = (plan: TablePlan, column: string, row: Record<string, unknown>) => {
    const v = row[column];
    if (typeof v !== 'string') return false;
    return plan.emailColumns.includes(column) ? v.toLowerCase() === own : mine.has(v);
  };

  return {
    /** One stored row as the archive shows it to the requester. */
    row(plan: TablePlan, row: Record<string, unknown>): Record<string, unknown> {
      const out: Record<string, unknown> = {};
      for (const c of plan.columns) {
        const v = row[c.name];
        if (v === null || v === undefined) {
          out[c.name] = null;
        } else if (c.rule === 'subject' || c.rule === 'alias') {
          // Key ids and system names stay; people other than the requester become pseudonyms.
          out[c.name] = typeof v === 'string' && !mine.has(v) && isPersonId(v) ? pseudonym(v) : json(v);
        } else if (c.rule === 'subject_email') {
          out[c.name] = typeof v === 'string' && v.toLowerCase() === own ? v : WITHHELD;
        } else if (c.rule === 'include' && c.personal) {
          out[c.name] = c.ownerColumn && isRequester(plan, c.ownerColumn, row) ? json(v) : WITHHELD;
        } else {
          // workspace ids, non-personal values, `scrubbed` structured data and decrypted content
          out[c.name] = json(v);
        }
      }
      return out;
    },
  };
}

/** Opens one vault ciphertext (the privacy module's vault, inside the export's transaction). */
export type Unseal = (context: SealedIn, ciphertext: Buffer) => Promise<Buffer>;

/** A bytea value as Postgres renders it in JSON: `\x` and hex digits. */
function byteaOf(value: unknown): Buffer | null {
  if (typeof value !== 'string' || !/^\\x(?:[0-9a-fA-F]{2})*$/.test(value)) return null;
  return Buffer.from(value.slice(2), 'hex');
}

/**
 * Replaces, in stored rows (as `selectRows` reads them), each `decrypt` column's ciphertext
 * with its content: parsed JSON or text, as the map's `exportDecrypt` says. A value whose data
 * key was destroyed is withheld with that reason, one the vault refuses otherwise with
 * another: the export goes on either way. Returns how many values were withheld, by reason.
 */
export async function decryptRows(
  plan: TablePlan,
  rows: Array<Record<string, unknown>>,
  unseal: Unseal,
): Promise<{ keyDestroyed: number; unreadable: number }> {
  const how = plan.entry.exportDecrypt;
  const withheld = { keyDestroyed: 0, unreadable: 0 };
  if (!how || plan.decryptColumns.length === 0) return withheld;
  for (const row of rows) {
    for (const column of plan.decryptColumns) {
      const value = row[column];
      if (value === null || value === undefined) continue;
      const ciphertext = byteaOf(value);
      try {
        if (!ciphertext) throw new VaultError('malformed');
        const text = (await unseal(how.context(row, column), ciphertext)).toString('utf8');
        row[column] = how.json ? (JSON.parse(text) as unknown) : text;
      } catch (err) {
        // Anything else (the database failing) fails the build, which its job retries.
        if (!(err instanceof VaultError) && !(err instanceof SyntaxError)) throw err;
        const gone = err instanceof VaultError && (err.reason === 'key_destroyed' || err.reason === 'key_missing');
        if (gone) withheld.keyDestroyed++;
        else withheld.unreadable++;
        row[column] = gone ? WITHHELD_KEY_DESTROYED : WITHHELD_UNREADABLE;
      }
    }
  }
  return withheld;
}

/** The manifest's entry for one table: what the map says about it. */
export function manifestEntry(plan: TablePlan, rows: number) {
  const e = plan.entry;
  return {
    table: e.table,
    module: e.module,
    purpose: e.purpose,
    lawfulBasis: e.basis,
    retention: e.retention,
    recipients: [...(e.recipients ?? [])],
    rows,
    columns: plan.columns.map((c) => ({
      name: c.name,
      category: c.category,
      personal: c.personal,
      purpose: c.purpose,
      lawfulBasis: c.basis,
      retention: c.retention,
      ...(c.rule === 'decrypt' ? { storedEncrypted: true } : {}),
    })),
    notExported: plan.notExported,
  };
}
