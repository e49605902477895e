import type { Bus } from '../../platform/bus/index.ts';
import type { Clock } from '../../platform/clock.ts';
import { afterCommit, type Database, type Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Actor } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import type { ConsentsRepo } from './privacy.consents.repo.ts';
import {
  CONSENT_PURPOSES,
  type ConsentPurpose,
  type ConsentRow,
  OBJECTION_PURPOSES,
  type ObjectionPurpose,
  type ObjectionRow,
} from './privacy.consents.tables.ts';
import { followedSet } from './privacy.followed.ts';
import type { RequestsService } from './privacy.requests.ts';

type UserActor = Extract<Actor, { type: 'user' }>;

export type ConsentState = {
  purpose: ConsentPurpose;
  description: string;
  given: boolean;
  /** The version of the text the current consent was given to (or the withdrawn one's). */
  textVersion: string | null;
  /** When the current state began (null: never asked, so not given). */
  since: string | null;
};

export type ConsentChange = {
  id: string;
  purpose: string;
  given: boolean;
  textVersion: string | null;
  at: string;
};

export type ConsentsView = { consents: ConsentState[]; history: ConsentChange[] };

export type ObjectionState = {
  purpose: ObjectionPurpose;
  description: string;
  objected: boolean;
  since: string | null;
};

export type ObjectionChange = { id: string; purpose: string; objected: boolean; at: string };

export type ObjectionsView = { objections: ObjectionState[]; history: ObjectionChange[] };

export const OBJECTIONS_CHANNEL = 'berth.privacy.objections';

/** How long the in-memory objections are trusted before they are re-read in the background (a missed bus message). */
export const OBJECTIONS_REFRESH_MS = 60_000;

/** Waits between background re-reads after one failed: doubling from the first to the most. */
export const OBJECTIONS_RETRY = { firstMs: 1_000, maxMs: 30_000 };

/** One objection raised or withdrawn, as the modules doing that processing hear of it. */
export type ObjectionChangeEvent = { userId: string; purpose: ObjectionPurpose; objected: boolean };

/**
 * Runs in the transaction that records the change: a module stops (and undoes) its
 * processing for the purpose there, so the objection and its effect commit together.
 */
export type ObjectionListener = (tx: Database, change: ObjectionChangeEvent) => Promise<void>;

type Deps = {
  db: Pick<Db, 'system' | 'orm'>;
  repo: ConsentsRepo;
  requests: Pick<RequestsService, 'record'>;
  clock: Clock;
  bus: Pick<Bus, 'publish' | 'subscribe'>;
  logger: Pick<Logger, 'warn'>;
  /** Backoff between failed re-reads (default OBJECTIONS_RETRY). */
  retry?: { firstMs: number; maxMs: number };
};

function parseObjectionMessage(message: string): ObjectionChangeEvent | null {
  try {
    const m = JSON.parse(message) as Partial<ObjectionChangeEvent>;
    return typeof m.userId === 'string' &&
      typeof m.purpose === 'string' &&
      Object.hasOwn(OBJECTION_PURPOSES, m.purpose) &&
      typeof m.objected === 'boolean'
      ? { userId: m.userId, purpose: m.purpose, objected: m.objected }
      : null;
  } catch {
    return null;
  }
}

const consentChange = (r: ConsentRow): ConsentChange => ({
  id: r.id,
  purpose: r.purpose,
  given: r.given,
  textVersion: r.textVersion,
  at: r.at.toISOString(),
});

const objectionChange = (r: ObjectionRow): ObjectionChange => ({
  id: r.id,
  purpose: r.purpose,
  objected: r.objected,
  at: r.at.toISOString(),
});

/** The first row per purpose of a newest-first list: each purpose's current state. */
function latestByPurpose<T extends { purpose: string }>(rows: T[]): Map<string, T> {
  const out = new Map<string, T>();
  for (const r of rows) if (!out.has(r.purpose)) out.set(r.purpose, r);
  return out;
}

/**
 * Consents (GDPR Art. 7) and objections to legitimate-interest processing (Art. 21), each
 * change kept as a row: the latest row of a purpose is its state, the rows are the proof.
 * Giving and withdrawing a consent are one call each; so are objecting and withdrawing an
 * objection. What the other modules ask: `hasConsent(userId, purpose)` (the mailer, before
 * a marketing mail) and `objecting(userId, purpose)` (before processing for that purpose).
 *
 * `objecting` answers from memory, as restriction does: the current objections are loaded at
 * start, changed on every replica through the bus once a change commits, re-read after a
 * bus gap and in the background when older than a minute. A module whose processing must
 * also stop for data already gathered registers `onObjectionChange` (it runs in the
 * objection's transaction) and checks `objectingLocked` where it writes.
 *
 * @example if (!privacy.consents.objecting(userId, 'product_analytics')) count(userId, feature);
 */
export function consentsService(deps: Deps) {
  const { db, repo, clock } = deps;
  const listeners: ObjectionListener[] = [];
  /** Per purpose, the users objecting to it now. */
  const objectors = followedSet({
    read: async () => {
      const next = new Map<string, Set<string>>();
      for (const r of await repo.currentObjections(db.orm)) {
        if (!next.has(r.purpose)) next.set(r.purpose, new Set());
        next.get(r.purpose)?.add(r.userId);
      }
      return next;
    },
    initial: new Map<string, Set<string>>(),
    clock,
    logger: deps.logger,
    refreshMs: OBJECTIONS_REFRESH_MS,
    retry: deps.retry ?? OBJECTIONS_RETRY,
    warnings: {
      untrusted: 'privacy: could not read the objections; treating every user as objecting until it can',
      keeping: 'privacy: could not re-read the objections; keeping the last set',
    },
    // One warning per outage, not one per request.
    warnOncePerOutage: true,
  });

  function apply(m: ObjectionChangeEvent) {
    objectors.apply((byPurpose) => {
      let set = byPurpose.get(m.purpose);
      if (!set) {
        set = new Set();
        byPurpose.set(m.purpose, set);
      }
      if (m.objected) set.add(m.userId);
      else set.delete(m.userId);
    });
  }

  async function announce(m: ObjectionChangeEvent) {
    apply(m);
    try {
      await deps.bus.publish(OBJECTIONS_CHANNEL, JSON.stringify(m));
    } catch {
      deps.logger.warn('privacy: could not tell other replicas of an objection (they re-read within a minute)');
    }
  }

  async function consents(userId: string): Promise<ConsentsView> {
    const rows = await repo.consents(db.orm, userId);
    const latest = latestByPurpose(rows);
    return {
      consents: (Object.keys(CONSENT_PURPOSES) as ConsentPurpose[]).map((purpose) => {
        const r = latest.get(purpose);
        return {
          purpose,
          description: CONSENT_PURPOSES[purpose],
          given: r?.given ?? false,
          textVersion: r?.textVersion ?? null,
          since: r ? r.at.toISOString() : null,
        };
      }),
      history: rows.map(consentChange),
    };
  }

  async function objections(userId: string): Promise<ObjectionsView> {
    const rows = await repo.objections(db.orm, userId);
    const latest = latestByPurpose(rows);
    return {
      objections: (Object.keys(OBJECTION_PURPOSES) as ObjectionPurpose[]).map((purpose) => {
        const r = latest.get(purpose);
        return {
          purpose,
          description: OBJECTION_PURPOSES[purpose],
          objected: r?.objected ?? false,
          since: r ? r.at.toISOString() : null,
        };
      }),
      history: rows.map(objectionChange),
    };
  }

  return {
    consents,
    objections,

    /** Loads the current objections and follows changes from every replica; returns the unsubscribe. */
    async start(): Promise<() => Promise<void>> {
      const stop = await deps.bus.subscribe(
        OBJECTIONS_CHANNEL,
        (message) => {
          const m = parseObjectionMessage(message);
          if (m) apply(m);
          else deps.logger.warn('privacy: ignored a malformed objection message');
        },
        objectors.onGap,
      );
      await objectors.reload();
      return stop;
    },

    /** Re-reads the objections now (after a bus gap; tests). */
    reload: objectors.reload,

    /**
     * True while the user objects to `purpose`. From memory: safe on every request. It fails
     * closed: until the objections were read, and while a re-read after a bus gap fails, every
     * user counts as objecting (the processing waits rather than overriding an objection).
     */
    objecting(userId: string, purpose: ObjectionPurpose): boolean {
      objectors.refreshIfDue();
      if (!objectors.trusted) return true;
      return objectors.value.get(purpose)?.has(userId) ?? false;
    },

    /**
     * Of `userIds`, those objecting to `purpose`, read in `tx` after locking the users'
     * choices until it ends: what `tx` writes for the others cannot slip past an objection
     * being recorded (that objection's listeners run after `tx` commits, and see its rows).
     */
    async objectingLocked(tx: Database, userIds: readonly string[], purpose: ObjectionPurpose): Promise<Set<string>> {
      await repo.lockUsers(tx, userIds);
      return new Set(await repo.objectingAmong(tx, userIds, purpose));
    },

    /** Registers a listener run in the transaction of every objection raised or withdrawn. */
    onObjectionChange(listener: ObjectionListener): void {
      listeners.push(listener);
    },

    /** True when the user's latest word on `purpose` is a consent given (never asked: false). */
    async hasConsent(userId: string, purpose: ConsentPurpose): Promise<boolean> {
      return (await repo.latestConsent(db.orm, userId, purpose))?.given ?? false;
    },

    /** True when the user objects to processing for `purpose` now. */
    async objects(userId: string, purpose: ObjectionPurpose): Promise<boolean> {
      const latest = latestByPurpose(await repo.objections(db.orm, userId)).get(purpose);
      return latest?.objected ?? false;
    },

    /**
     * Gives consent to `purpose`, to the text of `textVersion`. Giving it again to the same
     * text changes nothing; to a new text it is recorded (a consent to the new wording).
     */
    async give(actor: UserActor, purpose: ConsentPurpose, textVersion: string): Promise<ConsentsView> {
      await db.system(async (tx) => {
        await repo.lockUser(tx, actor.userId);
        const latest = await repo.latestConsent(tx, actor.userId, purpose);
        if (latest?.given && latest.textVersion === textVersion) return;
        const at = clock.now();
        await repo.insertConsent(tx, {
          id: newId('pcn', at),
          userId: actor.userId,
          purpose,
          given: true,
          textVersion,
          at,
        });
      });
      return consents(actor.userId);
    },

    /** Withdraws the consent to `purpose` (409 `consent_not_given` when there is none). */
    async withdraw(actor: UserActor, purpose: ConsentPurpose): Promise<ConsentsView> {
      await db.system(async (tx) => {
        await repo.lockUser(tx, actor.userId);
        const latest = await repo.latestConsent(tx, actor.userId, purpose);
        if (!latest?.given) throw new AppError('consent_not_given', `You have not given consent to ${purpose}.`);
        const at = clock.now();
        // The withdrawal names the text whose consent it ends.
        await repo.insertConsent(tx, {
          id: newId('pcn', at),
          userId: actor.userId,
          purpose,
          given: false,
          textVersion: latest.textVersion,
          at,
        });
      });
      return consents(actor.userId);
    },

    /**
     * Sets objections: `true` objects to a purpose, `false` withdraws the objection; purposes
     * left out and purposes already in the asked state are unchanged. Raising objections is
     * recorded as an objection request, answered at once.
     */
    async setObjections(
      actor: UserActor,
      changes: Partial<Record<ObjectionPurpose, boolean>>,
    ): Promise<ObjectionsView> {
      await db.system(async (tx) => {
        await repo.lockUser(tx, actor.userId);
        const latest = latestByPurpose(await repo.objections(tx, actor.userId));
        const raised: string[] = [];
        const at = clock.now();
        for (const purpose of Object.keys(OBJECTION_PURPOSES) as ObjectionPurpose[]) {
          const want = changes[purpose];
          if (want === undefined || want === (latest.get(purpose)?.objected ?? false)) continue;
          await repo.insertObjection(tx, { id: newId('pob', at), userId: actor.userId, purpose, objected: want, at });
          if (want) raised.push(purpose);
          const change = { userId: actor.userId, purpose, objected: want };
          for (const listener of listeners) await listener(tx, change);
          afterCommit(tx, () => announce(change));
        }
        if (raised.length > 0) {
          await deps.requests.record(tx, {
            type: 'objection',
            userId: actor.userId,
            details: raised.join(', '),
            outcome: `Objection recorded: no more processing for ${raised.join(', ')}.`,
          });
        }
      });
      return objections(actor.userId);
    },
  };
}

export type ConsentsService = ReturnType<typeof consentsService>;
