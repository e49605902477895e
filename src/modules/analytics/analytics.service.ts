import { type Clock, DAY } from '../../platform/clock.ts';
import { afterCommit, type Database, type Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Logger } from '../../platform/logger.ts';
import type { ConsentsService, ObjectionChangeEvent } from '../privacy/index.ts';
import { featureNames, type RouteRef, routeKey } from './analytics.features.ts';
import type { AnalyticsRepo, FeatureTotal } from './analytics.repo.ts';
import type { FeatureUseRow } from './analytics.tables.ts';

/** The purpose a user objects to (Art. 21) to stop this processing. */
export const ANALYTICS_PURPOSE = 'product_analytics';

/** How often each replica writes its counts (they are in memory until then). */
export const ANALYTICS_FLUSH_MS = 10_000;
/** Counts held in memory at most (distinct account, day and feature), should writes fail for long. */
const MAX_PENDING = 100_000;
/** The longest range operators' totals cover: the 13 months the counts are kept. */
export const MAX_TOTAL_DAYS = 400;
const DEFAULT_TOTAL_DAYS = 30;

type Deps = {
  db: Pick<Db, 'system'>;
  repo: AnalyticsRepo;
  clock: Clock;
  logger: Pick<Logger, 'warn'>;
  consents: Pick<ConsentsService, 'objecting' | 'objectingLocked'>;
  /** False while the user's processing is restricted (Art. 18): nothing is counted for them either. From memory. */
  processingAllowed(userId: string): boolean;
  /** Whether the account exists, read in `tx` (only after a write met an account erased meanwhile). */
  accountExists(tx: Database, userId: string): Promise<boolean>;
  intervalMs?: number;
};

export type TotalsView = { from: string; to: string; features: FeatureTotal[] };

const SEP = '\u0000';

function isForeignKeyViolation(err: unknown): boolean {
  let e = err as { code?: string; cause?: unknown } | undefined;
  for (let i = 0; i < 3 && e; i++) {
    if (e.code === '23503') return true;
    e = e.cause as typeof e;
  }
  return false;
}
const dayOf = (d: Date) => d.toISOString().slice(0, 10);

function parseDay(value: string, what: string): Date {
  const d = new Date(`${value}T00:00:00Z`);
  if (!/^\d{4}-\d{2}-\d{2}$/.test(value) || Number.isNaN(d.getTime()) || dayOf(d) !== value) {
    throw new AppError('invalid_date_range', `${what} is a day written YYYY-MM-DD (UTC), e.g. 2026-03-01.`);
  }
  return d;
}

/**
 * Product analytics: how often each account uses each feature per UTC day, on Berth's
 * legitimate interest in knowing what to build. Never content, never ids: a feature is a
 * name derived from the matched route (`analytics.features.ts`).
 *
 * `count` is on the path of every request, the gateway's too, so it only touches memory:
 * it asks privacy's in-memory objections, then adds one to a counter. A flusher writes the
 * counters in one statement every few seconds. Counts not yet written are lost if the
 * process dies (they are statistics, not records).
 *
 * Nothing is counted for a user whose processing is restricted (Art. 18). An objection
 * (`product_analytics`) stops the counting for that user from that moment and
 * deletes what was counted, in the objection's transaction; each flush re-checks the users
 * it writes under privacy's lock on their choices, so counts made on a replica that had not
 * yet heard of the objection are dropped rather than written back. Withdrawing the
 * objection resumes counting.
 *
 * @example analytics.count(userId, 'keys.create'); // from the request hook
 */
export function analyticsService(deps: Deps) {
  const { db, repo, clock } = deps;
  /** user -> (day + feature) -> uses not yet written. */
  let pending = new Map<string, Map<string, number>>();
  let size = 0;
  let warnedFull = false;
  let flushing: Promise<void> | null = null;
  let timer: NodeJS.Timeout | null = null;
  /** `METHOD url` of each counted route -> its feature name. */
  let names = new Map<string, string>();

  function add(into: Map<string, Map<string, number>>, userId: string, key: string, n: number): boolean {
    let mine = into.get(userId);
    if (!mine) {
      mine = new Map();
      into.set(userId, mine);
    }
    const had = mine.get(key);
    if (had === undefined) {
      if (size >= MAX_PENDING) return false;
      size++;
    }
    mine.set(key, (had ?? 0) + n);
    return true;
  }

  function forget(userId: string) {
    const mine = pending.get(userId);
    if (!mine) return;
    size -= mine.size;
    pending.delete(userId);
  }

  async function writeOnce(batch: Map<string, Map<string, number>>, checkAccounts: boolean) {
    const users = [...batch.keys()].sort();
    await db.system(async (tx) => {
      const objecting = await deps.consents.objectingLocked(tx, users, ANALYTICS_PURPOSE);
      const rows: FeatureUseRow[] = [];
      for (const userId of users) {
        if (objecting.has(userId)) continue;
        if (checkAccounts && !(await deps.accountExists(tx, userId))) continue;
        for (const [key, uses] of batch.get(userId) ?? []) {
          const [day = '', feature = ''] = key.split(SEP);
          rows.push({ userId, day, feature, uses });
        }
      }
      // Rows of one user are written only under that user's lock (taken in sorted order above), so two replicas' writes never deadlock.
      await repo.add(tx, rows);
    });
  }

  async function write(batch: Map<string, Map<string, number>>) {
    try {
      await writeOnce(batch, false);
    } catch (err) {
      // An account erased since its requests were counted (the foreign key refused its
      // rows): write the others, checking each account.
      if (!isForeignKeyViolation(err)) throw err;
      await writeOnce(batch, true);
    }
  }

  async function drain() {
    if (pending.size === 0) return;
    const batch = pending;
    pending = new Map();
    size = 0;
    try {
      await write(batch);
      warnedFull = false;
    } catch (err) {
      // Kept for the next flush (up to MAX_PENDING counts), unless the user objected meanwhile.
      for (const [userId, mine] of batch) {
        if (deps.consents.objecting(userId, ANALYTICS_PURPOSE)) continue;
        for (const [key, n] of mine) add(pending, userId, key, n);
      }
      throw err;
    }
  }

  function flush(): Promise<void> {
    flushing ??= drain().finally(() => {
      flushing = null;
    });
    return flushing;
  }

  /** Not objecting and not restricted; when either cannot be told now, nothing is counted. */
  function mayCount(userId: string): boolean {
    try {
      return !deps.consents.objecting(userId, ANALYTICS_PURPOSE) && deps.processingAllowed(userId);
    } catch {
      return false;
    }
  }

  const warnFlush = () => deps.logger.warn('analytics: feature counts could not be written yet; kept in memory');

  return {
    /** Names the server's routes as features (once it is ready: a name depends on the whole route table). */
    nameRoutes(routes: readonly RouteRef[]): void {
      names = featureNames(routes);
    },

    /** The feature a route counts as (null: not counted). */
    featureOf(method: string, url: string): string | null {
      return names.get(routeKey(method, url)) ?? null;
    },

    /** Each counted route (`METHOD url`) with its feature name. */
    namedRoutes(): Array<{ route: string; feature: string }> {
      return [...names].map(([route, feature]) => ({ route, feature }));
    },

    /** Every feature name, sorted. */
    features(): string[] {
      return [...new Set(names.values())].sort();
    },

    /** Counts one use of `feature` by the user, unless they object. Memory only. */
    count(userId: string, feature: string): void {
      if (!mayCount(userId)) return;
      if (!add(pending, userId, `${dayOf(clock.now())}${SEP}${feature}`, 1) && !warnedFull) {
        warnedFull = true;
        deps.logger.warn('analytics: too many feature counts waiting to be written; new ones are dropped');
      }
    },

    /** Writes every count made so far on this replica. */
    async flush(): Promise<void> {
      // A flush already running may have started before the newest counts: run once more.
      if (flushing) await flushing.catch(() => undefined);
      await flush();
    },

    /** Counts waiting in memory (distinct account, day and feature). */
    pending: () => size,

    start(): void {
      timer ??= setInterval(() => {
        if (pending.size > 0) flush().catch(warnFlush);
      }, deps.intervalMs ?? ANALYTICS_FLUSH_MS);
      timer.unref();
    },

    async stop(): Promise<void> {
      if (timer) clearInterval(timer);
      timer = null;
      await this.flush().catch(warnFlush);
    },

    /**
     * Privacy's listener: an objection deletes what was counted for the user, in the
     * objection's transaction, and drops this replica's unwritten counts once it commits.
     */
    async objectionChanged(tx: Database, change: ObjectionChangeEvent): Promise<void> {
      if (change.purpose !== ANALYTICS_PURPOSE || !change.objected) return;
      await repo.deleteUser(tx, change.userId);
      afterCommit(tx, () => forget(change.userId));
    },

    /**
     * Operators' totals per feature over UTC days `from`..`to` (default: the last 30 days):
     * uses and the number of accounts, never who; features nobody used are listed with 0.
     * 400 `invalid_date_range` for a bad range.
     */
    async totals(input: { from?: string | undefined; to?: string | undefined }): Promise<TotalsView> {
      const today = parseDay(dayOf(clock.now()), 'today');
      const to = input.to ? parseDay(input.to, 'to') : today;
      const from = input.from ? parseDay(input.from, 'from') : new Date(to.getTime() - (DEFAULT_TOTAL_DAYS - 1) * DAY);
      if (from > to) throw new AppError('invalid_date_range', 'from must not be after to.');
      const days = Math.round((to.getTime() - from.getTime()) / DAY) + 1;
      if (days > MAX_TOTAL_DAYS) {
        throw new AppError('invalid_date_range', `A range covers at most ${MAX_TOTAL_DAYS} days (this one ${days}).`);
      }
      const range = { from: dayOf(from), to: dayOf(to) };
      const used = await db.system((tx) => repo.totals(tx, range.from, range.to));
      const seen = new Set(used.map((f) => f.feature));
      const unused = [...new Set(names.values())]
        .filter((f) => !seen.has(f))
        .sort()
        .map((feature) => ({ feature, uses: 0, accounts: 0 }));
      return { ...range, features: [...used, ...unused] };
    },
  };
}

export type AnalyticsService = ReturnType<typeof analyticsService>;
