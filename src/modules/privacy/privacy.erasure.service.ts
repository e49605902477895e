import { type Clock, DAY } from '../../platform/clock.ts';
import { randomToken, sha256Hex } from '../../platform/crypto.ts';
import type { TableEntry } from '../../platform/db/datamap.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { RequestMeta, SessionAuth } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import type { AuditService } from '../audit/index.ts';
import type { IdentityService } from '../identity/index.ts';
import type { KeysService } from '../keys/index.ts';
import type { Mailer } from '../notifications/index.ts';
import type { VaultService } from '../vault/index.ts';
import type { WorkspaceEvent, WorkspacesService } from '../workspaces/index.ts';
import { anonymisedInPlace, erasePlan, quoteColumn, quoteTable, unsafeClears } from './privacy.erasure.plan.ts';
import type { ErasureRepo } from './privacy.erasure.repo.ts';
import type { AccountDeletionRow } from './privacy.erasure.tables.ts';
import type { RequestsService } from './privacy.requests.ts';

/** The job that erases accounts whose grace period is over (hourly; also `jobs.send` it to run now). */
export const ERASURE_JOB = 'privacy.erasure';
/** Days between a deletion request and the erasure; the user can cancel until then. */
export const DELETION_GRACE_DAYS = 30;
/** Accounts erased per job run (each in its own transaction); the next run takes the rest. */
const ERASE_BATCH = 20;

export type DeletionView = {
  id: string;
  status: AccountDeletionRow['status'];
  requestedAt: string;
  eraseAfter: string;
  requestId: string | null;
};

/** What one account's erasure did, per table: rows deleted or changed (counts only, never values). */
export type ErasureReport = { deletionId: string; tables: Record<string, { deleted: number; anonymised: number }> };

type Deps = {
  db: Pick<Db, 'system'>;
  repo: ErasureRepo;
  clock: Clock;
  logger: Pick<Logger, 'info' | 'warn'>;
  mailer: Mailer;
  publicUrl: string;
  identity: Pick<
    IdentityService,
    'reauthenticate' | 'closeAccount' | 'reopenAccount' | 'findUserById' | 'listOperators'
  >;
  workspaces: Pick<WorkspacesService, 'listSoleOwnedWorkspaces' | 'listMyWorkspaces' | 'contacts' | 'deleteWorkspace'>;
  keys: Pick<KeysService, 'revokeUserKeys'>;
  vault: Pick<VaultService, 'destroyOwnerKey' | 'pseudonym'>;
  audit: Pick<AuditService, 'record' | 'sealLegacyEvents'>;
  requests: Pick<RequestsService, 'open' | 'complete' | 'cancel' | 'find'>;
  /** The whole data map, read at each erasure: tables added later are erased by their own entries. */
  dataMap: () => readonly TableEntry[];
  /** Run in the erasure's transaction before anything is erased (the vault revokes OAuth tokens). */
  beforeErase?: ReadonlyArray<(tx: Database, userId: string) => Promise<void>>;
};

const toView = (r: AccountDeletionRow): DeletionView => ({
  id: r.id,
  status: r.status,
  requestedAt: r.requestedAt.toISOString(),
  eraseAfter: r.eraseAfter.toISOString(),
  requestId: r.requestId,
});

/**
 * An erasure refused because audit chains still hold the user's raw id (old-shape events
 * that could not be re-sealed): erasing now would leave the id there for good. The deletion
 * stays scheduled and is retried; the operators are told which chains to look at.
 */
class AuditResealPending extends Error {
  override readonly name = 'audit_reseal_pending';
  constructor(readonly chains: string[]) {
    super('audit chains holding the user could not be re-sealed');
  }
}

const TOKEN_RE = /^[A-Za-z0-9_-]{43}$/;
const invalidLink = () => new AppError('invalid_token', 'This cancel link is not valid.');

/**
 * Account deletion and erasure (GDPR Art. 17), driven by the data map:
 *
 * - `requestDeletion`: after re-authentication, the account is closed at once (no sign-in,
 *   sessions ended, API keys revoked, second factor removed) and its erasure is scheduled
 *   30 days later; a cancel link is emailed, because a closed account cannot sign in to
 *   cancel.
 * - `cancelDeletion`: the emailed token reopens the account within the grace period.
 * - `runDue` (ERASURE_JOB): erases each account whose grace period is over, in one
 *   transaction per account: its data key destroyed (crypto-shredding), every column naming
 *   the user deleted or replaced by the user's pseudonym per the map's erase rules, billing
 *   records kept under legal hold but detached, audit events untouched (they name users by
 *   pseudonym; the pseudonym's resolution is deleted). Events written before pseudonyms
 *   (an upgraded installation) that name the user are re-sealed first, and the erasure is
 *   refused (retried, operators alerted) while any audit row would keep the raw user id.
 *   Rows naming the person by email address are matched ignoring case, and only for a
 *   verified address (as the export matches them).
 * - `eraseWorkspaceRows`: a workspace's deletion removes the rows of every table the map
 *   says names the workspace (except legal hold), inside the deleting transaction.
 */
export function erasureService(deps: Deps) {
  const { db, repo, clock } = deps;

  async function assertNoSoleOwnership(userId: string): Promise<void> {
    const blocking: string[] = [];
    for (const workspaceId of await deps.workspaces.listSoleOwnedWorkspaces(userId)) {
      const members = await deps.workspaces.contacts(workspaceId, ['owner', 'admin', 'member', 'viewer']);
      if (members.some((m) => m.userId !== userId)) blocking.push(workspaceId);
    }
    if (blocking.length > 0) {
      throw new AppError(
        'sole_owner',
        'You are the only owner of a workspace with other members: transfer its ownership or delete it first.',
        { details: blocking.map((id) => ({ path: '/workspaces', message: id })) },
      );
    }
  }

  /** Deletes the workspaces the user owns alone (nobody else is in them), each in its own transaction. */
  async function deleteOwnWorkspaces(userId: string): Promise<number> {
    const alone = new Set(await deps.workspaces.listSoleOwnedWorkspaces(userId));
    let deleted = 0;
    for (const w of await deps.workspaces.listMyWorkspaces(userId)) {
      if (!alone.has(w.id)) continue;
      const others = (await deps.workspaces.contacts(w.id, ['owner', 'admin', 'member', 'viewer'])).filter(
        (m) => m.userId !== userId,
      );
      if (others.length > 0) {
        // Someone joined after the deletion was requested (an invitation sent before it):
        // the workspace stays for them; the erased owner's membership goes with the account.
        deps.logger.warn({ workspaceId: w.id }, 'privacy: an erased owner leaves a workspace with other members');
        continue;
      }
      await deps.workspaces.deleteWorkspace({
        scope: { workspaceId: w.id, actor: { type: 'user', userId }, role: 'owner' },
        confirmName: w.name,
      });
      deleted++;
    }
    return deleted;
  }

  /** The generic part of an erasure: every table naming the user, by the map's rules, in `tx`. */
  async function eraseRows(tx: Database, userId: string, email: string | null): Promise<ErasureReport['tables']> {
    const plan = erasePlan(deps.dataMap());
    const facts = await repo.columnFacts(tx);
    const unsafe = unsafeClears(plan, facts);
    if (unsafe.length > 0) {
      // A map entry would null a column the schema needs: refuse before changing anything.
      throw new Error(
        `erasure would set constrained columns to null: ${unsafe.map((u) => `${u.table}.${u.column}`).join(', ')}`,
      );
    }
    const pseudonym = deps.vault.pseudonym(userId);
    const tables: ErasureReport['tables'] = {};
    for (const t of plan.user) {
      const count = { deleted: 0, anonymised: 0 };
      tables[t.table] = count;
      const table = quoteTable(t.table);
      for (const ref of t.refs) {
        const value = ref.kind === 'user' ? userId : email;
        if (value === null) continue;
        const column = quoteColumn(ref.column);
        const fact = facts.get(`${t.table}.${ref.column}`);
        const match = ref.kind === 'email' ? 'address' : 'exact';
        if (!anonymisedInPlace(t.table, ref, facts)) {
          count.deleted += await repo.deleteWhere(tx, table, column, value, match);
          continue;
        }
        // A foreign key to users cannot hold a pseudonym: it becomes null (its row stays).
        const to = fact?.userForeignKey ? null : pseudonym;
        count.anonymised += await repo.replaceWhere(tx, table, column, value, to, t.clear.map(quoteColumn), match);
      }
    }
    return Object.fromEntries(Object.entries(tables).filter(([, c]) => c.deleted + c.anonymised > 0));
  }

  /** Counts a failed erasure and, the first time, tells the operators (ids only: no personal data). */
  async function recordFailure(row: AccountDeletionRow, err: unknown): Promise<void> {
    deps.logger.warn(
      { deletionId: row.id, attempt: row.attempts + 1, err: (err as Error)?.name ?? 'error' },
      'privacy: erasure failed; it is retried',
    );
    try {
      const now = clock.now();
      const alert = await db.system(async (tx) => {
        await repo.recordFailure(tx, row.id, now);
        return repo.claimFailureAlert(tx, row.id, now);
      });
      if (alert) await failureMail(row, err);
    } catch {
      deps.logger.warn({ deletionId: row.id }, 'privacy: a failed erasure could not be recorded');
    }
  }

  async function failureMail(row: AccountDeletionRow, err: unknown): Promise<void> {
    const operators = (await deps.identity.listOperators()).filter((o) => o.status === 'active');
    const subject = 'Berth: an account erasure is failing';
    // Ids only: the error and the account stay in Berth (the server log has the error's kind).
    const cause =
      err instanceof AuditResealPending
        ? [
            `Cause: audit events written before pseudonyms still name the user in chain(s) ${err.chains.join(', ')} and could not be re-sealed, so erasing now would leave the raw user id in the audit log.`,
            'Run `berth audit verify`, and see the server log for the re-seal failures of those chains.',
          ]
        : ['The server log names the error (search for the deletion id).'];
    const text = [
      `The erasure of account deletion ${row.id} (due since ${row.eraseAfter.toISOString()}) failed; the account stays closed.`,
      'The privacy.erasure job retries it with a backoff (up to once a day) and erases the other accounts meanwhile.',
      ...cause,
      'The law asks for erasure without undue delay.',
    ].join('\n');
    for (const o of operators) {
      try {
        await deps.mailer.send({ to: o.email, userId: o.id, subject, text, tag: 'privacy.erasure_failed' });
      } catch {
        deps.logger.warn('privacy: an erasure failure alert could not be mailed to an operator');
      }
    }
  }

  async function eraseAccount(row: AccountDeletionRow): Promise<ErasureReport> {
    const userId = row.userId;
    // Old-shape audit events naming this user by id are re-sealed with pseudonyms first
    // (only the chains holding the id; nothing to do once the startup job ran). While any
    // of them still names the user the erasure is refused, counted and retried: erasing
    // would leave the raw id in the append-only log for good.
    const sealed = await deps.audit.sealLegacyEvents({ userId });
    if (sealed.failed.length > 0) throw new AuditResealPending(sealed.failed);
    await deleteOwnWorkspaces(userId);
    const now = clock.now();
    const tables = await db.system(async (tx) => {
      const current = await repo.lock(tx, row.id);
      if (current?.status !== 'scheduled') return null;
      const user = await deps.identity.findUserById(userId, { tx });
      // Rows are found by address only for a verified address, as the export finds them:
      // an unconfirmed address may be someone else's.
      const address = user?.emailVerified ? user.email : null;
      // Recorded first: the target (the user) is stored as the pseudonym this erasure leaves.
      await deps.audit.record(tx, {
        workspaceId: null,
        actor: { type: 'system', name: 'privacy-erasure' },
        action: 'account.erased',
        target: { type: 'user', id: userId },
        diff: { deletionId: row.id, requestedAt: row.requestedAt.toISOString() },
      });
      for (const hook of deps.beforeErase ?? []) await hook(tx, userId);
      await deps.vault.destroyOwnerKey({ type: 'user', id: userId }, tx);
      const erased = await eraseRows(tx, userId, address);
      await repo.markErased(tx, row.id, now);
      if (row.requestId) {
        const request = await deps.requests.find(tx, row.requestId);
        if (request && (request.status === 'received' || request.status === 'in_progress')) {
          await deps.requests.complete(tx, row.requestId, 'The account and its personal data were erased.');
        }
      }
      return erased;
    });
    const report = { deletionId: row.id, tables: tables ?? {} };
    if (tables) deps.logger.info({ deletionId: row.id, tables: report.tables }, 'privacy: account erased');
    return report;
  }

  return {
    /**
     * Deletes the signed-in user's account: re-authentication (password, and a TOTP code
     * with 2FA on), then the account is closed at once and erased after the grace period.
     * 409 `sole_owner` while they own a workspace with other members alone; 409
     * `deletion_pending` when a deletion is already scheduled.
     */
    async requestDeletion(
      auth: SessionAuth,
      proof: { password?: string | undefined; code?: string | undefined },
      meta: RequestMeta,
    ): Promise<DeletionView> {
      await deps.identity.reauthenticate(auth, proof, meta, 'delete_account');
      await assertNoSoleOwnership(auth.userId);
      const user = await deps.identity.findUserById(auth.userId);
      if (!user) throw new AppError('unauthenticated', 'Sign in first.');
      const token = randomToken(32);
      const row = await deps.identity.closeAccount(auth.userId, meta, async (tx) => {
        const now = clock.now();
        if (await repo.scheduledFor(tx, auth.userId)) {
          throw new AppError('deletion_pending', 'The deletion of this account is already scheduled.');
        }
        const request = await deps.requests.open(tx, { type: 'erasure', userId: auth.userId, status: 'in_progress' });
        const inserted = await repo.insertUnlessScheduled(tx, {
          id: newId('pdl', now),
          userId: auth.userId,
          requestId: request.id,
          status: 'scheduled',
          requestedAt: now,
          eraseAfter: new Date(now.getTime() + DELETION_GRACE_DAYS * DAY),
          cancelTokenHash: sha256Hex(token),
          cancelledAt: null,
          erasedAt: null,
          attempts: 0,
          lastErrorAt: null,
          failureAlertedAt: null,
        });
        if (!inserted) throw new AppError('deletion_pending', 'The deletion of this account is already scheduled.');
        await deps.keys.revokeUserKeys(tx, auth.userId);
        return inserted;
      });
      const when = row.eraseAfter.toISOString().slice(0, 10);
      try {
        await deps.mailer.send({
          to: user.email,
          userId: user.id,
          subject: 'Your Berth account will be deleted',
          text: `Your Berth account was closed at your request, and it and the personal data Berth holds about you will be erased on ${when}.\n\nChanged your mind? Open this link before then to cancel the deletion and reopen your account:\n\n${deps.publicUrl}/cancel-deletion?token=${token}\n\n(or POST {"token": "${token}"} to ${deps.publicUrl}/api/privacy/deletion/cancel)\n\nIf you did not ask for this, open the link now and change your password.\n`,
          tag: 'privacy.deletion_scheduled',
          expiresAt: row.eraseAfter,
          ref: row.id,
        });
      } catch {
        deps.logger.warn('privacy: the deletion notice could not be mailed');
      }
      return toView(row);
    },

    /**
     * Cancels a scheduled deletion with the emailed token and reopens the account (the user
     * signs in again with their password). 400 `invalid_token` for an unknown or used link,
     * `token_expired` once the grace period is over.
     */
    async cancelDeletion(token: string, meta: RequestMeta): Promise<DeletionView> {
      if (!TOKEN_RE.test(token)) throw invalidLink();
      const tokenHash = sha256Hex(token);
      const found = await db.system((tx) => repo.byTokenHash(tx, tokenHash));
      if (!found) throw invalidLink();
      const row = await deps.identity.reopenAccount(found.userId, meta, async (tx) => {
        const current = await repo.byTokenHash(tx, tokenHash);
        if (current?.status !== 'scheduled') throw invalidLink();
        const now = clock.now();
        if (current.eraseAfter <= now) {
          throw new AppError('token_expired', 'The grace period is over: the account is being erased.');
        }
        await repo.markCancelled(tx, current.id, now);
        if (current.requestId) {
          const request = await deps.requests.find(tx, current.requestId);
          if (request && (request.status === 'received' || request.status === 'in_progress')) {
            await deps.requests.cancel(tx, current.requestId, 'The user cancelled the deletion.');
          }
        }
        return { ...current, status: 'cancelled' as const, cancelledAt: now, cancelTokenHash: null };
      });
      try {
        await deps.mailer.retract?.(row.id);
      } catch {
        deps.logger.warn('privacy: the deletion notice could not be retracted');
      }
      return toView(row);
    },

    /**
     * ERASURE_JOB: erases every account whose grace period is over, each in its own
     * transaction. A failure does not stop the run: the deletion is counted (attempts, last
     * failure), retried by a later run after its backoff and after the deletions that never
     * failed, and the operators are mailed once about it. The job itself does not fail.
     */
    async runDue(): Promise<ErasureReport[]> {
      const reports: ErasureReport[] = [];
      const tried = new Set<string>();
      for (;;) {
        const due = await db.system((tx) => repo.due(tx, clock.now(), ERASE_BATCH));
        const todo = due.filter((row) => !tried.has(row.id));
        for (const row of todo) {
          tried.add(row.id);
          try {
            reports.push(await eraseAccount(row));
          } catch (err) {
            await recordFailure(row, err);
          }
        }
        // A short batch was the last; a batch of rows already tried (a failure that could
        // not even be counted) would come back forever.
        if (due.length < ERASE_BATCH || todo.length === 0) break;
      }
      return reports;
    },

    /**
     * The workspaces module's `workspace.deleting` handler: deletes the deleted workspace's
     * rows from every table the map says names it (its own and later modules' tables),
     * inside the deleting transaction, except records under legal hold.
     */
    async eraseWorkspaceRows(e: WorkspaceEvent, tx: Database): Promise<void> {
      if (e.type !== 'workspace.deleting') return;
      for (const { table, column } of erasePlan(deps.dataMap()).workspace) {
        await repo.deleteWhere(tx, quoteTable(table), quoteColumn(column), e.workspaceId);
      }
    },
  };
}

export type ErasureService = ReturnType<typeof erasureService>;
