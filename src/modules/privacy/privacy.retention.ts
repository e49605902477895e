import type { Clock } from '../../platform/clock.ts';
import { DAY } from '../../platform/clock.ts';
import type { RetentionClass, TableEntry } from '../../platform/db/datamap.ts';
import { type Db, isUniqueViolation } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Actor } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import type { AuditService } from '../audit/index.ts';
import type { usageRetentionRepo } from '../gateway/index.ts';
import type { RetentionRepo } from './privacy.retention.repo.ts';
import type { ResultRule, RetentionResultRow, RetentionRunRow } from './privacy.retention.tables.ts';

/** The scheduled job: every class of the data map, as of now. */
export const RETENTION_JOB = 'privacy.retention';

/** Per-call usage events are rolled up into daily aggregates (no key, no user) after this many days. */
export const USAGE_ROLLUP_DAYS = 90;
/** Audit retention when the workspace's plan does not say (and for the platform chain). */
export const DEFAULT_AUDIT_MONTHS = 13;
/** The database refuses shorter audit retention. */
const MIN_AUDIT_DAYS = 30;
/** Monthly partitions kept ready ahead of the current month. */
const MONTHS_AHEAD = 3;
/** A removing run still 'running' after this long was left by a stopped process. */
const STALE_RUN_MS = 60 * 60_000;

type Window = { days: number } | { months: number };

/**
 * What each retention class means, in the order a run applies them. `window` is how long a
 * row is kept after its time column (null: no time window, see `rule`).
 */
export const RETENTION_POLICIES: ReadonlyArray<{ class: RetentionClass; window: Window | null; description: string }> =
  [
    { class: 'until_expiry', window: null, description: 'Deleted as soon as it expires or is used' },
    { class: 'logs_90_days', window: { days: 90 }, description: 'Request logs and agent run logs: 90 days' },
    { class: 'security_13_months', window: { months: 13 }, description: 'Security events: 13 months' },
    {
      class: 'usage_13_months',
      window: { months: 13 },
      description: `Per-call usage: rolled up into daily totals without key or user after ${USAGE_ROLLUP_DAYS} days; totals kept 13 months`,
    },
    {
      class: 'audit_13_months',
      window: { months: DEFAULT_AUDIT_MONTHS },
      description: "Audit log: 13 months, or as long as the workspace's plan says (up to 7 years)",
    },
    { class: 'outbox_30_days', window: { days: 30 }, description: 'Held outgoing mail: 30 days' },
    {
      class: 'billing_7_years',
      window: { months: 84 },
      description: 'Billing records: 7 years (accounting law), also after an account is deleted',
    },
  ];

/** `at` minus a window, in UTC calendar months or days. */
export function windowStart(at: Date, w: Window): Date {
  if ('days' in w) return new Date(at.getTime() - w.days * DAY);
  const d = new Date(at);
  const day = d.getUTCDate();
  d.setUTCDate(1);
  d.setUTCMonth(d.getUTCMonth() - w.months);
  const last = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 0)).getUTCDate();
  d.setUTCDate(Math.min(day, last));
  return d;
}

function monthStart(at: Date, plus = 0): Date {
  return new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth() + plus, 1));
}

export type RunInput = {
  /** The time the windows are applied at (default now); after now only for a dry run. */
  asOf?: Date | undefined;
  dryRun: boolean;
  trigger: RetentionRunRow['trigger'];
  /** The operator who started it (audit and the run record). */
  actor?: Actor | undefined;
};

export type RunResult = Omit<RetentionResultRow, 'runId'>;

/**
 * The billing ledger's own retention (billing's `ledgerRetention`): its tables cannot simply
 * lose old rows, because balances are sums of postings; expired ones are carried forward.
 */
export type LedgerRetention = {
  tables: readonly string[];
  expire(
    cutoff: Date,
    dryRun: boolean,
  ): Promise<Array<{ table: string; rule: 'rollup' | 'older_than'; rowsDeleted: number; rowsRolledUp: number }>>;
};
export type RunView = RetentionRunRow & { results: RunResult[] };

type Deps = {
  db: Pick<Db, 'system'>;
  repo: RetentionRepo;
  clock: Clock;
  logger: Logger;
  /** The whole data map: which tables each class covers. */
  dataMap(): readonly TableEntry[];
  /** The gateway's usage partitions and roll-up. */
  usage: typeof usageRetentionRepo;
  audit: Pick<AuditService, 'record' | 'retention'>;
  /** The workspace plan's audit retention in months (null: the default). */
  auditMonthsOf(workspaceId: string): Promise<number | null>;
  /** The billing ledger's tables: after the other tables of their class (which may name its transactions). */
  ledger: LedgerRetention;
};

/**
 * Retention, enforced from the data map: each run applies every time-based class to every
 * table the map puts in it, records what it removed per class and table, and keeps the
 * partitioned tables' coming months ready. A dry run counts what a run would remove and
 * changes nothing (it may look at a future date); a removing run may not be dated in the
 * future. Tables with their own shape are handled by their modules' retention functions:
 * usage events (roll-up into daily aggregates, whole months dropped), the audit log
 * (whole months dropped, or each chain's expired prefix, keeping it verifiable) and the
 * billing ledger (expired transactions replaced by balances carried forward); the agent run
 * logs' steps and events lose whole months as partitions, then their runs go by the window.
 */
export function retentionService(deps: Deps) {
  const { db, repo, clock } = deps;

  async function auditMonths(workspaceId: string | null): Promise<number> {
    if (!workspaceId) return DEFAULT_AUDIT_MONTHS;
    // No fallback on an error: a run that cannot read a plan fails (and is retried) rather than
    // deleting a longer-kept audit log by the default.
    return (await deps.auditMonthsOf(workspaceId)) ?? DEFAULT_AUDIT_MONTHS;
  }

  /** The audit cut-off of a chain: its plan's months, never under the database's 30 days. */
  function auditCutoff(asOf: Date, months: number): Date {
    const byPlan = windowStart(asOf, { months });
    const floor = new Date(asOf.getTime() - MIN_AUDIT_DAYS * DAY);
    return byPlan < floor ? byPlan : floor;
  }
  const daysBetween = (a: Date, b: Date) => Math.floor((b.getTime() - a.getTime()) / DAY);

  async function usageEvents(asOf: Date, dryRun: boolean): Promise<Omit<RunResult, 'retentionClass' | 'tableName'>> {
    const cutoff = new Date(asOf.getTime() - USAGE_ROLLUP_DAYS * DAY);
    if (!dryRun) {
      await db.system(async (tx) => {
        const months = [...(await deps.usage.monthsInDefault(tx))];
        for (let i = 0; i <= MONTHS_AHEAD; i++) months.push(monthStart(asOf, i));
        for (const m of months) await deps.usage.ensurePartition(tx, m);
      });
    }
    const whole = (await db.system((tx) => deps.usage.partitions(tx))).filter((p) => p.rangeEnd <= cutoff);
    let rolled = 0;
    if (dryRun) {
      rolled = await db.system((tx) => deps.usage.countBefore(tx, cutoff));
    } else {
      for (const p of whole) rolled += await db.system((tx) => deps.usage.rollUpPartition(tx, p.name, cutoff));
      rolled += await db.system((tx) => deps.usage.rollUpBefore(tx, cutoff));
    }
    return { rule: 'rollup', rowsDeleted: 0, rowsRolledUp: rolled, partitionsDropped: whole.length, cutoff };
  }

  /**
   * The audit log: whole months go when every chain in them has expired (by its workspace's
   * plan), does not keep its head there and has no older event elsewhere; then each chain's
   * remaining expired prefix goes. Returns the chains' cut-offs for the companion tables.
   */
  async function auditEvents(asOf: Date, dryRun: boolean) {
    const audit = deps.audit.retention;
    const chains = await audit.chainsWithEventsBefore(new Date(asOf.getTime() - MIN_AUDIT_DAYS * DAY));
    const cutoffs = new Map<string, { cutoff: Date; months: number }>();
    const monthsByChain = async (chain: string, workspaceId: string | null) => {
      const known = cutoffs.get(chain);
      if (known) return known;
      const months = await auditMonths(workspaceId);
      const entry = { cutoff: auditCutoff(asOf, months), months };
      cutoffs.set(chain, entry);
      return entry;
    };
    for (const c of chains) await monthsByChain(c.chain, c.workspaceId);

    if (!dryRun) {
      const months = [...(await audit.monthsInDefault())];
      for (let i = 0; i <= MONTHS_AHEAD; i++) months.push(monthStart(asOf, i));
      await audit.ensurePartitions(months);
    }
    let deleted = 0;
    let dropped = 0;
    const defaultCutoff = auditCutoff(asOf, DEFAULT_AUDIT_MONTHS);
    // A dry run drops nothing, so the months it would drop before this one still hold events.
    let previewFrom: Date | null = null;
    for (const p of await audit.partitions()) {
      // No chain keeps its events for less than 30 days.
      if (p.rangeEnd > new Date(asOf.getTime() - MIN_AUDIT_DAYS * DAY)) continue;
      const inside = await audit.partitionChains(p, dryRun && previewFrom ? { from: previewFrom } : undefined);
      let longest = DEFAULT_AUDIT_MONTHS;
      let droppable = inside.length > 0 || p.rangeEnd < defaultCutoff;
      for (const c of inside) {
        const { cutoff, months } = await monthsByChain(c.chain, c.workspaceId);
        longest = Math.max(longest, months);
        if (c.holdsHead || c.scattered || !(p.rangeEnd < cutoff)) droppable = false;
      }
      if (!droppable) {
        previewFrom = null;
        continue;
      }
      previewFrom = previewFrom ?? p.rangeStart;
      dropped++;
      if (dryRun) continue; // the chains' expired prefixes below count these events
      deleted += await audit.dropPartition(p, { retentionDays: daysBetween(auditCutoff(asOf, longest), asOf) });
    }
    for (const [chain, { cutoff }] of cutoffs) {
      if (dryRun) {
        deleted += (await audit.expiredPrefix(chain, cutoff)).events;
      } else {
        deleted += await audit.expireChain(chain, cutoff, { retentionDays: daysBetween(cutoff, asOf) });
      }
    }
    const result = {
      rule: 'audit' as ResultRule,
      rowsDeleted: deleted,
      rowsRolledUp: 0,
      partitionsDropped: dropped,
      cutoff: defaultCutoff,
    };
    return { result, cutoffs };
  }

  /**
   * A log table partitioned by month of its time column (the agent run logs): the coming
   * months' partitions are made ahead, months that ended before the cut-off are dropped whole,
   * and the older rows of the month the cut-off falls in are deleted. A dry run counts the same:
   * rows older than the cut-off, and the months that would be dropped, including those whose
   * rows still wait in the default partition (a run gives them their partition first).
   */
  async function monthlyLogTable(
    entry: TableEntry,
    asOf: Date,
    dryRun: boolean,
    window: Window,
  ): Promise<Omit<RunResult, 'retentionClass' | 'tableName'>> {
    const table = entry.table;
    const column = entry.retentionFrom ?? 'created_at';
    const cutoff = windowStart(asOf, window);
    const waiting = await db.system((tx) => repo.monthsInDefault(tx, table, column));
    if (!dryRun) {
      await db.system(async (tx) => {
        const months = [...waiting];
        for (let i = 0; i <= MONTHS_AHEAD; i++) months.push(monthStart(asOf, i));
        for (const m of months) await repo.ensureMonthPartition(tx, table, m);
      });
    }
    const whole = (await db.system((tx) => repo.monthPartitions(tx, table))).filter((p) => p.rangeEnd <= cutoff);
    const older = repo.olderThan(column, cutoff);
    if (dryRun) {
      const pending = waiting.filter((m) => monthStart(m, 1) <= cutoff).length;
      const n = await db.system((tx) => repo.count(tx, table, older));
      return { rule: 'older_than', rowsDeleted: n, rowsRolledUp: 0, partitionsDropped: whole.length + pending, cutoff };
    }
    let n = 0;
    // One transaction per month: each drop holds its lock only for itself.
    for (const p of whole) n += await db.system((tx) => repo.dropRunPartition(tx, table, p.name, cutoff));
    n += await db.system((tx) => repo.delete(tx, table, older));
    return { rule: 'older_than', rowsDeleted: n, rowsRolledUp: 0, partitionsDropped: whole.length, cutoff };
  }

  /** One table of a time-based class: rows older than the window (or expired) go. */
  async function plainTable(
    entry: TableEntry,
    asOf: Date,
    dryRun: boolean,
    window: Window | null,
    chainCutoffs: Map<string, { cutoff: Date }> | null,
  ): Promise<Omit<RunResult, 'retentionClass' | 'tableName'>> {
    const none = { rowsDeleted: 0, rowsRolledUp: 0, partitionsDropped: 0 };
    if (entry.retention === 'until_expiry') {
      const rule = entry.expiredWhen;
      if (!rule) return { rule: 'kept', ...none, cutoff: null };
      const where = rule(asOf);
      const n = await db.system((tx) =>
        dryRun ? repo.count(tx, entry.table, where) : repo.delete(tx, entry.table, where),
      );
      return { rule: 'expired', ...none, rowsDeleted: n, cutoff: null };
    }
    if (!window) return { rule: 'kept', ...none, cutoff: null };
    // Billing records carry balances other rows depend on: only a declared time column applies.
    const column =
      entry.retentionFrom ??
      (entry.retention !== 'billing_7_years' && 'created_at' in entry.columns ? 'created_at' : null);
    if (!column) return { rule: 'kept', ...none, cutoff: null };
    const cutoff = windowStart(asOf, window);
    if (chainCutoffs && 'chain' in entry.columns && chainCutoffs.size > 0) {
      // Audit companions follow their chain's (plan-dependent) cut-off.
      let n = 0;
      for (const [chain, c] of chainCutoffs) {
        const where = repo.olderThanInChain(column, c.cutoff, chain);
        n += await db.system((tx) =>
          dryRun ? repo.count(tx, entry.table, where) : repo.delete(tx, entry.table, where),
        );
      }
      return { rule: 'older_than', ...none, rowsDeleted: n, cutoff };
    }
    const where = repo.olderThan(column, cutoff);
    const n = await db.system((tx) =>
      dryRun ? repo.count(tx, entry.table, where) : repo.delete(tx, entry.table, where),
    );
    return { rule: 'older_than', ...none, rowsDeleted: n, cutoff };
  }

  async function applyAll(asOf: Date, dryRun: boolean): Promise<RunResult[]> {
    const map = deps.dataMap();
    const results: RunResult[] = [];
    for (const policy of RETENTION_POLICIES) {
      const entries = map.filter((t) => t.retention === policy.class);
      // Tables with their own retention shape go first: their companions depend on them.
      const ordered = [...entries].sort((a, b) => special(b.table) - special(a.table));
      let chainCutoffs: Map<string, { cutoff: Date }> | null = null;
      const ledgerTables = entries.filter((e) => deps.ledger.tables.includes(e.table)).map((e) => e.table);
      for (const entry of ordered) {
        const base = { retentionClass: policy.class, tableName: entry.table };
        if (ledgerTables.includes(entry.table)) {
          // Below, once the rows that may name its transactions (payments, ...) went.
        } else if (entry.table === 'usage_events') {
          results.push({ ...base, ...(await usageEvents(asOf, dryRun)) });
        } else if (MONTHLY_LOGS.has(entry.table) && policy.window) {
          results.push({ ...base, ...(await monthlyLogTable(entry, asOf, dryRun, policy.window)) });
        } else if (entry.table === 'audit_events') {
          const { result, cutoffs } = await auditEvents(asOf, dryRun);
          chainCutoffs = cutoffs;
          results.push({ ...base, ...result });
        } else if (entry.table === 'audit_checkpoints' || entry.table === 'audit_chain_heads') {
          // Checkpoints before a chain's new anchor and the anchors themselves move with the events.
          results.push({
            ...base,
            rule: 'with_events',
            rowsDeleted: 0,
            rowsRolledUp: 0,
            partitionsDropped: 0,
            cutoff: null,
          });
        } else {
          results.push({ ...base, ...(await plainTable(entry, asOf, dryRun, policy.window, chainCutoffs)) });
        }
      }
      if (ledgerTables.length > 0 && policy.window) {
        const cutoff = windowStart(asOf, policy.window);
        for (const r of await deps.ledger.expire(cutoff, dryRun)) {
          if (!ledgerTables.includes(r.table)) continue;
          results.push({
            retentionClass: policy.class,
            tableName: r.table,
            rule: r.rule,
            rowsDeleted: r.rowsDeleted,
            rowsRolledUp: r.rowsRolledUp,
            partitionsDropped: 0,
            cutoff,
          });
        }
      }
    }
    return results;
  }

  return {
    /**
     * One retention run over every class of the data map, recorded with its results.
     *
     * @example await retention.run({ dryRun: true, asOf: new Date('2027-06-01'), trigger: 'operator', actor });
     */
    async run(input: RunInput): Promise<RunView> {
      const now = clock.now();
      const asOf = input.asOf ?? now;
      if (!input.dryRun && asOf.getTime() > now.getTime()) {
        throw new AppError(
          'retention_as_of_future',
          'A retention run that removes data cannot be dated in the future: preview it with a dry run.',
        );
      }
      const run: RetentionRunRow = {
        id: newId('rtn'),
        asOf,
        dryRun: input.dryRun,
        trigger: input.trigger,
        startedBy: input.actor?.type === 'user' ? input.actor.userId : null,
        startedAt: now,
        finishedAt: null,
        status: 'running',
        errorCode: null,
      };
      await db.system(async (tx) => {
        if (!input.dryRun) await repo.failStaleRuns(tx, new Date(now.getTime() - STALE_RUN_MS), now);
        await repo.insertRun(tx, run).catch((err: unknown) => {
          if (isUniqueViolation(err)) {
            throw new AppError(
              'retention_running',
              'Another retention run is removing data now: try again when it ends.',
            );
          }
          throw err;
        });
      });
      let results: RunResult[];
      try {
        results = await applyAll(asOf, input.dryRun);
      } catch (err) {
        deps.logger.error({ runId: run.id, err: errorName(err) }, 'Retention run failed');
        await db.system((tx) =>
          repo.finishRun(tx, run.id, { status: 'failed', finishedAt: clock.now(), errorCode: 'retention_failed' }),
        );
        throw err;
      }
      const finishedAt = clock.now();
      await db.system(async (tx) => {
        await repo.insertResults(
          tx,
          results.map((r) => ({ ...r, runId: run.id })),
        );
        await repo.finishRun(tx, run.id, { status: 'completed', finishedAt, errorCode: null });
        await deps.audit.record(tx, {
          workspaceId: null,
          actor: input.actor ?? { type: 'system', name: 'retention' },
          action: 'privacy.retention_run',
          target: { type: 'retention_run', id: run.id },
          diff: {
            dryRun: input.dryRun,
            asOf: asOf.toISOString(),
            rowsDeleted: results.reduce((n, r) => n + r.rowsDeleted, 0),
            rowsRolledUp: results.reduce((n, r) => n + r.rowsRolledUp, 0),
            partitionsDropped: results.reduce((n, r) => n + r.partitionsDropped, 0),
          },
        });
      });
      deps.logger.info(
        { runId: run.id, dryRun: input.dryRun, tables: results.length },
        input.dryRun ? 'Retention dry run done' : 'Retention run done',
      );
      return { ...run, finishedAt, status: 'completed', results };
    },

    /** The latest runs, newest first. */
    async listRuns(limit = 20): Promise<RunView[]> {
      const rows = await db.system((tx) => repo.listRuns(tx, limit));
      return rows.map(({ results, ...r }) => ({
        ...r,
        results: results.map(({ runId: _runId, ...x }) => x),
      }));
    },
  };
}

export type RetentionService = ReturnType<typeof retentionService>;

/**
 * Log tables partitioned by month of their time column (migrations/0039: agent run steps and
 * events, by their run's creation), whose whole months `berth_drop_run_partition` drops.
 * They go before the rest of their class: deleting a run cascades to its steps and events,
 * which would then be removed without being counted.
 */
const MONTHLY_LOGS: ReadonlySet<string> = new Set(['agent_run_steps', 'agent_run_events']);
const SPECIAL = new Set(['usage_events', 'audit_events', ...MONTHLY_LOGS]);
function special(table: string): number {
  return SPECIAL.has(table) ? 1 : 0;
}

function errorName(err: unknown): string {
  return err instanceof AppError ? err.code : err instanceof Error ? err.name : 'unknown';
}
