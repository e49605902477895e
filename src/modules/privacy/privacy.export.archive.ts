import { createHash, createHmac, randomBytes } from 'node:crypto';
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
  /** Columns exported as files of their own (rule `file`), through each column's `exportFile`. */
  fileColumns: string[];
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
      if (rule === 'file' && !c.exportFile) {
        throw new Error(`${entry.table}.${name} is exported as a file, but the map says not how (exportFile)`);
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
      fileColumns: columns.filter((c) => c.rule === 'file').map((c) => c.name),
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
    /** Free text as the archive shows it to the requester: other people's ids and addresses replaced. */
    text: scrubText,
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
        } else if (c.rule === 'file') {
          // The file's path in the archive (already made of scrubbed text), or why it is withheld.
          out[c.name] = v;
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

/** One file of the archive (`files` of the archive, by path): a `file` column's decrypted value. */
export type ArchiveFile = {
  table: string;
  column: string;
  /** The record it belongs to (as the map's `exportFile` names it). */
  record: string;
  /** Size in bytes, and SHA-256 (hex) of the bytes. */
  size: number;
  sha256: string;
  /** The file's bytes, exactly as uploaded, in base64. */
  base64: string;
};

/** The longest file name (in characters) a path in the archive gets; longer ones are cut, keeping the extension. */
const MAX_NAME = 120;

/**
 * One segment of a path in the archive, safe to write to any file system as it is: the last
 * segment of `raw` (a stored name may carry a client's folders), letters, digits and a few
 * marks kept, anything else `_`, no leading dots (no hidden files, no `..`), at most MAX_NAME
 * characters. Empty: `fallback`.
 */
export function cleanSegment(raw: string, fallback: string): string {
  const last = raw.split(/[\\/]/).pop() ?? '';
  const cleaned = last
    .normalize('NFC')
    .replace(/[^\p{L}\p{N} ._()+,=-]/gu, '_')
    .replace(/_{2,}/g, '_')
    .replace(/^[.\s]+|\s+$/g, '');
  const chars = [...cleaned];
  if (chars.length <= MAX_NAME) return cleaned || fallback;
  const dot = cleaned.lastIndexOf('.');
  const ext = dot > 0 && cleaned.length - dot <= 12 ? cleaned.slice(dot) : '';
  return chars.slice(0, MAX_NAME - ext.length).join('') + ext;
}

/** The path of a file in the archive: `files/<module>/<record>/<name>`, each segment cleaned. */
export function archivePath(module: string, record: string, name: string): string {
  return ['files', cleanSegment(module, 'module'), cleanSegment(record, 'record'), cleanSegment(name, 'file')].join(
    '/',
  );
}

/** `path`, or (taken by another file) `path` with `-2`, `-3`... before its extension. */
function freePath(files: Readonly<Record<string, ArchiveFile>>, path: string): string {
  if (!(path in files)) return path;
  const slash = path.lastIndexOf('/');
  const dot = path.lastIndexOf('.');
  const [stem, ext] = dot > slash + 1 ? [path.slice(0, dot), path.slice(dot)] : [path, ''];
  for (let n = 2; ; n++) if (!(`${stem}-${n}${ext}` in files)) return `${stem}-${n}${ext}`;
}

/**
 * Opens, in stored rows (as `selectRows` reads them), each `file` column's ciphertext and adds
 * the file to `files` under its path (`archivePath`, the name scrubbed by `scrub` first, as the
 * row's other text is), leaving the path in the row instead of the ciphertext. A file whose
 * data key was destroyed is left out, the row saying so; one the vault refuses otherwise is
 * left out with another reason: the export goes on either way. Returns how many files were
 * withheld, by reason.
 */
export async function exportFiles(
  plan: TablePlan,
  rows: Array<Record<string, unknown>>,
  unseal: Unseal,
  scrub: (text: string) => string,
  files: Record<string, ArchiveFile>,
): Promise<{ keyDestroyed: number; unreadable: number }> {
  const withheld = { keyDestroyed: 0, unreadable: 0 };
  for (const column of plan.fileColumns) {
    const how = plan.entry.columns[column]?.exportFile;
    if (!how) continue;
    for (const row of rows) {
      const value = row[column];
      if (value === null || value === undefined) continue;
      const ciphertext = byteaOf(value);
      try {
        if (!ciphertext) throw new VaultError('malformed');
        const bytes = await unseal(how.context(row, column), ciphertext);
        const { record, name } = how.file(row);
        const path = freePath(files, archivePath(plan.entry.module, record, scrub(name)));
        files[path] = {
          table: plan.entry.table,
          column,
          record,
          size: bytes.length,
          sha256: createHash('sha256').update(bytes).digest('hex'),
          base64: bytes.toString('base64'),
        };
        row[column] = path;
      } catch (err) {
        // Anything else (the database failing) fails the build, which its job retries.
        if (!(err instanceof VaultError)) throw err;
        const gone = err.reason === 'key_destroyed' || err.reason === 'key_missing';
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
      ...(c.rule === 'file' ? { storedEncrypted: true, exportedAs: 'file' as const } : {}),
    })),
    notExported: plan.notExported,
  };
}
