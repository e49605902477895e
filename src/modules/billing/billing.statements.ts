import { type Clock, DAY, HOUR } from '../../platform/clock.ts';
import { type Db, isUniqueViolation } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Scope } from '../../platform/http/context.ts';
import type { Logger } from '../../platform/logger.ts';
import { microsToUsd } from '../../platform/money.ts';
import type { UsageAggregate, UsageGroup } from '../gateway/index.ts';
import { addMonths, parseDay, parsePeriod, periodBounds, periodOf } from './billing.calendar.ts';
import { renderStatementHtml, renderStatementPdf } from './billing.render.ts';
import type { MonthFigures, StatementsRepo } from './billing.statements.repo.ts';
import type { StatementSummary, StatementView, UsageBreakdown } from './billing.statements.schemas.ts';
import type { StatementRow, UsageLine } from './billing.statements.tables.ts';

/** The gateway's usage aggregates of a workspace (`usageAggregates` of the gateway module). */
export type UsageSource = (
  workspaceId: string,
  f: { since: Date; until: Date; groupBy: UsageGroup },
) => Promise<UsageAggregate[]>;

/** A month is closed once this long after its end: movements and usage events of its last moments are in by then. */
export const CLOSE_DELAY_MS = HOUR;
/** The longest range the usage-cost breakdown answers. */
export const MAX_USAGE_DAYS = 400;

export function statementNumber(prefix: string, period: string, seq: number): string {
  return `${prefix}-${period}-${String(seq).padStart(6, '0')}`;
}

function toLine(a: UsageAggregate): UsageLine {
  return {
    name: a.group,
    requests: a.requests,
    errors: a.errors,
    inputTokens: a.inputTokens,
    outputTokens: a.outputTokens,
    cachedTokens: a.cachedTokens,
    reasoningTokens: a.reasoningTokens,
    costMicros: a.costMicros,
  };
}

/** Movements net of their signs: what the month did to the balance, as the platform accounts saw it. */
function movementsNet(f: {
  granted: number;
  bought: number;
  refunded: number;
  adjusted: number;
  expired: number;
  used: number;
}): number {
  return f.granted + f.bought - f.refunded + f.adjusted - f.expired - f.used;
}

function usageNote(differenceMicros: number): string | null {
  if (differenceMicros === 0) return null;
  const more = differenceMicros > 0 ? 'more' : 'less';
  return (
    `The usage events' metered cost is ${microsToUsd(Math.abs(differenceMicros))} USD ${more} than the ledger settled. ` +
    'The ledger is what was charged: a call is never charged beyond the credits available, calls made while ' +
    'credits were not metered are not charged, and a call that ended as the month did can fall on either side.'
  );
}

type Computed = {
  workspaceId: string;
  period: string;
  start: Date;
  end: Date;
  opening: number;
  closing: number;
  figures: MonthFigures;
  reconciled: boolean;
  byModel: UsageLine[];
  byKey: UsageLine[];
};

type Deps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: StatementsRepo;
  clock: Clock;
  logger: Logger;
  usage: UsageSource;
  /** Null when the workspace no longer exists (its statements are kept: billing records outlive it). */
  workspaceExists(workspaceId: string): Promise<boolean>;
  /** The workspace's name for documents (null when it no longer exists). */
  workspaceName(workspaceId: string): Promise<string | null>;
  /** Statement numbers start with this (BERTH_INVOICE_PREFIX). */
  numberPrefix: string;
  /** Who issues statements, printed on them (BERTH_INVOICE_ISSUER). */
  issuer: string | null;
};

/**
 * Monthly statements. A month's figures come from the ledger (credits granted, bought,
 * refunded, adjusted, expired and used, opening and closing balance) and its usage
 * breakdown from the gateway's usage events; the current month is a draft computed on
 * request, and each ended month is closed once, by the `billing.statements` job, into a
 * numbered statement that never changes (kept 7 years).
 *
 * @example const march = await statements.statement(scope, '2026-03');
 */
export function statementsService(deps: Deps) {
  const { db, repo, clock } = deps;

  /** A month's statement as its ledger and usage events stand now. */
  async function compute(workspaceId: string, period: string): Promise<Computed> {
    const { start, end } = periodBounds(period);
    const current = period === periodOf(clock.now());
    const { opening, figures } = await db.tenant(workspaceId, async (tx) => {
      const previous = await repo.findStatement(tx, workspaceId, addMonths(period, -1));
      return {
        opening: previous ? previous.closingMicros : await repo.balanceBefore(tx, workspaceId, start),
        figures: await repo.monthFigures(tx, workspaceId, start, end),
      };
    });
    const [byModel, byKey] = await Promise.all([
      deps.usage(workspaceId, { since: start, until: end, groupBy: 'model' }),
      deps.usage(workspaceId, { since: start, until: end, groupBy: 'key' }),
    ]);
    const closing = opening + figures.accountsDelta;
    // Double entry: the platform side of the month's movements must equal the workspace side;
    // for the current month the balance row must also hold the closing figure.
    const balanced = movementsNet(figures) === figures.accountsDelta;
    const matchesBalance = !current || closing === (figures.balanceNow ?? 0);
    return {
      workspaceId,
      period,
      start,
      end,
      opening,
      closing,
      figures,
      reconciled: balanced && matchesBalance,
      byModel: byModel.map(toLine),
      byKey: byKey.map(toLine),
    };
  }

  function closedView(row: StatementRow): StatementView {
    const difference = row.usageCostMicros - row.usedMicros;
    const net = movementsNet({
      granted: row.grantedMicros,
      bought: row.boughtMicros,
      refunded: row.refundedMicros,
      adjusted: row.adjustedMicros,
      expired: row.expiredMicros,
      used: row.usedMicros,
    });
    return {
      workspaceId: row.workspaceId,
      period: row.period,
      number: row.number,
      status: 'closed',
      periodStart: row.periodStart.toISOString(),
      periodEnd: row.periodEnd.toISOString(),
      asOf: row.periodEnd.toISOString(),
      closedAt: row.closedAt.toISOString(),
      currency: 'usd',
      openingBalanceMicros: row.openingMicros,
      grantedMicros: row.grantedMicros,
      boughtMicros: row.boughtMicros,
      refundedMicros: row.refundedMicros,
      adjustedMicros: row.adjustedMicros,
      expiredMicros: row.expiredMicros,
      usedMicros: row.usedMicros,
      closingBalanceMicros: row.closingMicros,
      settlements: row.settlements,
      reconciled: row.openingMicros + net === row.closingMicros,
      usage: {
        requests: row.usageRequests,
        costMicros: row.usageCostMicros,
        matchesLedger: difference === 0,
        differenceMicros: difference,
        note: usageNote(difference),
        byModel: row.breakdown.models,
        byKey: row.breakdown.keys,
      },
    };
  }

  function draftView(c: Computed): StatementView {
    const now = clock.now();
    const cost = c.byModel.reduce((n, l) => n + l.costMicros, 0);
    const difference = cost - c.figures.used;
    return {
      workspaceId: c.workspaceId,
      period: c.period,
      number: null,
      status: 'draft',
      periodStart: c.start.toISOString(),
      periodEnd: c.end.toISOString(),
      asOf: new Date(Math.min(now.getTime(), c.end.getTime())).toISOString(),
      closedAt: null,
      currency: 'usd',
      openingBalanceMicros: c.opening,
      grantedMicros: c.figures.granted,
      boughtMicros: c.figures.bought,
      refundedMicros: c.figures.refunded,
      adjustedMicros: c.figures.adjusted,
      expiredMicros: c.figures.expired,
      usedMicros: c.figures.used,
      closingBalanceMicros: c.closing,
      settlements: c.figures.settlements,
      reconciled: c.reconciled,
      usage: {
        requests: c.byModel.reduce((n, l) => n + l.requests, 0),
        costMicros: cost,
        matchesLedger: difference === 0,
        differenceMicros: difference,
        note: usageNote(difference),
        byModel: c.byModel,
        byKey: c.byKey,
      },
    };
  }

  async function statementOf(workspaceId: string, period: string): Promise<StatementView> {
    const { closed, carried } = await db.tenant(workspaceId, async (tx) => ({
      closed: await repo.findStatement(tx, workspaceId, period),
      carried: await repo.carriedForwardAt(tx, workspaceId),
    }));
    if (closed) return closedView(closed);
    // The ledger of a month up to the cut-off of billing retention is gone: no draft of it.
    if (carried && period <= periodOf(carried)) {
      throw new AppError('not_found', 'That month is past the 7-year retention of billing records.');
    }
    return draftView(await compute(workspaceId, period));
  }

  /**
   * Closes one month of one workspace, once: its figures are computed, numbered with the
   * month's next sequence number and stored. A month closed already (by this run or another
   * worker) is left as it is.
   */
  async function closeMonth(workspaceId: string, period: string): Promise<{ created: boolean; number: string }> {
    const seen = await db.tenant(workspaceId, (tx) => repo.findStatement(tx, workspaceId, period));
    if (seen) return { created: false, number: seen.number };
    const s = draftView(await compute(workspaceId, period));
    for (let attempt = 0; ; attempt++) {
      try {
        // System scope: the sequence counts the month's statements of every workspace.
        return await db.system(async (tx) => {
          const again = await repo.findStatement(tx, workspaceId, period);
          if (again) return { created: false, number: again.number };
          const seq = await repo.nextSeq(tx, period);
          const number = statementNumber(deps.numberPrefix, period, seq);
          await repo.insertStatement(tx, {
            workspaceId,
            period,
            number,
            seq,
            periodStart: new Date(s.periodStart),
            periodEnd: new Date(s.periodEnd),
            openingMicros: s.openingBalanceMicros,
            grantedMicros: s.grantedMicros,
            boughtMicros: s.boughtMicros,
            refundedMicros: s.refundedMicros,
            adjustedMicros: s.adjustedMicros,
            expiredMicros: s.expiredMicros,
            usedMicros: s.usedMicros,
            closingMicros: s.closingBalanceMicros,
            settlements: s.settlements,
            usageCostMicros: s.usage.costMicros,
            usageRequests: s.usage.requests,
            breakdown: { models: s.usage.byModel, keys: s.usage.byKey },
            closedAt: clock.now(),
          });
          if (!s.reconciled) {
            deps.logger.error(
              { workspaceId, period },
              'billing: a closed statement does not reconcile with its ledger',
            );
          }
          return { created: true, number };
        });
      } catch (err) {
        // Another worker took the number or closed the month meanwhile: look again.
        if (attempt < 4 && isUniqueViolation(err)) continue;
        throw err;
      }
    }
  }

  /** The months of a workspace still to close: after its last statement (or from its first activity) to `last`. */
  async function monthsToClose(workspaceId: string, lastPeriod: string | null, lastClosable: string) {
    const { span, planStart, carried } = await db.tenant(workspaceId, async (tx) => ({
      span: await repo.transactionSpan(tx, workspaceId),
      planStart: await repo.firstPlanStart(tx, workspaceId),
      carried: await repo.carriedForwardAt(tx, workspaceId),
    }));
    let from = lastPeriod ? addMonths(lastPeriod, 1) : null;
    if (!from) {
      const starts = [span.first, planStart].filter((d): d is Date => d !== null).map((d) => d.getTime());
      if (starts.length === 0) return [];
      from = periodOf(new Date(Math.min(...starts)));
    }
    // Months up to the one retention carried the ledger forward in are past it: no statement now.
    const afterCarried = carried ? addMonths(periodOf(carried), 1) : null;
    if (afterCarried && from < afterCarried) from = afterCarried;
    let to = lastClosable;
    // A deleted workspace's statements stop with its last movement.
    if (!(await deps.workspaceExists(workspaceId))) {
      if (!span.last) return [];
      const lastActive = periodOf(span.last);
      if (lastActive < to) to = lastActive;
    }
    const months: string[] = [];
    for (let p = from; p <= to; p = addMonths(p, 1)) months.push(p);
    return months;
  }

  return {
    statement: (scope: Scope, periodText: string) =>
      statementOf(scope.workspaceId, parsePeriod(periodText, clock.now())),

    /** A statement as a printable HTML page or a PDF, with the file name to save it under. */
    async document(scope: Scope, periodText: string, format: 'html' | 'pdf') {
      const s = await statementOf(scope.workspaceId, parsePeriod(periodText, clock.now()));
      const ctx = {
        workspaceName: (await deps.workspaceName(scope.workspaceId)) ?? scope.workspaceId,
        issuer: deps.issuer,
      };
      const filename = `${s.number ?? `statement-${s.period}-draft`}.${format}`;
      return format === 'html'
        ? { filename, body: renderStatementHtml(s, ctx) }
        : { filename, body: renderStatementPdf(s, ctx) };
    },

    /** Closed statements, newest first; the first page starts with the current month's draft. */
    async list(scope: Scope, q: { cursor?: string | undefined; limit?: number | undefined }) {
      const limit = q.limit ?? 24;
      const now = clock.now();
      if (q.cursor !== undefined && !/^\d{4}-\d{2}$/.test(q.cursor)) {
        throw new AppError('invalid_period', 'The cursor is the last period of the previous page (YYYY-MM).');
      }
      const rows = await db.tenant(scope.workspaceId, (tx) =>
        repo.listStatements(tx, scope.workspaceId, { before: q.cursor, limit }),
      );
      const data: StatementSummary[] = rows.map((r) => summary(closedView(r)));
      const current = periodOf(now);
      if (q.cursor === undefined && rows[0]?.period !== current) {
        data.unshift(summary(draftView(await compute(scope.workspaceId, current))));
      }
      return { data, nextCursor: rows.length === limit ? (rows[rows.length - 1]?.period ?? null) : null };
    },

    closeMonth,

    /**
     * Closes every ended month not closed yet, for every workspace (the daily job). Returns
     * how many statements it created; a workspace that fails is logged and the others go on,
     * then the run fails (and is retried: closing is idempotent).
     */
    async closeDue(): Promise<number> {
      const lastClosable = addMonths(periodOf(new Date(clock.now().getTime() - CLOSE_DELAY_MS)), -1);
      const candidates = await db.system((tx) => repo.statementCandidates(tx));
      let created = 0;
      let failed = 0;
      for (const c of candidates) {
        if (c.lastPeriod !== null && c.lastPeriod >= lastClosable) continue;
        try {
          for (const period of await monthsToClose(c.workspaceId, c.lastPeriod, lastClosable)) {
            if ((await closeMonth(c.workspaceId, period)).created) created++;
          }
        } catch (err) {
          failed++;
          deps.logger.warn({ workspaceId: c.workspaceId, err: (err as Error).name }, 'billing: statement not closed');
        }
      }
      if (failed > 0) throw new Error(`${failed} workspace(s) could not be closed; the run is retried`);
      return created;
    },

    /** Cost and usage between two days (both included), grouped by day, model, API key or provider. */
    async usage(
      scope: Scope,
      q: { from?: string | undefined; to?: string | undefined; groupBy?: UsageGroup | undefined },
    ): Promise<UsageBreakdown> {
      const now = clock.now();
      const from = q.from === undefined ? periodBounds(periodOf(now)).start : parseDay(q.from, 'from');
      const to = q.to === undefined ? parseDay(now.toISOString().slice(0, 10), 'to') : parseDay(q.to, 'to');
      if (from > to) throw new AppError('invalid_date_range', 'from must not be after to.');
      const days = Math.round((to.getTime() - from.getTime()) / DAY) + 1;
      if (days > MAX_USAGE_DAYS) {
        throw new AppError('invalid_date_range', `A range covers at most ${MAX_USAGE_DAYS} days (this one ${days}).`);
      }
      const groupBy = q.groupBy ?? 'day';
      const data = await deps.usage(scope.workspaceId, {
        since: from,
        until: new Date(to.getTime() + DAY),
        groupBy,
      });
      return {
        workspaceId: scope.workspaceId,
        from: from.toISOString().slice(0, 10),
        to: to.toISOString().slice(0, 10),
        groupBy,
        requests: data.reduce((n, d) => n + d.requests, 0),
        costMicros: data.reduce((n, d) => n + d.costMicros, 0),
        data,
      };
    },
  };
}

function summary(s: StatementView): StatementSummary {
  return {
    workspaceId: s.workspaceId,
    period: s.period,
    number: s.number,
    status: s.status,
    periodStart: s.periodStart,
    periodEnd: s.periodEnd,
    closedAt: s.closedAt,
    openingBalanceMicros: s.openingBalanceMicros,
    closingBalanceMicros: s.closingBalanceMicros,
    boughtMicros: s.boughtMicros,
    usedMicros: s.usedMicros,
    reconciled: s.reconciled,
  };
}

export type StatementsService = ReturnType<typeof statementsService>;
