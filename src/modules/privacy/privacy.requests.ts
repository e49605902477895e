import type { Clock } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError, notFound } from '../../platform/errors.ts';
import type { Actor } from '../../platform/http/context.ts';
import { isId, newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import type { AuditService } from '../audit/index.ts';
import type { IdentityService } from '../identity/index.ts';
import type { Mailer } from '../notifications/index.ts';
import type { RequestsRepo } from './privacy.requests.repo.ts';
import {
  OPEN_STATUSES,
  type PrivacyRequestRow,
  type RequestStatus,
  type RequestType,
} from './privacy.requests.tables.ts';

/**
 * The deadline of a request received at `at`: one calendar month later (GDPR Art. 12(3)),
 * on the same day of the month, or the month's last day when it has no such day
 * (31 January -> 28 or 29 February), at the same time of day, in UTC.
 */
export function dueDateOf(at: Date): Date {
  const y = at.getUTCFullYear();
  const m = at.getUTCMonth() + 1;
  const lastDay = new Date(Date.UTC(y, m + 1, 0)).getUTCDate();
  const day = Math.min(at.getUTCDate(), lastDay);
  return new Date(
    Date.UTC(y, m, day, at.getUTCHours(), at.getUTCMinutes(), at.getUTCSeconds(), at.getUTCMilliseconds()),
  );
}

/** Request types an operator answers by hand; Berth answers the others itself. */
export const MANUAL_TYPES: readonly RequestType[] = ['rectification'];

export type RequestView = {
  id: string;
  type: RequestType;
  userId: string;
  workspaceId: string | null;
  status: RequestStatus;
  details: string | null;
  outcome: string | null;
  receivedAt: string;
  dueAt: string;
  completedAt: string | null;
  /** Open and past its deadline now. */
  overdue: boolean;
  overdueAlertedAt: string | null;
};

export type OpenInput = {
  type: RequestType;
  /** The data subject. */
  userId: string;
  /** The workspace the request is about, when it is about one. */
  workspaceId?: string | null;
  /** What the subject asked for (rectification); never secrets. */
  details?: string | null;
  /** `in_progress` when Berth starts on it at once (a job is queued). Default `received`. */
  status?: 'received' | 'in_progress';
};

type Deps = {
  db: Pick<Db, 'system' | 'orm'>;
  repo: RequestsRepo;
  audit: Pick<AuditService, 'record'>;
  identity: Pick<IdentityService, 'listOperators'>;
  mailer: Mailer;
  clock: Clock;
  logger: Pick<Logger, 'info' | 'warn'>;
  /** The operators' console, named in the overdue alert. */
  publicUrl: string;
};

const OVERDUE_ACTOR: Actor = { type: 'system', name: 'privacy-requests' };
const iso = (d: Date | null) => (d ? d.toISOString() : null);

/**
 * Privacy requests: every request a data subject makes, with its one-month deadline.
 *
 * Other parts of the privacy module record theirs in their own transaction, so the request
 * and the change it asks for commit together:
 *
 * @example
 * const req = await requests.open(tx, { type: 'portability', userId, status: 'in_progress' });
 * // ... later, when the job is done:
 * await requests.complete(tx, req.id, 'Archive built and mailed.');
 *
 * A second open request of the same type for the same subject (and workspace) is refused
 * with 409 `request_pending`; answered requests (completed, rejected, cancelled) cannot
 * change any more (409 `request_closed`).
 */
export function requestsService(deps: Deps) {
  const { db, repo, clock } = deps;

  function toView(r: PrivacyRequestRow, now = clock.now()): RequestView {
    const isOpen = OPEN_STATUSES.includes(r.status);
    return {
      id: r.id,
      type: r.type,
      userId: r.userId,
      workspaceId: r.workspaceId,
      status: r.status,
      details: r.details,
      outcome: r.outcome,
      receivedAt: r.receivedAt.toISOString(),
      dueAt: r.dueAt.toISOString(),
      completedAt: iso(r.completedAt),
      overdue: isOpen && r.dueAt.getTime() <= now.getTime(),
      overdueAlertedAt: iso(r.overdueAlertedAt),
    };
  }

  async function mustOpen(tx: Database, id: string): Promise<PrivacyRequestRow> {
    const row = isId(id, 'prq') ? await repo.lock(tx, id) : null;
    if (!row) throw notFound('privacy request');
    if (!OPEN_STATUSES.includes(row.status)) {
      throw new AppError('request_closed', `This privacy request is already ${row.status}.`);
    }
    return row;
  }

  async function close(
    tx: Database,
    id: string,
    status: 'completed' | 'rejected' | 'cancelled',
    outcome: string | null,
  ): Promise<RequestView> {
    await mustOpen(tx, id);
    const now = clock.now();
    const row = await repo.update(tx, id, { status, outcome, completedAt: now, updatedAt: now });
    if (!row) throw notFound('privacy request');
    return toView(row, now);
  }

  /**
   * Records a request received now, in the caller's transaction. Throws 409
   * `request_pending` when the subject already has an open one of this type (for this workspace).
   */
  async function open(tx: Database, input: OpenInput): Promise<RequestView> {
    const now = clock.now();
    const workspaceId = input.workspaceId ?? null;
    const row = await repo.insertUnlessOpen(tx, {
      id: newId('prq', now),
      type: input.type,
      userId: input.userId,
      workspaceId,
      status: input.status ?? 'received',
      details: input.details ?? null,
      outcome: null,
      receivedAt: now,
      dueAt: dueDateOf(now),
      completedAt: null,
      overdueAlertedAt: null,
      updatedAt: now,
    });
    if (!row) {
      throw new AppError(
        'request_pending',
        `You already have an open ${input.type} request; it is answered by its due date.`,
      );
    }
    return toView(row, now);
  }

  /** Marks an open request as being worked on. */
  async function start(tx: Database, id: string): Promise<RequestView> {
    const row = await mustOpen(tx, id);
    if (row.status === 'in_progress') return toView(row);
    const updated = await repo.update(tx, id, { status: 'in_progress', updatedAt: clock.now() });
    return toView(updated ?? row);
  }

  async function overdueMail(r: PrivacyRequestRow): Promise<void> {
    const operators = (await deps.identity.listOperators()).filter((o) => o.status === 'active');
    const subject = `Berth: a privacy request is overdue (${r.type}, due ${r.dueAt.toISOString().slice(0, 10)})`;
    // Ids only: the operator looks the request up; the subject's details stay in Berth.
    const text = [
      `Privacy request ${r.id} (${r.type}) was received on ${r.receivedAt.toISOString().slice(0, 10)} and was due by ${r.dueAt.toISOString()}.`,
      'The law gives one month to answer (two more only with a reason given to the person within the first).',
      '',
      `See it with \`berth privacy requests --overdue\` or GET ${deps.publicUrl}/api/operator/privacy/requests?overdue=true`,
    ].join('\n');
    for (const o of operators) {
      try {
        await deps.mailer.send({ to: o.email, userId: o.id, subject, text, tag: 'privacy.request_overdue' });
      } catch {
        deps.logger.warn('privacy: an overdue alert could not be mailed to an operator');
      }
    }
  }

  return {
    toView,

    /** Records a request Berth answered at once (a restriction, an objection): received and completed now. */
    async record(tx: Database, input: Omit<OpenInput, 'status'> & { outcome: string }): Promise<RequestView> {
      const opened = await open(tx, input);
      return close(tx, opened.id, 'completed', input.outcome);
    },

    open,
    start,

    /** Answers an open request (409 `request_closed` when it was answered already). */
    complete: (tx: Database, id: string, outcome: string | null = null) => close(tx, id, 'completed', outcome),
    /** Refuses an open request, saying why. */
    reject: (tx: Database, id: string, outcome: string) => close(tx, id, 'rejected', outcome),
    /** The subject withdrew the request (e.g. cancelled an account deletion). */
    cancel: (tx: Database, id: string, outcome: string | null = null) => close(tx, id, 'cancelled', outcome),

    async find(tx: Database, id: string): Promise<RequestView | null> {
      const row = isId(id, 'prq') ? await repo.find(tx, id) : null;
      return row ? toView(row) : null;
    },

    /** The subject's open request of a type (for a workspace), if any. */
    async findOpen(
      tx: Database,
      q: { userId: string; type: RequestType; workspaceId?: string | null },
    ): Promise<RequestView | null> {
      const row = await repo.findOpen(tx, q.userId, q.type, q.workspaceId ?? null);
      return row ? toView(row) : null;
    },

    /** A user's own requests, newest first. */
    async listMine(
      userId: string,
      q: { cursor?: string | undefined; limit?: number | undefined } = {},
    ): Promise<{ data: RequestView[]; nextCursor: string | null }> {
      const limit = q.limit ?? 100;
      // Requests span workspaces (a workspace's export is the owner's): system work, filtered by user.
      const rows = await db.system((tx) => repo.list(tx, { userId, before: q.cursor, limit }));
      return { data: rows.map((r) => toView(r)), nextCursor: rows.length === limit ? (rows.at(-1)?.id ?? null) : null };
    },

    /** Operators: every request, newest first, by status, type, subject, or overdue now. */
    async list(q: {
      status?: RequestStatus | undefined;
      type?: RequestType | undefined;
      userId?: string | undefined;
      overdue?: boolean | undefined;
      cursor?: string | undefined;
      limit?: number | undefined;
    }): Promise<{ data: RequestView[]; nextCursor: string | null }> {
      const limit = q.limit ?? 100;
      const now = clock.now();
      const rows = await db.system((tx) =>
        repo.list(tx, {
          status: q.status,
          type: q.type,
          userId: q.userId,
          overdueAt: q.overdue ? now : undefined,
          before: q.cursor,
          limit,
        }),
      );
      const data = rows.map((r) => toView(r, now)).filter((v) => q.overdue !== false || !v.overdue);
      return { data, nextCursor: rows.length === limit ? (rows.at(-1)?.id ?? null) : null };
    },

    /**
     * A rectification request (Art. 16) for what the user cannot correct themselves: the
     * description says what is wrong. Operators resolve it. Audited on the platform chain.
     */
    async requestRectification(actor: Extract<Actor, { type: 'user' }>, description: string): Promise<RequestView> {
      return db.system(async (tx) => {
        const view = await open(tx, { type: 'rectification', userId: actor.userId, details: description });
        await deps.audit.record(tx, {
          workspaceId: null,
          actor,
          action: 'privacy.rectification_requested',
          target: { type: 'privacy_request', id: view.id },
        });
        return view;
      });
    },

    /**
     * Operators answer a request they handle by hand (rectification): in progress,
     * completed or rejected, with a note the subject sees. Audited on the platform chain.
     */
    async resolve(
      actor: Actor,
      id: string,
      input: { status: 'in_progress' | 'completed' | 'rejected'; outcome?: string | undefined },
    ): Promise<RequestView> {
      return db.system(async (tx) => {
        const row = await mustOpen(tx, id);
        if (!MANUAL_TYPES.includes(row.type)) {
          throw new AppError(
            'request_not_manual',
            `Berth answers ${row.type} requests itself; operators resolve ${MANUAL_TYPES.join(', ')} requests.`,
          );
        }
        if (input.status === 'rejected' && !input.outcome) {
          throw new AppError('validation_failed', 'Say why the request is rejected (outcome).', {
            details: [{ path: '/outcome', message: 'required when rejecting' }],
          });
        }
        const view =
          input.status === 'in_progress'
            ? await start(tx, id)
            : await close(tx, id, input.status, input.outcome ?? null);
        await deps.audit.record(tx, {
          workspaceId: null,
          actor,
          action: `privacy.request_${input.status}`,
          target: { type: 'privacy_request', id },
          diff: { type: row.type, from: row.status, to: input.status },
        });
        return view;
      });
    },

    /**
     * The job: tells the active operators, by email, of each open request past its deadline,
     * once per request. Each request is claimed (and the alert audited) in a transaction
     * before its mail goes, so several workers or a retry never send it twice.
     */
    async alertOverdue(limit = 200): Promise<number> {
      const now = clock.now();
      const due = await db.system((tx) => repo.overdueUnalerted(tx, now, limit));
      let sent = 0;
      for (const r of due) {
        const claimed = await db.system(async (tx) => {
          if (!(await repo.claimOverdueAlert(tx, r.id, now))) return false;
          await deps.audit.record(tx, {
            workspaceId: null,
            actor: OVERDUE_ACTOR,
            action: 'privacy.request_overdue',
            target: { type: 'privacy_request', id: r.id },
            diff: { type: r.type, dueAt: r.dueAt.toISOString() },
          });
          return true;
        });
        if (!claimed) continue;
        await overdueMail(r);
        deps.logger.info({ privacyRequestId: r.id, type: r.type }, 'privacy: overdue request alerted');
        sent++;
      }
      return sent;
    },
  };
}

export type RequestsService = ReturnType<typeof requestsService>;
