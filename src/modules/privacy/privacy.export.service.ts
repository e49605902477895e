import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { type Clock, DAY, MINUTE } from '../../platform/clock.ts';
import type { TableEntry } from '../../platform/db/datamap.ts';
import { afterCommit, type Database, type Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Actor, RequestMeta, Scope } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import type { Logger } from '../../platform/logger.ts';
import type { AuditService } from '../audit/index.ts';
import type { IdentityService } from '../identity/index.ts';
import type { Mailer } from '../notifications/index.ts';
import type { VaultContext, VaultService } from '../vault/index.ts';
import {
  type ArchiveFile,
  decryptRows,
  type ExportRequester,
  type ExportScope,
  exportFiles,
  exportFilter,
  manifestEntry,
  matchesOf,
  planExport,
  type TablePlan,
} from './privacy.export.archive.ts';
import type { ExportRepo } from './privacy.export.repo.ts';
import type { ExportKind, ExportRow } from './privacy.export.tables.ts';

/** How long a built archive and its link live. */
export const EXPORT_TTL_MS = 7 * DAY;
/** A pending export older than this is queued again by the hourly sweep (its first queueing failed). */
const REQUEUE_AFTER_MS = 10 * MINUTE;
/** An export not built this long after it was asked for failed (its job gave up); the sweep says so. */
const STALE_AFTER_MS = 6 * 60 * MINUTE;

const ARCHIVE_ABOUT =
  'Every record Berth holds about you (or, for a workspace export, about the workspace), found through the data map: ' +
  'per table, why it is kept (purpose), on what lawful basis, for how long (retention) and who else receives it ' +
  '(recipients). Secrets (password and token hashes, encrypted credentials, keys) are never exported; other ' +
  "people's user ids appear as pseudonyms (person_...), stable within this archive only, and their personal data as " +
  '"[withheld: personal data of another person]". Content Berth stores encrypted (what you asked agents and what ' +
  'they answered) appears decrypted; where its encryption key was destroyed, as withheld, with that reason. ' +
  'Files Berth stores encrypted (the originals of knowledge documents, in a workspace export) are in `files`, by ' +
  'their path in the archive (files/<module>/<record id>/<file name>), their bytes in base64; the record names ' +
  'that path, or why the file is withheld.';

export const EXPORT_BUILD_JOB = 'privacy.export-build';
export const EXPORT_EXPIRY_JOB = 'privacy.exports-expire';
export type ExportBuildJob = { exportId: string };

export const ARCHIVE_FORMAT = 'berth.personal-data-export/1';

/**
 * Tracks each export as a privacy request (type `portability`) with its one-month deadline.
 * Optional so the export works on its own; the privacy module wires its request service in.
 */
export type ExportRequestTracker = {
  open(tx: Database, input: { userId: string; workspaceId: string | null }): Promise<{ id: string }>;
  complete(tx: Database, requestId: string, outcome: string): Promise<void>;
  reject(tx: Database, requestId: string, outcome: string): Promise<void>;
};

export type ExportServiceDeps = {
  db: Pick<Db, 'system'>;
  repo: ExportRepo;
  clock: Clock;
  logger: Pick<Logger, 'info' | 'warn'>;
  jobs: Pick<Jobs, 'send'>;
  vault: Pick<VaultService, 'encrypt' | 'decrypt'>;
  mailer: Mailer;
  identity: Pick<IdentityService, 'findUserById' | 'recordSecurityEvent'>;
  audit: Pick<AuditService, 'record'>;
  /** The whole data map (every module's tables): what the export reads. */
  dataMap: () => readonly TableEntry[];
  requests?: ExportRequestTracker | undefined;
  publicUrl: string;
};

/** What the API shows of an export (never its token or archive). */
export type ExportView = {
  id: string;
  kind: ExportKind;
  workspaceId: string | null;
  requestId: string | null;
  status: ExportRow['status'];
  createdAt: string;
  builtAt: string | null;
  expiresAt: string | null;
  downloadedAt: string | null;
  rowCount: number | null;
  archiveBytes: number | null;
};

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export function exportView(r: ExportRow): ExportView {
  return {
    id: r.id,
    kind: r.kind,
    workspaceId: r.workspaceId,
    requestId: r.requestId,
    status: r.status,
    createdAt: r.createdAt.toISOString(),
    builtAt: iso(r.builtAt),
    expiresAt: iso(r.expiresAt),
    downloadedAt: iso(r.downloadedAt),
    rowCount: r.rowCount,
    archiveBytes: r.archiveBytes,
  };
}

const vaultContext = (row: Pick<ExportRow, 'id' | 'userId'>): VaultContext => ({
  owner: { type: 'user', id: row.userId },
  record: `privacy_exports:${row.id}`,
  field: 'archive',
});

const sha256 = (token: string) => createHash('sha256').update(token, 'utf8').digest('hex');

function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}

/**
 * Export of personal data (access and portability). A request queues a job; the job reads
 * every table the data map lets exports read, keeps the requester's rows (a user's own: rows
 * naming their user id or email; a workspace's for its owner: rows of the workspace), leaves
 * out secrets and other people's personal data, and stores the archive encrypted under the
 * requester's data key. The link mailed to the requester works once, for 7 days; then the
 * export is deleted.
 *
 * @example const view = await exports.requestUserExport({ userId, meta });
 */
export function exportService(deps: ExportServiceDeps) {
  const { db, repo, clock } = deps;

  function queueBuild(tx: Database, exportId: string) {
    afterCommit(tx, async () => {
      try {
        await deps.jobs.send<ExportBuildJob>(EXPORT_BUILD_JOB, { exportId }, { singletonKey: exportId });
      } catch (err) {
        deps.logger.warn({ exportId, err: { name: (err as Error).name } }, 'export build not queued; the sweep will');
      }
    });
  }

  async function create(
    tx: Database,
    input: { kind: ExportKind; userId: string; workspaceId: string | null },
  ): Promise<ExportRow> {
    const pendingMessage =
      input.kind === 'user'
        ? 'An export of your data is already being prepared; you will get an email when it is ready.'
        : 'An export of this workspace is already being prepared; you will get an email when it is ready.';
    if (await repo.findPending(tx, input.userId, input.kind, input.workspaceId)) {
      throw new AppError('export_pending', pendingMessage);
    }
    const now = clock.now();
    const request = deps.requests ? await deps.requests.open(tx, input) : null;
    const row = await repo.insertUnlessPending(tx, {
      id: newId('pex', now),
      kind: input.kind,
      userId: input.userId,
      workspaceId: input.workspaceId,
      requestId: request?.id ?? null,
      status: 'pending',
      tokenHash: null,
      archiveCiphertext: null,
      archiveBytes: null,
      rowCount: null,
      createdAt: now,
      builtAt: null,
      expiresAt: null,
      linkSentAt: null,
      downloadedAt: null,
    });
    // A concurrent request won the race between the check and the insert.
    if (!row) throw new AppError('export_pending', pendingMessage);
    queueBuild(tx, row.id);
    return row;
  }

  /** The requester's other identifiers: what the map's `alias` columns hold in rows naming them. */
  async function aliasesOf(tx: Database, userId: string, plans: TablePlan[]): Promise<string[]> {
    const found = new Set<string>();
    for (const plan of plans) {
      if (plan.aliasColumns.length === 0 || plan.userColumns.length === 0) continue;
      const rows = await repo.selectRows(
        tx,
        plan.entry.table,
        plan.aliasColumns,
        plan.userColumns.map((column) => ({ column, value: userId })),
      );
      for (const r of rows) for (const c of plan.aliasColumns) if (typeof r[c] === 'string') found.add(r[c]);
    }
    found.delete(userId);
    return [...found];
  }

  /** How many parent ids one query of a user's export looks rows up by. */
  const PARENT_BATCH = 1000;

  /**
   * The rows of one table the export reads: those `match` finds and, in a user's export, those
   * belonging (`exportWith`) to rows already found in their parent table.
   */
  async function rowsOf(
    tx: Database,
    plan: TablePlan,
    match: ReturnType<typeof matchesOf>,
    parentIds: readonly string[],
  ): Promise<Array<Record<string, unknown>>> {
    const names = plan.columns.map((c) => c.name);
    const rows = await repo.selectRows(tx, plan.entry.table, names, match);
    const link = plan.entry.exportWith;
    if (!link || parentIds.length === 0) return rows;
    const seen = new Set(rows.map((r) => JSON.stringify(r)));
    for (let i = 0; i < parentIds.length; i += PARENT_BATCH) {
      const batch = parentIds.slice(i, i + PARENT_BATCH);
      for (const r of await repo.selectRowsIn(tx, plan.entry.table, names, link.column, batch)) {
        const key = JSON.stringify(r);
        if (seen.has(key)) continue;
        seen.add(key);
        rows.push(r);
      }
    }
    return rows;
  }

  /** Reads the requester's rows from every exported table of the map. */
  async function collect(
    tx: Database,
    user: { id: string; email: string; emailVerified: boolean },
    scope: ExportScope,
  ) {
    const plans = planExport(deps.dataMap(), scope.kind);
    const requester: ExportRequester = {
      userId: user.id,
      email: user.email,
      emailVerified: user.emailVerified,
      aliases: await aliasesOf(tx, user.id, plans),
    };
    const filter = exportFilter(requester);
    const tables: Array<ReturnType<typeof manifestEntry>> = [];
    const data: Record<string, Array<Record<string, unknown>>> = {};
    const files: Record<string, ArchiveFile> = {};
    const searched: string[] = [];
    let rowCount = 0;
    // The rows found per table: where a user's export finds the rows belonging to them.
    const found = new Map<string, Array<Record<string, unknown>>>();
    const parentIdsOf = (plan: TablePlan): string[] => {
      const link = plan.entry.exportWith;
      if (!link || scope.kind !== 'user') return [];
      const ids = (found.get(link.table) ?? []).map((r) => r[link.references]);
      return [...new Set(ids.filter((v): v is string => typeof v === 'string'))];
    };
    // Tables whose rows belong to another table's rows come after the others.
    const ordered = [...plans.filter((p) => !p.entry.exportWith), ...plans.filter((p) => p.entry.exportWith)];
    for (const plan of ordered) {
      const match = matchesOf(plan, requester, scope);
      const parentIds = parentIdsOf(plan);
      if (match.length === 0 && parentIds.length === 0) continue;
      searched.push(plan.entry.table);
      const stored = await rowsOf(tx, plan, match, parentIds);
      if (stored.length === 0) continue;
      found.set(plan.entry.table, stored);
      const unseal = (context: VaultContext, ciphertext: Buffer) => deps.vault.decrypt(context, ciphertext, tx);
      const values = await decryptRows(plan, stored, unseal);
      const inFiles = await exportFiles(plan, stored, unseal, filter.text, files);
      const withheld = { unreadable: values.unreadable + inFiles.unreadable };
      if (withheld.unreadable > 0) {
        deps.logger.warn(
          { table: plan.entry.table, values: withheld.unreadable },
          'privacy: encrypted content the vault refused to decrypt was withheld from an export',
        );
      }
      data[plan.entry.table] = stored.map((r) => filter.row(plan, r));
      tables.push(manifestEntry(plan, stored.length));
      rowCount += stored.length;
    }
    return { tables, data, files, searched, rowCount };
  }

  /** Builds the archive and stores it (encrypted); completes the privacy request. */
  async function buildArchive(exportId: string): Promise<void> {
    await db.system(async (tx) => {
      const row = await repo.lock(tx, exportId);
      if (row?.status !== 'building') return;
      const user = await deps.identity.findUserById(row.userId, { tx });
      if (!user) throw new Error('the account of this export no longer exists');
      const scope: ExportScope =
        row.kind === 'workspace' && row.workspaceId
          ? { kind: 'workspace', workspaceId: row.workspaceId }
          : { kind: 'user' };
      const now = clock.now();
      const { tables, data, files, searched, rowCount } = await collect(tx, user, scope);
      const archive = {
        format: ARCHIVE_FORMAT,
        manifest: {
          export: {
            id: row.id,
            kind: row.kind,
            requestedAt: row.createdAt.toISOString(),
            generatedAt: now.toISOString(),
            subject: { userId: user.id, email: user.email },
            ...(row.workspaceId ? { workspaceId: row.workspaceId } : {}),
          },
          about: ARCHIVE_ABOUT,
          rowCount,
          fileCount: Object.keys(files).length,
          tables,
          searchedTables: searched,
        },
        data,
        files,
      };
      const json = Buffer.from(JSON.stringify(archive), 'utf8');
      const ciphertext = await deps.vault.encrypt(vaultContext(row), gzipSync(json), tx);
      const expiresAt = new Date(now.getTime() + EXPORT_TTL_MS);
      await repo.update(tx, row.id, {
        status: 'ready',
        archiveCiphertext: ciphertext,
        archiveBytes: json.length,
        rowCount,
        // Replaced by the link's token when it is mailed; until then no token opens it.
        tokenHash: sha256(randomBytes(32).toString('base64url')),
        builtAt: now,
        expiresAt,
      });
      if (row.requestId && deps.requests) {
        await deps.requests.complete(
          tx,
          row.requestId,
          `Export of ${rowCount} records prepared; a single-use download link was emailed (valid until ${expiresAt.toISOString()}).`,
        );
      }
    });
  }

  /**
   * Mails the download link: a new token each time (only its hash is kept), so a retry after
   * a failed delivery sends a working link. The mail goes after the token is committed.
   */
  async function sendLink(exportId: string): Promise<void> {
    const token = randomBytes(32).toString('base64url');
    const row = await db.system(async (tx) => {
      const r = await repo.lock(tx, exportId);
      if (r?.status !== 'ready' || r.linkSentAt) return null;
      await repo.update(tx, r.id, { tokenHash: sha256(token) });
      return r;
    });
    if (!row?.expiresAt) return;
    const user = await deps.identity.findUserById(row.userId);
    if (!user) return;
    await deps.mailer.retract?.(row.id);
    const link = `${deps.publicUrl}/api/privacy/exports/${row.id}/download?token=${token}`;
    await deps.mailer.send({
      to: user.email,
      userId: user.id,
      subject: row.kind === 'user' ? 'Your Berth data export is ready' : 'Your Berth workspace export is ready',
      text: [
        row.kind === 'user'
          ? 'The export of the personal data Berth holds about you is ready.'
          : `The export of workspace ${row.workspaceId} is ready.`,
        '',
        `Download it here (the link works once, until ${row.expiresAt.toISOString()}; then the export is deleted):`,
        link,
        '',
        'The archive is a JSON document (files in it, such as uploaded documents, are in base64). Its manifest says,',
        'for each kind of record, why Berth keeps it, on what lawful basis, for how long and who else receives it.',
        'If you did not ask for this export, change your password.',
      ].join('\n'),
      tag: 'privacy.export_ready',
      expiresAt: row.expiresAt,
      ref: row.id,
    });
    await db.system((tx) => repo.update(tx, row.id, { linkSentAt: clock.now() }));
  }

  /**
   * The job. Idempotent: each step runs only from the state before it, so a retry (after a
   * crash or a failed delivery) finishes what is left. A build still unfinished after
   * STALE_AFTER_MS is marked failed by the hourly sweep.
   */
  async function build(exportId: string): Promise<void> {
    await db.system(async (tx) => {
      const row = await repo.lock(tx, exportId);
      if (row?.status === 'pending') await repo.update(tx, row.id, { status: 'building' });
    });
    await buildArchive(exportId);
    await sendLink(exportId);
  }

  return {
    /** The signed-in user asks for an export of their own data. Duplicate while one is pending: `export_pending`. */
    async requestUserExport(input: { userId: string; meta: RequestMeta }): Promise<ExportView> {
      return db.system(async (tx) => {
        const row = await create(tx, { kind: 'user', userId: input.userId, workspaceId: null });
        await deps.identity.recordSecurityEvent(
          { type: 'privacy.export_requested', userId: input.userId, meta: input.meta, details: { exportId: row.id } },
          tx,
        );
        return exportView(row);
      });
    },

    /** A workspace's owner asks for an export of the workspace's data (the route checks `privacy:manage`). */
    async requestWorkspaceExport(input: { scope: Scope }): Promise<ExportView> {
      const { scope } = input;
      const userId = actorUser(scope.actor);
      return db.system(async (tx) => {
        const row = await create(tx, { kind: 'workspace', userId, workspaceId: scope.workspaceId });
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'privacy.export_requested',
          target: { type: 'privacy_export', id: row.id },
        });
        return exportView(row);
      });
    },

    /** The user's exports, newest first (their own and the workspace exports they asked for). */
    async list(userId: string, limit = 20): Promise<ExportView[]> {
      return db.system(async (tx) => (await repo.listForUser(tx, userId, limit)).map(exportView));
    },

    /** One of the user's exports; someone else's answers 404 like an unknown one. */
    async get(userId: string, id: string): Promise<ExportView> {
      const row = await db.system((tx) => repo.find(tx, id));
      if (!row || row.userId !== userId) throw new AppError('not_found', 'No such export.');
      return exportView(row);
    },

    /** The job: builds, stores and announces one export. Idempotent (a finished export is left alone). */
    build,

    /**
     * Hands the archive over once: the token must match; a used link answers
     * `export_link_used`, an expired one `export_link_expired`, anything else
     * `export_link_invalid`. The archive is deleted from the database as it is handed over.
     */
    async download(input: {
      id: string;
      token: string;
      meta: RequestMeta;
    }): Promise<{ json: Buffer; filename: string }> {
      const invalid = () => new AppError('export_link_invalid', 'This download link is not valid.');
      const out = await db.system(async (tx) => {
        const row = await repo.lock(tx, input.id);
        if (!row?.tokenHash || !sameHash(row.tokenHash, sha256(input.token))) throw invalid();
        if (row.status === 'downloaded') {
          throw new AppError('export_link_used', 'This download link was already used: request a new export.');
        }
        if (row.status !== 'ready' || !row.archiveCiphertext) throw invalid();
        const now = clock.now();
        if (!row.expiresAt || row.expiresAt.getTime() <= now.getTime()) {
          throw new AppError('export_link_expired', 'This download link has expired: request a new export.');
        }
        const gz = await deps.vault.decrypt(vaultContext(row), row.archiveCiphertext, tx).catch(() => {
          throw new AppError('export_unavailable', 'This export can no longer be read: request a new export.');
        });
        await repo.update(tx, row.id, { status: 'downloaded', downloadedAt: now, archiveCiphertext: null });
        await deps.identity.recordSecurityEvent(
          { type: 'privacy.export_downloaded', userId: row.userId, meta: input.meta, details: { exportId: row.id } },
          tx,
        );
        return { json: gunzipSync(gz), filename: `berth-export-${row.id}.json`, id: row.id };
      });
      // The mailed copy of the link (outbox) is of no use any more.
      await deps.mailer.retract?.(out.id);
      return { json: out.json, filename: out.filename };
    },

    /**
     * The hourly job: deletes exports whose 7 days are over (archive included) and queues
     * again the builds whose first queueing failed. Returns how many exports were deleted.
     */
    async expire(): Promise<number> {
      const now = clock.now();
      const { gone, unfinished } = await db.system(async (tx) => {
        const failed = await repo.failStale(
          tx,
          new Date(now.getTime() - STALE_AFTER_MS),
          new Date(now.getTime() + EXPORT_TTL_MS),
        );
        for (const f of failed) {
          deps.logger.warn({ exportId: f.id }, 'privacy: export could not be built');
          if (f.requestId && deps.requests) {
            await deps.requests.reject(tx, f.requestId, 'The export could not be built; please request it again.');
          }
        }
        return {
          gone: await repo.deleteExpired(tx, now),
          unfinished: await repo.unfinishedBefore(tx, new Date(now.getTime() - REQUEUE_AFTER_MS)),
        };
      });
      for (const g of gone) await deps.mailer.retract?.(g.id);
      for (const id of unfinished) {
        await deps.jobs.send<ExportBuildJob>(EXPORT_BUILD_JOB, { exportId: id }, { singletonKey: id });
      }
      if (gone.length > 0) deps.logger.info({ deleted: gone.length }, 'privacy: expired exports deleted');
      return gone.length;
    },
  };
}

/** Privacy rights are exercised by a signed-in person: an API key (or the system) cannot ask for an export. */
function actorUser(actor: Actor): string {
  if (actor.type !== 'user') {
    throw new AppError('forbidden', 'Sign in to ask for a workspace export: an API key cannot.');
  }
  return actor.userId;
}

export type ExportService = ReturnType<typeof exportService>;
