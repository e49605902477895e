import type { Bus } from '../../platform/bus/index.ts';
import type { Clock } from '../../platform/clock.ts';
import { afterCommit, type Database, type Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Actor } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import type { AuditService } from '../audit/index.ts';
import { followedSet, type Schedule, unrefTimer } from './privacy.followed.ts';
import type { RequestsService } from './privacy.requests.ts';
import type { RestrictionsRepo } from './privacy.restrictions.repo.ts';

export const RESTRICTIONS_CHANNEL = 'berth.privacy.restrictions';

/** How long the in-memory set is trusted before it is re-read in the background (a missed bus message). */
export const RESTRICTIONS_REFRESH_MS = 60_000;

/** Waits between attempts to read the restricted users after one failed: doubling from the first to the most. */
export const RESTRICTIONS_RETRY = { firstMs: 1_000, maxMs: 30_000 };

export type { Schedule } from './privacy.followed.ts';

export type RestrictionView = {
  restricted: boolean;
  /** When the current restriction started (null when not restricted). */
  since: string | null;
  history: Array<{ id: string; restrictedAt: string; liftedAt: string | null }>;
};

type UserActor = Extract<Actor, { type: 'user' }>;

type Deps = {
  db: Pick<Db, 'system' | 'orm'>;
  repo: RestrictionsRepo;
  requests: Pick<RequestsService, 'record'>;
  audit: Pick<AuditService, 'record'>;
  bus: Pick<Bus, 'publish' | 'subscribe'>;
  clock: Clock;
  logger: Pick<Logger, 'warn'>;
  /** Backoff between failed reads (default RESTRICTIONS_RETRY). */
  retry?: { firstMs: number; maxMs: number };
  /** The retry timer (default: an unref'd setTimeout). */
  schedule?: Schedule;
};

type Message = { userId: string; restricted: boolean };

function parseMessage(message: string): Message | null {
  try {
    const m = JSON.parse(message) as Partial<Message>;
    return typeof m.userId === 'string' && typeof m.restricted === 'boolean'
      ? { userId: m.userId, restricted: m.restricted }
      : null;
  } catch {
    return null;
  }
}

/**
 * Restriction of processing (GDPR Art. 18). While a user's processing is restricted, the
 * gateway refuses calls made with their API keys (403 `processing_restricted`) and agent
 * runs for them do not start (`assertProcessingAllowed`); their data stays as it is, and
 * lifting the restriction undoes it. Both are audited and recorded as privacy requests.
 *
 * The gateway asks `processingAllowed(userId)` on every call, so the answer comes from
 * memory: the set of restricted users is loaded at start, changed on every replica through
 * the bus once a change commits, re-read after a bus gap, and re-read in the background
 * when older than a minute (the bound for a replica that missed a message).
 *
 * It fails closed: until the set has been read once, and while the re-read after a bus gap
 * keeps failing (messages may have been lost meanwhile), every check throws 503
 * `restrictions_unavailable` instead of answering from an empty or stale set, and the read
 * is retried with backoff (1 s doubling to 30 s) until it succeeds. A failed background
 * re-read of a set the bus kept current only logs and keeps that set.
 *
 * @example if (!privacy.restrictions.processingAllowed(caller.userId)) throw ...;
 * @example privacy.assertProcessingAllowed(run.userId); // agents, before a run starts
 */
export function restrictionsService(deps: Deps) {
  const { db, repo, clock } = deps;
  const restricted = followedSet({
    read: async () => new Set(await repo.activeUserIds(db.orm)),
    initial: new Set<string>(),
    clock,
    logger: deps.logger,
    refreshMs: RESTRICTIONS_REFRESH_MS,
    retry: deps.retry ?? RESTRICTIONS_RETRY,
    warnings: {
      untrusted: 'privacy: could not read the restricted users; refusing processing until it can',
      keeping: 'privacy: could not re-read the restricted users; keeping the last set',
    },
    schedule: deps.schedule ?? unrefTimer,
  });

  function apply(m: Message) {
    restricted.apply((set) => {
      if (m.restricted) set.add(m.userId);
      else set.delete(m.userId);
    });
  }

  async function announce(m: Message) {
    apply(m);
    try {
      await deps.bus.publish(RESTRICTIONS_CHANNEL, JSON.stringify(m));
    } catch {
      deps.logger.warn('privacy: could not tell other replicas of a restriction change (they re-read within a minute)');
    }
  }

  function processingAllowed(userId: string): boolean {
    if (!restricted.trusted) {
      throw new AppError(
        'restrictions_unavailable',
        'Whether this account’s processing is restricted cannot be checked right now; nothing is processed until it can. Try again shortly.',
        { retryAfterSeconds: Math.ceil(restricted.delayMs / 1000) },
      );
    }
    restricted.refreshIfDue();
    return !restricted.value.has(userId);
  }

  /** The user's restriction now, with its history (newest first). */
  async function status(userId: string): Promise<RestrictionView> {
    const rows = await repo.history(db.orm, userId);
    const current = rows.find((r) => r.liftedAt === null) ?? null;
    return {
      restricted: current !== null,
      since: current ? current.restrictedAt.toISOString() : null,
      history: rows.map((r) => ({
        id: r.id,
        restrictedAt: r.restrictedAt.toISOString(),
        liftedAt: r.liftedAt ? r.liftedAt.toISOString() : null,
      })),
    };
  }

  /** A change of a user's restriction, in its transaction: tracked as a request, audited, told to every replica after commit. */
  async function changed(tx: Database, actor: UserActor, nowRestricted: boolean, restrictionId: string) {
    const userId = actor.userId;
    const req = await deps.requests.record(tx, {
      type: 'restriction',
      userId,
      outcome: nowRestricted
        ? 'Processing restricted: the gateway and agents process nothing new for this account.'
        : 'Restriction lifted at the subject’s request: processing resumed.',
    });
    await deps.audit.record(tx, {
      workspaceId: null,
      actor,
      action: nowRestricted ? 'privacy.restricted' : 'privacy.unrestricted',
      target: { type: 'user', id: userId },
      diff: { restrictionId, requestId: req.id },
    });
    afterCommit(tx, () => announce({ userId, restricted: nowRestricted }));
  }

  return {
    /**
     * Loads the restricted users and follows changes from every replica; returns the
     * unsubscribe (which also ends the retries). A failed first load does not fail the
     * start: checks answer 503 `restrictions_unavailable` until a retry succeeds.
     */
    async start(): Promise<() => Promise<void>> {
      restricted.resume();
      const stop = await deps.bus.subscribe(
        RESTRICTIONS_CHANNEL,
        (message) => {
          const m = parseMessage(message);
          if (m) apply(m);
          else deps.logger.warn('privacy: ignored a malformed restriction message');
        },
        restricted.onGap,
      );
      await restricted.reload();
      return async () => {
        restricted.stop();
        await stop();
      };
    },

    /** Re-reads the restricted users now (tests; the bus gap and the retries call it). */
    reload: restricted.reload,

    /**
     * False while the user's processing is restricted. From memory: safe on the gateway's hot
     * path. Throws 503 `restrictions_unavailable` while the set cannot be trusted (fail closed).
     */
    processingAllowed,

    /**
     * Throws 403 `processing_restricted` while the user's processing is restricted (agents,
     * before a run), 503 `restrictions_unavailable` while that cannot be known.
     */
    assertProcessingAllowed(userId: string): void {
      if (!processingAllowed(userId)) {
        throw new AppError(
          'processing_restricted',
          'Processing of this account’s data is restricted at its owner’s request; nothing new is processed until they lift it.',
        );
      }
    },

    status,

    /** Restricts the processing of the acting user's data (409 `already_restricted` when it is). */
    async restrict(actor: UserActor): Promise<RestrictionView> {
      const userId = actor.userId;
      await db.system(async (tx) => {
        const now = clock.now();
        const row = await repo.insertUnlessActive(tx, {
          id: newId('prs', now),
          userId,
          restrictedAt: now,
          liftedAt: null,
        });
        if (!row) throw new AppError('already_restricted', 'Processing of your data is already restricted.');
        await changed(tx, actor, true, row.id);
      });
      return status(userId);
    },

    /** Lifts the acting user's restriction (409 `not_restricted` when there is none). */
    async lift(actor: UserActor): Promise<RestrictionView> {
      const userId = actor.userId;
      await db.system(async (tx) => {
        const row = await repo.lift(tx, userId, clock.now());
        if (!row) throw new AppError('not_restricted', 'Processing of your data is not restricted.');
        await changed(tx, actor, false, row.id);
      });
      return status(userId);
    },
  };
}

export type RestrictionsService = ReturnType<typeof restrictionsService>;
