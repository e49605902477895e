import { type Clock, DAY, MINUTE } from '../../platform/clock.ts';
import { afterCommit, type Db } from '../../platform/db/db.ts';
import { AppError, notFound } from '../../platform/errors.ts';
import type { Actor, Scope } from '../../platform/http/context.ts';
import { isId, newId } from '../../platform/ids.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import type { Logger } from '../../platform/logger.ts';
import type { AuditService } from '../audit/index.ts';
import type { Mailer } from '../notifications/index.ts';
import type { WorkspacesService } from '../workspaces/index.ts';
import type { PolicySubprocessor } from './privacy.notice.schemas.ts';
import { categoryText } from './privacy.notice.text.ts';
import type { SubprocessorsRepo } from './privacy.subprocessors.repo.ts';
import type {
  ObjectionView,
  OperatorSubprocessorView,
  RegisterSubprocessorInput,
  SubprocessorView,
} from './privacy.subprocessors.schemas.ts';
import type { ObjectionRow, SubprocessorRow } from './privacy.subprocessors.tables.ts';

/** The shortest notice before a new sub-processor may start (days). */
export const SUBPROCESSOR_NOTICE_DAYS = 30;
/** Mails every workspace owner the notice of one sub-processor (queued at registration). */
export const SUBPROCESSOR_NOTICES_JOB = 'privacy.subprocessor-notices';
/** Re-queues notices a lost job left unsent (every 10 minutes). */
export const SUBPROCESSOR_NOTICES_SWEEP_JOB = 'privacy.subprocessor-notices-sweep';
export type SubprocessorNoticesJob = { subprocessorId: string };
/**
 * A notice claimed this long ago and still not sent is taken over: the worker that claimed it
 * died before sending (well past the mailer's own timeouts and a job's 15-minute expiry, so a
 * slow sender still at work is not doubled).
 */
export const SUBPROCESSOR_NOTICE_CLAIM_STALE_MS = 30 * MINUTE;

const TAG = 'privacy.subprocessor_notice';
const PAGE = 200;

type Deps = {
  db: Pick<Db, 'system' | 'tenant'>;
  repo: SubprocessorsRepo;
  audit: Pick<AuditService, 'record'>;
  clock: Clock;
  jobs: Pick<Jobs, 'send'>;
  logger: Logger;
  mailer: Mailer;
  workspaces: Pick<WorkspacesService, 'listOwners'>;
  /** The categories the data map knows: the only ones a sub-processor may receive. */
  categories(): ReadonlySet<string>;
  publicUrl: string;
};

/** Where an entry stands at `now`; `replacedBy` is the entry that replaces it, if any. */
export function subprocessorStatus(
  row: SubprocessorRow,
  replacedBy: string | null,
  now: Date,
): SubprocessorView['status'] {
  if (row.retiredAt && row.retiredAt <= now) return replacedBy ? 'replaced' : 'retired';
  return now < row.effectiveAt ? 'announced' : 'active';
}

function toView(row: SubprocessorRow, replacedBy: string | null, now: Date): SubprocessorView {
  return {
    id: row.id,
    name: row.name,
    purpose: row.purpose,
    dataCategories: row.dataCategories,
    region: row.region,
    noticeAt: row.noticeAt.toISOString(),
    effectiveAt: row.effectiveAt.toISOString(),
    status: subprocessorStatus(row, replacedBy, now),
    replaces: row.replaces,
    replacedBy,
    retiredAt: row.retiredAt?.toISOString() ?? null,
  };
}

const objectionView = (r: ObjectionRow): ObjectionView => ({
  workspaceId: r.workspaceId,
  subprocessorId: r.subprocessorId,
  userId: r.userId,
  reason: r.reason,
  createdAt: r.createdAt.toISOString(),
});

const userIdOf = (actor: Actor): string | null => (actor.type === 'system' ? null : actor.userId);

/**
 * The sub-processor registry (Art. 28(2) GDPR): operators register or replace one with at
 * least 30 days' notice on Berth's clock; every workspace owner is mailed the notice once, by
 * a job (claimed before it is sent; a claim its crashed sender left unsent is taken over by
 * the sweep's next run once stale); owners may object for their workspace; the public list
 * is part of the privacy policy.
 *
 * @example await subprocessors.register({ actor, input: { name, purpose, dataCategories: ['account'], region, effectiveAt } });
 */
export function subprocessorsService(deps: Deps) {
  const { db, repo, clock } = deps;
  const base = deps.publicUrl.replace(/\/+$/, '');

  async function all(): Promise<{ rows: SubprocessorRow[]; replacedBy: Map<string, string> }> {
    const rows = await db.system((tx) => repo.list(tx));
    const replacedBy = new Map<string, string>();
    for (const r of rows) if (r.replaces) replacedBy.set(r.replaces, r.id);
    return { rows, replacedBy };
  }

  function noticeText(sub: SubprocessorRow, replaced: SubprocessorRow | null, workspaceIds: string[]): string {
    const day = sub.effectiveAt.toISOString().slice(0, 10);
    return [
      `A new sub-processor will process data of the Berth workspaces you own, from ${day}:`,
      '',
      `Name: ${sub.name}`,
      `Purpose: ${sub.purpose}`,
      `Data shared: ${sub.dataCategories.map((c) => categoryText(c).label).join(', ')}`,
      `Region: ${sub.region}`,
      ...(replaced ? [`It replaces: ${replaced.name} (${replaced.region})`] : []),
      '',
      `Your workspaces: ${workspaceIds.join(', ')}`,
      '',
      `You may object for a workspace before ${day}:`,
      `POST ${base}/api/workspaces/{workspace id}/subprocessors/${sub.id}/objection`,
      '',
      `Every sub-processor: ${base}/privacy`,
    ].join('\n');
  }

  return {
    /** The public registry, every entry with its status now. */
    async list(): Promise<SubprocessorView[]> {
      const now = clock.now();
      const { rows, replacedBy } = await all();
      return rows.map((r) => toView(r, replacedBy.get(r.id) ?? null, now));
    },

    /** The operators' view: each entry with its notices and objections. */
    async listForOperators(): Promise<OperatorSubprocessorView[]> {
      const now = clock.now();
      const { rows, replacedBy } = await all();
      const [sent, objections] = await db.system(async (tx) => [
        await repo.noticeCounts(tx),
        await repo.objectionCounts(tx),
      ]);
      return rows.map((r) => ({
        ...toView(r, replacedBy.get(r.id) ?? null, now),
        noticesSent: sent.get(r.id) ?? 0,
        noticesDone: r.noticesDoneAt !== null,
        objections: objections.get(r.id) ?? 0,
      }));
    },

    /** What the privacy policy lists at `now`: entries announced or in use, not those retired. */
    async forPolicy(now: Date): Promise<PolicySubprocessor[]> {
      const { rows } = await all();
      return rows
        .filter((r) => !r.retiredAt || r.retiredAt > now)
        .map((r) => ({
          id: r.id,
          name: r.name,
          purpose: r.purpose,
          dataCategories: r.dataCategories,
          region: r.region,
          effectiveAt: r.effectiveAt.toISOString(),
          retiredAt: r.retiredAt?.toISOString() ?? null,
        }));
    },

    /**
     * Registers a sub-processor (or, with `replaces`, its replacement: the old one is retired
     * when the new one starts). Refused with nothing stored when it would start less than 30
     * days from now (`notice_period_too_short`), names a category the data map does not have,
     * or replaces an entry already retired or replaced. Audited in the platform chain; the
     * owners' notices are queued once the registration committed.
     */
    async register({ actor, input }: { actor: Actor; input: RegisterSubprocessorInput }): Promise<SubprocessorView> {
      const now = clock.now();
      const effectiveAt = new Date(input.effectiveAt);
      const earliest = new Date(now.getTime() + SUBPROCESSOR_NOTICE_DAYS * DAY);
      if (effectiveAt < earliest) {
        throw new AppError(
          'notice_period_too_short',
          `A sub-processor may start ${SUBPROCESSOR_NOTICE_DAYS} days after its notice at the earliest: on ${earliest.toISOString()} or later.`,
        );
      }
      const known = deps.categories();
      const unknown = [...new Set(input.dataCategories)].filter((c) => !known.has(c));
      if (unknown.length) {
        throw new AppError('unknown_data_category', `Not a data map category: ${unknown.join(', ')}.`, {
          details: unknown.map((c) => ({ path: '/dataCategories', message: `unknown category ${c}` })),
        });
      }
      if (input.replaces !== undefined && !isId(input.replaces, 'sub')) throw notFound('sub-processor');
      const row: SubprocessorRow = {
        id: newId('sub', now),
        name: input.name,
        purpose: input.purpose,
        dataCategories: [...new Set(input.dataCategories)],
        region: input.region,
        noticeAt: now,
        effectiveAt,
        replaces: input.replaces ?? null,
        retiredAt: null,
        noticesDoneAt: null,
        createdBy: userIdOf(actor),
        createdAt: now,
      };
      await db.system(async (tx) => {
        if (input.replaces) {
          const old = await repo.lock(tx, input.replaces);
          if (!old) throw notFound('sub-processor');
          if (old.retiredAt) {
            throw new AppError('subprocessor_retired', `${old.name} (${old.id}) is already retired or being replaced.`);
          }
          await repo.setRetired(tx, old.id, effectiveAt);
        }
        await repo.insert(tx, row);
        await deps.audit.record(tx, {
          workspaceId: null,
          actor,
          action: 'subprocessor.registered',
          target: { type: 'subprocessor', id: row.id },
          diff: {
            name: row.name,
            region: row.region,
            dataCategories: row.dataCategories,
            effectiveAt: row.effectiveAt.toISOString(),
            replaces: row.replaces,
          },
        });
        afterCommit(tx, async () => {
          try {
            await deps.jobs.send<SubprocessorNoticesJob>(
              SUBPROCESSOR_NOTICES_JOB,
              { subprocessorId: row.id },
              { singletonKey: row.id },
            );
          } catch (err) {
            // The sweep queues it again within minutes.
            deps.logger.warn({ tag: TAG, err: (err as Error).name }, 'privacy: sub-processor notices not queued');
          }
        });
      });
      return toView(row, null, now);
    },

    /** Stops using a sub-processor now (audited); refused when it is already retired or replaced. */
    async retire({ actor, subprocessorId }: { actor: Actor; subprocessorId: string }): Promise<SubprocessorView> {
      if (!isId(subprocessorId, 'sub')) throw notFound('sub-processor');
      const now = clock.now();
      const row = await db.system(async (tx) => {
        const found = await repo.lock(tx, subprocessorId);
        if (!found) throw notFound('sub-processor');
        if (found.retiredAt && found.retiredAt <= now) {
          throw new AppError('subprocessor_retired', `${found.name} (${found.id}) is already retired or replaced.`);
        }
        await repo.setRetired(tx, found.id, now);
        await deps.audit.record(tx, {
          workspaceId: null,
          actor,
          action: 'subprocessor.retired',
          target: { type: 'subprocessor', id: found.id },
          diff: { name: found.name },
        });
        return { ...found, retiredAt: now };
      });
      const { replacedBy } = await all();
      return toView(row, replacedBy.get(row.id) ?? null, now);
    },

    /**
     * A workspace owner's objection to a sub-processor (once per workspace: 409
     * `objection_exists` after that). Audited in the workspace's chain; the reason is kept
     * for the operator but not copied into the audit log.
     */
    async object({
      scope,
      subprocessorId,
      reason,
    }: {
      scope: Scope;
      subprocessorId: string;
      reason?: string | undefined;
    }): Promise<ObjectionView> {
      if (!isId(subprocessorId, 'sub')) throw notFound('sub-processor');
      const now = clock.now();
      const sub = await db.system((tx) => repo.find(tx, subprocessorId));
      if (!sub) throw notFound('sub-processor');
      if (sub.retiredAt && sub.retiredAt <= now) {
        throw new AppError('subprocessor_retired', `${sub.name} is no longer used: there is nothing to object to.`);
      }
      const row: ObjectionRow = {
        workspaceId: scope.workspaceId,
        subprocessorId,
        userId: userIdOf(scope.actor),
        reason: reason ?? null,
        createdAt: now,
      };
      await db.tenant(scope.workspaceId, async (tx) => {
        if (!(await repo.insertObjection(tx, row))) {
          throw new AppError('objection_exists', 'This workspace already objected to this sub-processor.');
        }
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'subprocessor.objected',
          target: { type: 'subprocessor', id: subprocessorId },
          diff: { name: sub.name, withReason: row.reason !== null },
        });
      });
      return objectionView(row);
    },

    /** Objections across workspaces, newest first (operators). */
    async listObjections(subprocessorId?: string): Promise<ObjectionView[]> {
      const rows = await db.system((tx) => repo.listObjections(tx, subprocessorId));
      return rows.map(objectionView);
    },

    /**
     * Mails the notice of one sub-processor to every workspace owner, one message per person
     * whatever the number of workspaces they own. Each notice is claimed before it is sent, so
     * a retry or a second worker never sends it twice; a message the mailer refuses is given
     * back and counted in `failed` (the job then fails and is retried for those only). A claim
     * left unsent for SUBPROCESSOR_NOTICE_CLAIM_STALE_MS (its sender crashed) is taken over and
     * sent; one younger than that is counted in `pending`. The entry is marked done only once
     * every notice is sent.
     */
    async sendNotices(subprocessorId: string): Promise<{ sent: number; failed: number; pending: number }> {
      const { sub, replaced } = await db.system(async (tx) => {
        const s = await repo.find(tx, subprocessorId);
        return { sub: s, replaced: s?.replaces ? await repo.find(tx, s.replaces) : null };
      });
      if (!sub) return { sent: 0, failed: 0, pending: 0 };
      const day = sub.effectiveAt.toISOString().slice(0, 10);
      let after: string | null = null;
      let sent = 0;
      let failed = 0;
      for (;;) {
        const owners = await deps.workspaces.listOwners({ after, limit: PAGE });
        for (const owner of owners) {
          after = owner.userId;
          if (!owner.email) continue;
          const now = clock.now();
          const staleBefore = new Date(now.getTime() - SUBPROCESSOR_NOTICE_CLAIM_STALE_MS);
          const claimed = await db.system((tx) => repo.claimNotice(tx, sub.id, owner.userId, now, staleBefore));
          if (!claimed) continue;
          try {
            await deps.mailer.send({
              to: owner.email,
              subject: `Berth: new sub-processor ${sub.name} from ${day}`,
              text: noticeText(sub, replaced, owner.workspaceIds),
              tag: TAG,
              userId: owner.userId,
            });
          } catch (err) {
            deps.logger.warn({ tag: TAG, err: (err as Error).name }, 'privacy: sub-processor notice not sent');
            await db.system((tx) => repo.releaseNotice(tx, sub.id, owner.userId));
            failed++;
            continue;
          }
          await db.system((tx) => repo.markNoticeSent(tx, sub.id, owner.userId, clock.now()));
          sent++;
        }
        if (owners.length < PAGE) break;
      }
      // Claims still unsent: another worker's in flight, or a crashed one's (taken over once stale).
      const pending = failed === 0 ? await db.system((tx) => repo.unsentCount(tx, sub.id)) : 0;
      if (failed === 0 && pending === 0) await db.system((tx) => repo.markNoticesDone(tx, sub.id, clock.now()));
      return { sent, failed, pending };
    },

    /**
     * Queues the notices of entries registered more than 10 minutes ago whose notices are not
     * all sent, and of entries with a claim left unsent for SUBPROCESSOR_NOTICE_CLAIM_STALE_MS
     * (the job takes those over and sends them once).
     */
    async sweepNotices(): Promise<number> {
      const now = clock.now().getTime();
      const ids = await db.system((tx) =>
        repo.noticesPending(tx, new Date(now - 10 * MINUTE), new Date(now - SUBPROCESSOR_NOTICE_CLAIM_STALE_MS), 100),
      );
      for (const id of ids) {
        await deps.jobs.send<SubprocessorNoticesJob>(
          SUBPROCESSOR_NOTICES_JOB,
          { subprocessorId: id },
          { singletonKey: id },
        );
      }
      return ids.length;
    },
  };
}

export type SubprocessorsService = ReturnType<typeof subprocessorsService>;
