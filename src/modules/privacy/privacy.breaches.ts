import { type Clock, HOUR } from '../../platform/clock.ts';
import type { Db } from '../../platform/db/db.ts';
import { AppError, notFound } from '../../platform/errors.ts';
import type { Actor } from '../../platform/http/context.ts';
import { isId, newId } from '../../platform/ids.ts';
import type { AuditService } from '../audit/index.ts';
import type { BreachesRepo } from './privacy.breaches.repo.ts';
import type { BreachView, RecordBreachInput, UpdateBreachInput } from './privacy.breaches.schemas.ts';
import type { BreachRow } from './privacy.breaches.tables.ts';

/** Art. 33(1) GDPR: the supervisory authority is told within 72 hours of awareness. */
export const BREACH_NOTIFY_HOURS = 72;

type Deps = {
  db: Pick<Db, 'system'>;
  repo: BreachesRepo;
  audit: Pick<AuditService, 'record'>;
  clock: Clock;
  categories(): ReadonlySet<string>;
};

export function breachView(r: BreachRow, now: Date): BreachView {
  return {
    id: r.id,
    description: r.description,
    dataCategories: r.dataCategories,
    subjectsCount: r.subjectsCount,
    awareAt: r.awareAt.toISOString(),
    notifyDeadline: r.notifyDeadline.toISOString(),
    authorityNotifiedAt: r.authorityNotifiedAt?.toISOString() ?? null,
    subjectsNotifiedAt: r.subjectsNotifiedAt?.toISOString() ?? null,
    measures: r.measures,
    overdue: r.authorityNotifiedAt === null && now > r.notifyDeadline,
    notifiedLate: r.authorityNotifiedAt !== null && r.authorityNotifiedAt > r.notifyDeadline,
    createdBy: r.createdBy,
    createdAt: r.createdAt.toISOString(),
    updatedAt: r.updatedAt.toISOString(),
  };
}

const userIdOf = (actor: Actor): string | null => (actor.type === 'system' ? null : actor.userId);

/**
 * The breach register: operators record each personal data breach with when they became
 * aware of it; the 72-hour deadline for telling the supervisory authority is stored with it
 * and every view says whether it passed unmet (`overdue`). Both changes are audited in the
 * platform chain (without the description, which stays in the register).
 *
 * @example await breaches.record({ actor, input: { description, dataCategories: ['account'], awareAt } });
 */
export function breachesService(deps: Deps) {
  const { db, repo, clock } = deps;

  function checkCategories(categories: readonly string[]) {
    const known = deps.categories();
    const unknown = [...new Set(categories)].filter((c) => !known.has(c));
    if (unknown.length) throw new AppError('unknown_data_category', `Not a data map category: ${unknown.join(', ')}.`);
  }

  /** A notification time: not before awareness, not in the future. */
  function notifiedAt(
    value: string | null | undefined,
    awareAt: Date,
    now: Date,
    what: string,
  ): Date | null | undefined {
    if (value === undefined || value === null) return value;
    const at = new Date(value);
    if (at < awareAt || at > now) {
      throw new AppError('invalid_date_range', `${what} must lie between awareAt and now.`);
    }
    return at;
  }

  return {
    async list(): Promise<BreachView[]> {
      const now = clock.now();
      return (await db.system((tx) => repo.list(tx))).map((r) => breachView(r, now));
    },

    async get(breachId: string): Promise<BreachView> {
      if (!isId(breachId, 'brc')) throw notFound('breach');
      const row = await db.system((tx) => repo.find(tx, breachId));
      if (!row) throw notFound('breach');
      return breachView(row, clock.now());
    },

    async record({ actor, input }: { actor: Actor; input: RecordBreachInput }): Promise<BreachView> {
      const now = clock.now();
      const awareAt = new Date(input.awareAt);
      if (awareAt > now) throw new AppError('invalid_date_range', 'awareAt cannot be in the future.');
      checkCategories(input.dataCategories);
      const row: BreachRow = {
        id: newId('brc', now),
        description: input.description,
        dataCategories: [...new Set(input.dataCategories)],
        subjectsCount: input.subjectsCount ?? null,
        awareAt,
        notifyDeadline: new Date(awareAt.getTime() + BREACH_NOTIFY_HOURS * HOUR),
        authorityNotifiedAt: null,
        subjectsNotifiedAt: null,
        measures: null,
        createdBy: userIdOf(actor),
        createdAt: now,
        updatedAt: now,
      };
      await db.system(async (tx) => {
        await repo.insert(tx, row);
        await deps.audit.record(tx, {
          workspaceId: null,
          actor,
          action: 'breach.recorded',
          target: { type: 'breach', id: row.id },
          diff: {
            dataCategories: row.dataCategories,
            subjectsCount: row.subjectsCount,
            awareAt: row.awareAt.toISOString(),
            notifyDeadline: row.notifyDeadline.toISOString(),
          },
        });
      });
      return breachView(row, now);
    },

    /** Records who was told when, and the measures; a field left out stays as it was. */
    async update({
      actor,
      breachId,
      input,
    }: {
      actor: Actor;
      breachId: string;
      input: UpdateBreachInput;
    }): Promise<BreachView> {
      if (!isId(breachId, 'brc')) throw notFound('breach');
      const now = clock.now();
      const row = await db.system(async (tx) => {
        const found = await repo.lock(tx, breachId);
        if (!found) throw notFound('breach');
        const authority = notifiedAt(input.authorityNotifiedAt, found.awareAt, now, 'authorityNotifiedAt');
        const subjects = notifiedAt(input.subjectsNotifiedAt, found.awareAt, now, 'subjectsNotifiedAt');
        const next: BreachRow = {
          ...found,
          ...(authority === undefined ? {} : { authorityNotifiedAt: authority }),
          ...(subjects === undefined ? {} : { subjectsNotifiedAt: subjects }),
          ...(input.measures === undefined ? {} : { measures: input.measures }),
          ...(input.subjectsCount === undefined ? {} : { subjectsCount: input.subjectsCount }),
          updatedAt: now,
        };
        await repo.update(tx, next);
        await deps.audit.record(tx, {
          workspaceId: null,
          actor,
          action: 'breach.updated',
          target: { type: 'breach', id: found.id },
          diff: {
            changed: Object.keys(input).sort(),
            authorityNotifiedAt: next.authorityNotifiedAt?.toISOString() ?? null,
            subjectsNotifiedAt: next.subjectsNotifiedAt?.toISOString() ?? null,
          },
        });
        return next;
      });
      return breachView(row, now);
    },
  };
}

export type BreachesService = ReturnType<typeof breachesService>;
