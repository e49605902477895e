import type { Clock } from '../../platform/clock.ts';
import type { Db } from '../../platform/db/db.ts';
import { AppError, notFound } from '../../platform/errors.ts';
import type { Scope } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import { microsToUsd } from '../../platform/money.ts';
import type { AuditService } from '../audit/index.ts';
import type { KeysService } from '../keys/index.ts';
import type { BudgetsRepo } from './billing.budgets.repo.ts';
import { reachedPct } from './billing.budgets.rules.ts';
import type { BudgetPeriod, BudgetRow } from './billing.budgets.tables.ts';
import { periodEnd, periodStart } from './billing.calendar.ts';
import { MAX_AMOUNT_MICROS } from './billing.ledger.ts';
import type { BillingNotices } from './billing.notices.ts';

export type BudgetView = {
  id: string;
  workspaceId: string;
  keyId: string | null;
  period: BudgetPeriod;
  limitMicros: number;
  /** The current period: settled spending, credits reserved by calls in flight, and when it ends. */
  current: { start: string; end: string; spentMicros: number; heldMicros: number; remainingMicros: number };
  createdAt: string;
  updatedAt: string;
};

type Deps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: BudgetsRepo;
  audit: Pick<AuditService, 'record'>;
  keys: Pick<KeysService, 'getKey'>;
  notices: Pick<BillingNotices, 'send'>;
  clock: Clock;
  /** After a budget was added, changed or removed (this replica's credit leases of the workspace close). */
  onChanged?: (workspaceId: string) => void;
};

/**
 * Budgets: spend limits a workspace sets per day or month, for itself or for one API key.
 * The ledger enforces them when a call reserves its worst case (billing.reservations.ts);
 * here they are set, listed and removed (audited), and their alerts sent.
 */
export function budgetsService(deps: Deps) {
  const { db, repo, clock } = deps;

  async function views(workspaceId: string, rows: BudgetRow[]): Promise<BudgetView[]> {
    const now = clock.now();
    const keys = rows.map((b) => ({ budgetId: b.id, start: periodStart(b.period, now) }));
    const periods = await db.tenant(workspaceId, (tx) => repo.periodsOf(tx, workspaceId, keys));
    return rows.map((b) => {
      const start = periodStart(b.period, now);
      const p = periods.find((x) => x.budgetId === b.id && x.periodStart.getTime() === start.getTime());
      const spent = p?.spentMicros ?? 0;
      const held = p?.heldMicros ?? 0;
      return {
        id: b.id,
        workspaceId: b.workspaceId,
        keyId: b.keyId,
        period: b.period,
        limitMicros: b.limitMicros,
        current: {
          start: start.toISOString(),
          end: periodEnd(b.period, start).toISOString(),
          spentMicros: spent,
          heldMicros: held,
          remainingMicros: Math.max(0, b.limitMicros - spent - held),
        },
        createdAt: b.createdAt.toISOString(),
        updatedAt: b.updatedAt.toISOString(),
      };
    });
  }

  return {
    async listBudgets({ scope }: { scope: Scope }): Promise<BudgetView[]> {
      const rows = await db.tenant(scope.workspaceId, (tx) => repo.list(tx, scope.workspaceId));
      return views(scope.workspaceId, rows);
    },

    /**
     * Sets the limit of the workspace's (or a key's) daily or monthly budget, creating it
     * the first time. A lower limit applies from the next reservation on; calls in flight
     * keep what they reserved.
     */
    async setBudget(input: {
      scope: Scope;
      keyId: string | null;
      period: BudgetPeriod;
      limitMicros: number;
    }): Promise<BudgetView> {
      const { scope, keyId, period, limitMicros } = input;
      if (!Number.isSafeInteger(limitMicros) || limitMicros <= 0 || limitMicros > MAX_AMOUNT_MICROS) {
        throw new AppError('invalid_amount', 'A budget is a whole, positive number of micro-units (at most 10^15).');
      }
      // The key must be one of this workspace's (another workspace's answers 404).
      if (keyId) await deps.keys.getKey({ scope, keyId });
      const row = await db.tenant(scope.workspaceId, async (tx) => {
        const now = clock.now();
        await repo.lockBalance(tx, scope.workspaceId, now);
        const existing = await repo.findScope(tx, scope.workspaceId, keyId, period);
        if (existing) {
          await repo.updateLimit(tx, scope.workspaceId, existing.id, limitMicros, now);
          const start = periodStart(period, now);
          const [current] = await repo.periodsOf(tx, scope.workspaceId, [{ budgetId: existing.id, start }]);
          if (current) {
            await repo.rebaseAlerts(
              tx,
              scope.workspaceId,
              existing.id,
              start,
              reachedPct(current.spentMicros, limitMicros),
            );
          }
        } else {
          await repo.addToCount(tx, scope.workspaceId, 1);
          await repo.insert(tx, {
            id: newId('bud', now),
            workspaceId: scope.workspaceId,
            keyId,
            period,
            limitMicros,
            createdBy: scope.actor.type === 'user' ? scope.actor.userId : null,
            createdAt: now,
            updatedAt: now,
          });
        }
        const saved = await repo.findScope(tx, scope.workspaceId, keyId, period);
        if (!saved) throw new Error('budget not saved');
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'budget.set',
          target: { type: 'budget', id: saved.id },
          diff: { keyId, period, limitMicros: { from: existing?.limitMicros ?? null, to: limitMicros } },
        });
        return saved;
      });
      deps.onChanged?.(scope.workspaceId);
      const [view] = await views(scope.workspaceId, [row]);
      if (!view) throw new Error('budget view missing');
      return view;
    },

    async removeBudget({ scope, budgetId }: { scope: Scope; budgetId: string }): Promise<void> {
      await db.tenant(scope.workspaceId, async (tx) => {
        await repo.lockBalance(tx, scope.workspaceId, clock.now());
        const b = await repo.find(tx, scope.workspaceId, budgetId);
        if (!b) throw notFound('budget');
        await repo.addToCount(tx, scope.workspaceId, -1);
        await repo.delete(tx, scope.workspaceId, b.id);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'budget.removed',
          target: { type: 'budget', id: b.id },
          diff: { keyId: b.keyId, period: b.period, limitMicros: b.limitMicros },
        });
      });
      deps.onChanged?.(scope.workspaceId);
    },

    /**
     * Emails owners and admins when a budget's spending reached 50, 80 or 100 % of its limit
     * in the current period, once per threshold (the highest one reached, when several were
     * passed at once). Runs every minute.
     */
    async sendAlerts(limit = 200): Promise<number> {
      const due = await db.system((tx) => repo.unnotified(tx, limit));
      let sent = 0;
      for (const p of due) {
        const b = p.budget;
        const reached = p.reachedPct;
        // Claimed first: an alert goes out at most once, even with several workers or a crash after sending.
        if (
          !(await db.tenant(b.workspaceId, (tx) => repo.claimAlert(tx, b.workspaceId, b.id, p.periodStart, reached)))
        ) {
          continue;
        }
        const whose = b.keyId ? `API key ${b.keyId}` : 'the workspace';
        const span = b.period === 'day' ? 'daily' : 'monthly';
        await deps.notices.send({
          workspaceId: b.workspaceId,
          roles: ['owner', 'admin'],
          subject:
            reached >= 100
              ? `Berth: the ${span} budget of ${whose} is used up`
              : `Berth: ${reached}% of the ${span} budget of ${whose} is used`,
          text: [
            `The ${span} budget of ${whose} in workspace ${b.workspaceId} has reached ${reached}% of its limit.`,
            '',
            `Limit: ${microsToUsd(b.limitMicros)} USD`,
            `Spent this period (from ${p.periodStart.toISOString().slice(0, 10)}): ${microsToUsd(p.spentMicros)} USD`,
            reached >= 100
              ? 'Calls counting against this budget are refused (budget_exceeded) until the period ends or the limit is raised.'
              : 'Calls are refused once a call could take the spending past the limit.',
          ].join('\n'),
          tag: 'billing.budget_alert',
        });
        sent++;
      }
      return sent;
    },
  };
}

export type BudgetsService = ReturnType<typeof budgetsService>;
