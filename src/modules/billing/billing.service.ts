import type { Clock } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Actor, Scope } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { AuditService } from '../audit/index.ts';
import type { WorkspaceEvent } from '../workspaces/index.ts';
import type { AfterMovement, LedgerService, TransactionView } from './billing.ledger.ts';
import { DEFAULT_PLAN, type Plan } from './billing.plans.ts';
import type { BillingRepo } from './billing.repo.ts';
import type { TransactionRow } from './billing.tables.ts';

const PLAN_CREDITS_ACTOR = { type: 'system', name: 'plan-credits' } as const;
const PLAN_CREDITS_MEMO = "The plan's monthly credits";

type Deps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: BillingRepo;
  ledger: LedgerService;
  audit: Pick<AuditService, 'record'>;
  clock: Clock;
  plans: ReadonlyMap<string, Plan>;
};

/**
 * The key of a plan's monthly grant: one per workspace, plan and month (a workspace that
 * moves to another plan mid-month gets that plan's credits for the month too).
 */
export function planCreditsKey(workspaceId: string, plan: string, at: Date): string {
  return `plan-credits:${workspaceId}:${plan}:${at.toISOString().slice(0, 7)}`;
}

/** Billing's use cases: balances and entries for members, grants, adjustments and plans for operators. */
export function billingService(deps: Deps) {
  const { db, repo, ledger, audit, clock } = deps;
  const planChangeHandlers: Array<(tx: Database, workspaceId: string) => void> = [];

  /** The audit event of an operator's movement, written in the movement's transaction. */
  function audited(
    action: string,
    input: { actor: Actor; workspaceId: string },
    diff: (row: TransactionRow) => Record<string, unknown>,
  ): AfterMovement {
    return (tx, row) =>
      audit.record(tx, {
        workspaceId: input.workspaceId,
        actor: input.actor,
        action,
        target: { type: 'ledger_transaction', id: row.id },
        diff: { ...diff(row), memo: row.memo },
      });
  }

  function planNamed(plan: string): Plan {
    const p = deps.plans.get(plan);
    if (!p) throw new AppError('unknown_plan', `There is no plan called ${plan}.`);
    return p;
  }

  return {
    plans: () => [...deps.plans.values()],

    /**
     * Subscribes to plan changes; the handler runs inside the changing transaction (e.g.
     * the gateway forgets the workspace's cached plan limits once it commits).
     */
    onPlanChanged(handler: (tx: Database, workspaceId: string) => void): void {
      planChangeHandlers.push(handler);
    },

    /** What the workspace's plan limits on the hot path (the gateway caches it with the workspace). */
    async limitsOf(
      workspaceId: string,
    ): Promise<{ rateLimitRpm: number | null; seats: number | null; auditRetentionMonths: number | null }> {
      const current = await db.tenant(workspaceId, (tx) => repo.currentPlan(tx, workspaceId));
      const plan = deps.plans.get(current?.plan ?? DEFAULT_PLAN);
      // A plan no longer configured (renamed or removed from BERTH_PLANS_FILE) keeps the audit
      // log as long as the longest plan does: retention never deletes on a guess.
      const longest = Math.max(0, ...[...deps.plans.values()].map((p) => p.auditRetentionMonths ?? 0));
      return {
        rateLimitRpm: plan?.rateLimitRpm ?? null,
        seats: plan?.seats ?? null,
        // How long the workspace's audit log is kept (null: the default, 13 months).
        auditRetentionMonths: plan ? (plan.auditRetentionMonths ?? null) : longest > 0 ? longest : null,
      };
    },

    async balance(scope: Scope) {
      const [balance, plan] = await Promise.all([
        ledger.balance(scope.workspaceId),
        db.tenant(scope.workspaceId, (tx) => repo.currentPlan(tx, scope.workspaceId)),
      ]);
      return { ...balance, plan: plan?.plan ?? DEFAULT_PLAN };
    },

    /** The workspace's plan (what it includes) and the history of its plans, newest first. */
    async plan(scope: Scope) {
      const history = await db.tenant(scope.workspaceId, (tx) => repo.planHistory(tx, scope.workspaceId));
      const current = history.find((h) => h.endedAt === null);
      const id = current?.plan ?? DEFAULT_PLAN;
      return {
        workspaceId: scope.workspaceId,
        // A plan the operator removed from the configuration still shows by its id.
        plan: deps.plans.get(id) ?? { ...planNamed(DEFAULT_PLAN), id, name: id },
        since: current?.startedAt.toISOString() ?? null,
        history: history.map((h) => ({
          plan: h.plan,
          startedAt: h.startedAt.toISOString(),
          endedAt: h.endedAt?.toISOString() ?? null,
        })),
      };
    },

    async entries(scope: Scope, query: { cursor?: string | undefined; limit?: number | undefined }) {
      const limit = query.limit ?? 100;
      const data = await ledger.entries(scope.workspaceId, { after: query.cursor, limit });
      return { data, nextCursor: data.length === limit ? (data[data.length - 1]?.id ?? null) : null };
    },

    /** An operator grants credits; audited in the same transaction. */
    grant(input: {
      actor: Actor;
      workspaceId: string;
      amountMicros: number;
      idempotencyKey: string;
      memo?: string | undefined;
    }): Promise<TransactionView> {
      return ledger.grant(
        { ...input, memo: input.memo ?? null },
        audited('billing.granted', input, (row) => ({ amountMicros: row.amountMicros })),
      );
    },

    /** An operator corrects a balance, up or down, with a reason; audited in the same transaction. */
    adjust(input: {
      actor: Actor;
      workspaceId: string;
      deltaMicros: number;
      idempotencyKey: string;
      memo: string;
    }): Promise<TransactionView> {
      return ledger.adjust(
        input,
        audited('billing.adjusted', input, () => ({ deltaMicros: input.deltaMicros })),
      );
    },

    /** Moves a workspace to another plan: the current one ends now, the history keeps it. */
    async setPlan(input: { actor: Actor; workspaceId: string; plan: string }) {
      const plan = planNamed(input.plan);
      return db.tenant(input.workspaceId, async (tx) => {
        const current = await repo.currentPlan(tx, input.workspaceId, true);
        const now = clock.now();
        if (current?.plan === plan.id) {
          return { workspaceId: input.workspaceId, plan: plan.id, startedAt: current.startedAt.toISOString() };
        }
        if (current) await repo.endPlan(tx, input.workspaceId, current.id, now);
        const changedBy = input.actor.type === 'system' ? null : input.actor.userId;
        await repo.insertPlan(tx, {
          id: newId('pln', now),
          workspaceId: input.workspaceId,
          plan: plan.id,
          startedAt: now,
          endedAt: null,
          changedBy,
        });
        await audit.record(tx, {
          workspaceId: input.workspaceId,
          actor: input.actor,
          action: 'plan.changed',
          target: { type: 'workspace_plan', id: input.workspaceId },
          diff: { from: current?.plan ?? null, to: plan.id },
        });
        for (const handler of planChangeHandlers) handler(tx, input.workspaceId);
        return { workspaceId: input.workspaceId, plan: plan.id, startedAt: now.toISOString() };
      });
    },

    /**
     * A new workspace starts on the default plan with its free credits, in the transaction
     * that creates it (so the quick start can call a model at once).
     */
    async onWorkspaceEvent(event: WorkspaceEvent, tx: Database) {
      if (event.type !== 'workspace.created') return;
      const now = clock.now();
      await repo.insertPlan(tx, {
        id: newId('pln', now),
        workspaceId: event.workspaceId,
        plan: DEFAULT_PLAN,
        startedAt: now,
        endedAt: null,
        changedBy: null,
      });
      await repo.ensureBalance(tx, event.workspaceId, now);
      // This month's credits of the default plan; the monthly job's grant for the same month replays this one.
      const credits = planNamed(DEFAULT_PLAN).monthlyCreditsMicros;
      if (credits > 0) {
        await ledger.grantIn(tx, {
          workspaceId: event.workspaceId,
          amountMicros: credits,
          idempotencyKey: planCreditsKey(event.workspaceId, DEFAULT_PLAN, now),
          actor: PLAN_CREDITS_ACTOR,
          memo: PLAN_CREDITS_MEMO,
        });
      }
    },

    /**
     * Grants every workspace its plan's monthly credits for the current month, once (the
     * key names the month). Runs hourly; a month's grant happens on its first run.
     */
    async grantMonthlyCredits(): Promise<number> {
      const now = clock.now();
      const current = await db.system((tx) => repo.currentPlans(tx));
      let granted = 0;
      for (const p of current) {
        const credits = deps.plans.get(p.plan)?.monthlyCreditsMicros ?? 0;
        if (credits <= 0) continue;
        const key = planCreditsKey(p.workspaceId, p.plan, now);
        try {
          const { fresh } = await ledger.grantOnce({
            workspaceId: p.workspaceId,
            amountMicros: credits,
            idempotencyKey: key,
            actor: PLAN_CREDITS_ACTOR,
            memo: PLAN_CREDITS_MEMO,
          });
          if (fresh) granted++;
        } catch (err) {
          // The plan's credits changed within the month (configuration): its first grant stands.
          if (!(err instanceof AppError && err.code === 'idempotency_conflict')) throw err;
        }
      }
      return granted;
    },

    verify: (workspaceId?: string) => ledger.verify(workspaceId ?? null),
  };
}

export type BillingService = ReturnType<typeof billingService>;
