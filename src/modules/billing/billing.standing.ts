import { type Clock, DAY } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Actor, Scope } from '../../platform/http/context.ts';
import type { Logger } from '../../platform/logger.ts';
import { microsToUsd } from '../../platform/money.ts';
import type { AuditService } from '../audit/index.ts';
import type { WorkspaceEvent, WorkspacesService } from '../workspaces/index.ts';
import type { BillingNotice, BillingNotices } from './billing.notices.ts';
import type { BillingRepo } from './billing.repo.ts';
import type { StandingRepo } from './billing.standing.repo.ts';
import type { StandingRow, StandingState } from './billing.standing.tables.ts';

/** How long before the grace period ends the owners are warned (the exhaustion notice names the date too). */
export const GRACE_WARNING_DAYS = 7;

/**
 * The event the agents and deployments module handles to delete deployments' runtime data
 * (agent configurations are kept) when an out-of-credits workspace's grace period ends.
 */
export type GraceExpiredEvent = {
  type: 'billing.grace_expired';
  workspaceId: string;
  /** When the workspace ran out of credits (the start of this episode). */
  exhaustedAt: Date;
  /** The end of the grace period, as the owners were told. */
  graceEndsAt: Date;
};

/**
 * Runs inside the transaction (bound to the workspace) that records the expiry: what it
 * writes commits with it, and a handler that throws rolls the expiry back (retried next run).
 */
export type GraceExpiredHandler = (event: GraceExpiredEvent, tx: Database) => Promise<void>;

export type StandingSettings = {
  /** False when credits are off (BERTH_CREDITS=unlimited): every workspace may work. */
  enabled: boolean;
  /** Credits (available plus held) below this: exhausted. At least 1. */
  exhaustedBelowMicros: number;
  /** Credits below this (and not exhausted): low. 0 for no low-balance warning. */
  lowBelowMicros: number;
  /** 0: the grace period never ends (nothing is deleted). */
  graceDays: number;
  /** Where owners add credits (the dashboard's billing page). */
  billingUrl: string;
};

export type StandingView = {
  workspaceId: string;
  state: StandingState;
  since: string | null;
  lowBalanceNotifiedAt: string | null;
  exhaustedAt: string | null;
  exhaustedNotifiedAt: string | null;
  graceEndsAt: string | null;
  graceWarnedAt: string | null;
  graceExpiredAt: string | null;
  resumedAt: string | null;
};

export type StandingCheck = { workspaces: number; changed: number; warned: number; expired: number; failed: number };

type Deps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: StandingRepo;
  balances: Pick<BillingRepo, 'balancesBelow' | 'getBalance'>;
  audit: Pick<AuditService, 'record'>;
  workspaces: Pick<WorkspacesService, 'statusOf'>;
  notices: Pick<BillingNotices, 'send'>;
  clock: Clock;
  logger: Pick<Logger, 'info' | 'error'>;
  settings: StandingSettings;
};

const STANDING_ACTOR: Actor = { type: 'system', name: 'credit-standing' };
const OWNERS = ['owner'] as const;

const iso = (d: Date | null) => (d ? d.toISOString() : null);
/** A date for people: `2026-02-01 09:30 UTC`. */
const when = (d: Date) => `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
const later = (a: Date, b: Date) => (a.getTime() >= b.getTime() ? a : b);

/**
 * A workspace's credit standing, from its credits (available plus held, so calls in flight
 * do not make it flap): `exhausted` below `exhaustedBelowMicros`, `low` below
 * `lowBelowMicros`, otherwise `ok`.
 */
export function standingOf(
  creditsMicros: number,
  s: Pick<StandingSettings, 'exhaustedBelowMicros' | 'lowBelowMicros'>,
) {
  if (creditsMicros < s.exhaustedBelowMicros) return 'exhausted' as const;
  if (creditsMicros < s.lowBelowMicros) return 'low' as const;
  return 'ok' as const;
}

/**
 * Credit standing and the suspension grace period. The `billing.credit-standing` job
 * (`check`, every minute) compares balances with the stored standing, off the gateway's
 * path; each change is written in a transaction bound to the workspace that re-reads the
 * balance, and its notice is mailed to the owners after the commit, once per episode (a
 * dip below the low threshold; a run out of credits, with its "resumed" notice when credits
 * come back). An exhausted workspace's grace period ends `graceDays` after it ran out (the
 * owners are warned GRACE_WARNING_DAYS before); then `billing.grace_expired` goes to the
 * registered handlers, audited, once per episode. Credits back before that cancel it.
 */
export function creditStandingService(deps: Deps) {
  const { db, repo, clock, settings: s } = deps;
  const handlers: GraceExpiredHandler[] = [];

  const creditsOf = (b: { availableMicros: number; heldMicros: number } | null) =>
    b ? b.availableMicros + b.heldMicros : 0;

  /** The grace period's end: as the owners were told, or as the setting makes it; null when nothing is deleted. */
  function graceEnd(row: StandingRow): Date | null {
    if (s.graceDays === 0 || !row.exhaustedAt) return null;
    return row.graceEndsAt ?? new Date(row.exhaustedAt.getTime() + s.graceDays * DAY);
  }

  function toView(workspaceId: string, row: StandingRow | null): StandingView {
    const exhausted = row?.state === 'exhausted';
    return {
      workspaceId,
      state: row?.state ?? 'ok',
      since: iso(row?.since ?? null),
      lowBalanceNotifiedAt: iso(row?.lowNotifiedAt ?? null),
      exhaustedAt: iso(row?.exhaustedAt ?? null),
      exhaustedNotifiedAt: iso(row?.exhaustedNotifiedAt ?? null),
      // Only while exhausted: the end that passed (expired), or the one to come (null when nothing is deleted).
      graceEndsAt: row && exhausted ? iso(row.graceExpiredAt ? row.graceEndsAt : graceEnd(row)) : null,
      graceWarnedAt: iso(row?.graceWarnedAt ?? null),
      graceExpiredAt: iso(row?.graceExpiredAt ?? null),
      resumedAt: iso(row?.resumedAt ?? null),
    };
  }

  const notice = (workspaceId: string, tag: string, subject: string, lines: string[]): BillingNotice => ({
    workspaceId,
    roles: OWNERS,
    subject,
    text: `${lines.join('\n\n')}\n\nAdd credits: ${s.billingUrl}\n`,
    tag,
  });

  const deletionLine = (end: Date) =>
    `If no credits are added by ${when(end)}, the runtime data of this workspace's deployments will be deleted. Agent configurations are kept.`;

  const notices = {
    exhausted: (ws: string, end: Date | null) =>
      notice(ws, 'billing.exhausted', 'Your Berth workspace is out of credits', [
        `Workspace ${ws} has run out of credits. Model calls are refused (402 insufficient_credits) and agents do not start new runs until credits are added.`,
        ...(end ? [deletionLine(end)] : []),
      ]),
    graceWarning: (ws: string, end: Date) =>
      notice(ws, 'billing.grace_warning', `Deployment data of your Berth workspace will be deleted on ${when(end)}`, [
        `Workspace ${ws} is still out of credits.`,
        deletionLine(end),
      ]),
    resumed: (ws: string, creditsMicros: number, low: boolean) =>
      notice(ws, 'billing.resumed', 'Credits are back: your Berth workspace is running again', [
        `Workspace ${ws} has credits again (${microsToUsd(creditsMicros)} USD): model calls and agent runs work again, and nothing will be deleted.`,
        ...(low ? ['The balance is still low: add credits to keep working without interruption.'] : []),
      ]),
    low: (ws: string, creditsMicros: number) =>
      notice(ws, 'billing.low_balance', "Your Berth workspace's credits are running low", [
        `Workspace ${ws} has ${microsToUsd(creditsMicros)} USD of credits left, less than ${microsToUsd(s.lowBelowMicros)} USD.`,
        'When they run out, model calls are refused and agents stop starting runs.',
      ]),
  };

  async function send(n: BillingNotice | null) {
    if (n) await deps.notices.send(n);
  }

  /** Whether the workspace still exists; a deleted one's standing is closed (its balance row outlives it). */
  async function exists(workspaceId: string): Promise<boolean> {
    if ((await deps.workspaces.statusOf(workspaceId)) !== null) return true;
    await db.tenant(workspaceId, (tx) => repo.close(tx, workspaceId, clock.now()));
    return false;
  }

  /** Moves the workspace to the state its live balance says, when that differs; the notice to send. */
  async function transition(workspaceId: string): Promise<BillingNotice | null> {
    return db.tenant(workspaceId, async (tx) => {
      const now = clock.now();
      const row = await repo.lock(tx, workspaceId, now);
      if (row.closedAt) return null;
      const credits = creditsOf(await deps.balances.getBalance(tx, workspaceId));
      const to = standingOf(credits, s);
      const from = row.state;
      if (to === from) return null;
      deps.logger.info({ workspaceId, from, to }, 'credit standing changed');
      if (to === 'exhausted') {
        const end = s.graceDays > 0 ? new Date(now.getTime() + s.graceDays * DAY) : null;
        // A grace period shorter than the warning's lead: the exhaustion notice is the warning.
        const warned = end && end.getTime() - GRACE_WARNING_DAYS * DAY <= now.getTime() ? now : null;
        await repo.update(tx, workspaceId, {
          state: to,
          since: now,
          exhaustedAt: now,
          exhaustedNotifiedAt: now,
          graceEndsAt: end,
          graceWarnedAt: warned,
          graceExpiredAt: null,
          resumedAt: null,
          updatedAt: now,
        });
        return notices.exhausted(workspaceId, end);
      }
      if (from === 'exhausted') {
        // The resumed notice says when the balance is still low: that dip needs no warning of its own.
        await repo.update(tx, workspaceId, {
          state: to,
          since: now,
          resumedAt: now,
          lowNotifiedAt: to === 'low' ? (row.lowNotifiedAt ?? now) : null,
          updatedAt: now,
        });
        return notices.resumed(workspaceId, credits, to === 'low');
      }
      if (to === 'low') {
        await repo.update(tx, workspaceId, { state: to, since: now, lowNotifiedAt: now, updatedAt: now });
        return notices.low(workspaceId, credits);
      }
      await repo.update(tx, workspaceId, { state: to, since: now, lowNotifiedAt: null, updatedAt: now });
      return null;
    });
  }

  /** What the grace period of an exhausted workspace needs now, judged from the job's snapshot. */
  function graceStep(row: StandingRow, now: Date): 'warn' | 'expire' | null {
    const end = graceEnd(row);
    if (!end || row.graceExpiredAt) return null;
    if (!row.graceWarnedAt) return now.getTime() >= end.getTime() - GRACE_WARNING_DAYS * DAY ? 'warn' : null;
    return row.graceEndsAt && now.getTime() >= row.graceEndsAt.getTime() ? 'expire' : null;
  }

  /**
   * Warns the owners, or ends the grace period, in a transaction bound to the workspace that
   * locks its standing row (so it happens once). A warning that goes out late moves the end so the
   * owners always have GRACE_WARNING_DAYS.
   */
  async function advanceGrace(workspaceId: string): Promise<{ notice: BillingNotice | null; expired: boolean }> {
    return db.tenant(workspaceId, async (tx) => {
      const now = clock.now();
      const row = await repo.lock(tx, workspaceId, now);
      const step = row.state === 'exhausted' && !row.closedAt ? graceStep(row, now) : null;
      if (!step) return { notice: null, expired: false };
      // Read, not locked: the grace handlers may take a while, and the balance row is what
      // every call of the workspace (and its replica's ledger batches) waits on. A top-up
      // committed before this read cancels the expiry; one racing the last moment does not.
      const balance = await deps.balances.getBalance(tx, workspaceId);
      if (standingOf(creditsOf(balance), s) !== 'exhausted') return { notice: null, expired: false };
      if (step === 'warn') {
        const end = later(graceEnd(row) ?? now, new Date(now.getTime() + GRACE_WARNING_DAYS * DAY));
        await repo.update(tx, workspaceId, { graceEndsAt: end, graceWarnedAt: now, updatedAt: now });
        return { notice: notices.graceWarning(workspaceId, end), expired: false };
      }
      const graceEndsAt = row.graceEndsAt ?? now;
      const exhaustedAt = row.exhaustedAt ?? row.since;
      const event: GraceExpiredEvent = { type: 'billing.grace_expired', workspaceId, exhaustedAt, graceEndsAt };
      for (const handle of handlers) await handle(event, tx);
      await deps.audit.record(tx, {
        workspaceId,
        actor: STANDING_ACTOR,
        action: 'billing.grace_expired',
        target: { type: 'workspace', id: workspaceId },
        diff: { exhaustedAt: exhaustedAt.toISOString(), graceEndsAt: graceEndsAt.toISOString() },
      });
      await repo.update(tx, workspaceId, { graceExpiredAt: now, updatedAt: now });
      deps.logger.info({ workspaceId }, 'credit grace period expired');
      return { notice: null, expired: true };
    });
  }

  return {
    /**
     * The job: every workspace whose credits are below a threshold or whose stored standing
     * is not `ok` is compared, changed, warned or expired as due. One workspace's failure is
     * logged and does not stop the others; the run fails at the end if any did (retried).
     */
    async check(): Promise<StandingCheck> {
      const report: StandingCheck = { workspaces: 0, changed: 0, warned: 0, expired: 0, failed: 0 };
      if (!s.enabled) return report;
      const threshold = Math.max(s.exhaustedBelowMicros, s.lowBelowMicros);
      const { balances, rows } = await db.system(async (tx) => {
        const balances = await deps.balances.balancesBelow(tx, threshold);
        const rows = await repo.tracked(
          tx,
          balances.map((b) => b.workspaceId),
        );
        return { balances, rows };
      });
      const credits = new Map(balances.map((b) => [b.workspaceId, creditsOf(b)]));
      const stored = new Map(rows.map((r) => [r.workspaceId, r]));
      const ids = [...new Set([...credits.keys(), ...stored.keys()])].sort();
      const now = clock.now();
      for (const workspaceId of ids) {
        const row = stored.get(workspaceId) ?? null;
        if (row?.closedAt) continue;
        report.workspaces++;
        const target = standingOf(credits.get(workspaceId) ?? Number.MAX_SAFE_INTEGER, s);
        const step = target === row?.state && row.state === 'exhausted' ? graceStep(row, now) : null;
        if (target === (row?.state ?? 'ok') && !step) continue;
        try {
          if (!(await exists(workspaceId))) continue;
          if (target !== (row?.state ?? 'ok')) {
            const n = await transition(workspaceId);
            if (n) report.changed++;
            await send(n);
          } else {
            const done = await advanceGrace(workspaceId);
            if (done.notice) report.warned++;
            if (done.expired) report.expired++;
            await send(done.notice);
          }
        } catch (err) {
          report.failed++;
          deps.logger.error(
            { workspaceId, err: err instanceof AppError ? err.code : (err as Error).name },
            'credit standing check failed for a workspace',
          );
        }
      }
      if (report.failed > 0) throw new Error(`credit standing: ${report.failed} workspace(s) failed; see the log`);
      return report;
    },

    /**
     * What agents call before starting a run: refuses with `insufficient_credits` when the
     * workspace's live credits (available plus held) are below BERTH_EXHAUSTED_BALANCE_USD,
     * or when `minimumMicros` is given and more than is available. It reads the balance, not
     * the stored standing, so a top-up lifts it at once.
     *
     * @example await billing.canStartWork(scope.workspaceId, { minimumMicros: firstCallWorstCase });
     */
    async canStartWork(
      workspaceId: string,
      opts: { minimumMicros?: number } = {},
    ): Promise<{ availableMicros: number; heldMicros: number }> {
      if (!s.enabled) return { availableMicros: 0, heldMicros: 0 };
      const balance = await db.tenant(workspaceId, (tx) => deps.balances.getBalance(tx, workspaceId));
      const availableMicros = balance?.availableMicros ?? 0;
      const heldMicros = balance?.heldMicros ?? 0;
      if (standingOf(availableMicros + heldMicros, s) === 'exhausted') {
        throw new AppError('insufficient_credits', 'The workspace is out of credits: add credits to start work.');
      }
      if (opts.minimumMicros !== undefined && availableMicros < opts.minimumMicros) {
        throw new AppError('insufficient_credits', 'The workspace does not have enough credits available for this.');
      }
      return { availableMicros, heldMicros };
    },

    /** Registers a handler of `billing.grace_expired` (the agents/deployments module's runtime-data deletion). */
    onGraceExpired(handler: GraceExpiredHandler): void {
      handlers.push(handler);
    },

    /** A workspace's standing as the job last found it (`ok`, with no dates, for one never below a threshold). */
    async standing(scope: Scope): Promise<StandingView> {
      const row = await db.tenant(scope.workspaceId, (tx) => repo.find(tx, scope.workspaceId));
      return toView(scope.workspaceId, row?.closedAt ? null : row);
    },

    /** Operators: workspaces the job tracks (every one that fell below a threshold), optionally in one state. */
    async list(query: { state?: StandingState | undefined; cursor?: string | undefined; limit?: number | undefined }) {
      const limit = query.limit ?? 100;
      const rows = await db.system((tx) => repo.list(tx, { state: query.state, after: query.cursor, limit }));
      const data = rows.map((r) => toView(r.workspaceId, r));
      return { data, nextCursor: rows.length === limit ? (rows[rows.length - 1]?.workspaceId ?? null) : null };
    },

    /** A deleted workspace's standing is closed in the deleting transaction: no notices, no grace period. */
    async onWorkspaceEvent(event: WorkspaceEvent, tx: Database) {
      if (event.type === 'workspace.deleting') await repo.close(tx, event.workspaceId, clock.now());
    },
  };
}

export type CreditStandingService = ReturnType<typeof creditStandingService>;
