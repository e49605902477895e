import type { Clock } from '../../platform/clock.ts';
import type { Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Actor } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { ConsentsRepo } from './privacy.consents.repo.ts';
import {
  CONSENT_PURPOSES,
  type ConsentPurpose,
  type ConsentRow,
  OBJECTION_PURPOSES,
  type ObjectionPurpose,
  type ObjectionRow,
} from './privacy.consents.tables.ts';
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

type Deps = {
  db: Pick<Db, 'system' | 'orm'>;
  repo: ConsentsRepo;
  requests: Pick<RequestsService, 'record'>;
  clock: Clock;
};

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
 * a marketing mail) and `objects(userId, purpose)` (before processing for that purpose).
 */
export function consentsService(deps: Deps) {
  const { db, repo, clock } = deps;

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
