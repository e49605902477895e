import type { Clock } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Actor } from '../../platform/http/context.ts';
import type { Logger } from '../../platform/logger.ts';
import type { AuditService } from '../audit/index.ts';
import { type LedgerService, type TransactionView, toTransactionView } from './billing.ledger.ts';
import type { LedgerMove, PromotionsRepo } from './billing.promotions.repo.ts';
import type { BillingRepo } from './billing.repo.ts';
import { ledgerRetentionRepo } from './billing.retention.repo.ts';
import type { BillingService } from './billing.service.ts';

const EXPIRY_ACTOR: Actor = { type: 'system', name: 'promotion-expiry' };
/** How far ahead a promotion may expire. */
const MAX_EXPIRY_MS = 10 * 366 * 24 * 3600_000;

type Deps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: PromotionsRepo;
  ledger: Pick<LedgerService, 'grant' | 'expireIn'>;
  balances: Pick<BillingRepo, 'getBalance' | 'findTransaction'>;
  audit: Pick<AuditService, 'record'>;
  clock: Clock;
  logger: Logger;
  /** Grants without an expiry are ordinary operator grants. */
  billing: Pick<BillingService, 'grant'>;
};

/** A promotion as the replay sees it. */
export type Lot = { grantTransactionId: string; amountMicros: number; expiresAt: Date };

export type LotState = {
  /** What is left of the promotion now (micros, exact). */
  remainingMicros: bigint;
  /** The expire transaction that closed it, when there was one. */
  expiredBy: { transactionId: string; micros: bigint } | null;
};

export type PromotionView = {
  grantTransactionId: string;
  workspaceId: string;
  amountMicros: number;
  expiresAt: string;
  remainingMicros: number;
  expiredMicros: number | null;
  expiredTransactionId: string | null;
};

const min = (a: bigint, b: bigint) => (a < b ? a : b);

/**
 * What is left of each promotion, by replaying the workspace's ledger in order with integer
 * (bigint) arithmetic. The rule: spending (settled calls, negative adjustments, other
 * debits) takes promotional credits first, soonest-expiring first among those not expired
 * at that moment, then other credits, and only then promotions past their expiry that were
 * not taken back yet. Refunds give back paid credits, so they take other credits first.
 * An `expire:<grant id>` transaction closes its promotion; whatever it could not take back
 * (the workspace had less available) stays with the workspace as ordinary credits.
 *
 * `totalBefore` is the workspace's total (available + held) before the first move given.
 */
export function promotionRemainders(lots: Lot[], moves: LedgerMove[], totalBefore: bigint): Map<string, LotState> {
  type Open = Lot & { granted: boolean; closed: boolean; remaining: bigint; expiredBy: LotState['expiredBy'] };
  const byId = new Map<string, Open>(
    lots.map((l) => [
      l.grantTransactionId,
      { ...l, granted: false, closed: false, remaining: 0n, expiredBy: null } satisfies Open,
    ]),
  );
  const soonestFirst = (a: Open, b: Open) =>
    a.expiresAt.getTime() - b.expiresAt.getTime() || (a.grantTransactionId < b.grantTransactionId ? -1 : 1);
  let total = totalBefore;

  function consume(amount: bigint, at: Date, refund: boolean) {
    const open = [...byId.values()].filter((l) => l.granted && !l.closed && l.remaining > 0n).sort(soonestFirst);
    const promoted = open.reduce((sum, l) => sum + l.remaining, 0n);
    let regular = total - promoted;
    if (regular < 0n) regular = 0n;
    let left = amount;
    const fromRegular = () => {
      const take = min(left, regular);
      regular -= take;
      left -= take;
    };
    const fromLots = (which: Open[]) => {
      for (const l of which) {
        if (left === 0n) return;
        const take = min(left, l.remaining);
        l.remaining -= take;
        left -= take;
      }
    };
    const live = open.filter((l) => l.expiresAt.getTime() > at.getTime());
    const lapsed = open.filter((l) => l.expiresAt.getTime() <= at.getTime());
    if (refund) fromRegular();
    fromLots(live);
    if (!refund) fromRegular();
    fromLots(lapsed);
  }

  // A balance carried forward stands for everything before its time: it goes first among equals.
  const ordered = [...moves].sort(
    (a, b) =>
      a.createdAt.getTime() - b.createdAt.getTime() ||
      Number(b.kind === 'carry_forward') - Number(a.kind === 'carry_forward'),
  );
  for (const m of ordered) {
    const granted = byId.get(m.id);
    if (granted) {
      granted.granted = true;
      granted.remaining = BigInt(granted.amountMicros);
    } else if (m.kind === 'expire' && byId.has(m.idempotencyKey.slice('expire:'.length))) {
      const lot = byId.get(m.idempotencyKey.slice('expire:'.length));
      if (lot) {
        lot.expiredBy = { transactionId: m.id, micros: -m.deltaMicros };
        lot.remaining = 0n;
        lot.closed = true;
      }
    } else if (m.deltaMicros < 0n && m.kind !== 'carry_forward' && m.kind !== 'expire') {
      // A balance carried forward replaces older moves, and an expiry takes back a promotion's
      // own credits (also one whose row an earlier version of retention removed): neither spends.
      consume(-m.deltaMicros, m.createdAt, m.kind === 'refund');
    }
    total += m.deltaMicros;
  }
  return new Map([...byId].map(([id, l]) => [id, { remainingMicros: l.remaining, expiredBy: l.expiredBy }]));
}

const invalidExpiry = () =>
  new AppError('invalid_expiry', 'A promotion expires at a valid time in the future (within 10 years).');

/** A valid time within 10 years from now (whether it is still ahead is checked by the caller). */
function parseExpiry(at: Date | string, now: Date): Date {
  const d = at instanceof Date ? at : new Date(at);
  if (Number.isNaN(d.getTime()) || d.getTime() - now.getTime() > MAX_EXPIRY_MS) throw invalidExpiry();
  return d;
}

/**
 * Promotional credits: operator grants with an expiry, and the hourly job that takes back
 * what is left of each once it expired (an `expire` transaction, key `expire:<grant id>`,
 * never more than is available). Off the gateway's hot path: spending order is an
 * accounting rule applied by replaying the ledger, not a second balance.
 */
export function promotionsService(deps: Deps) {
  const { db, repo, clock } = deps;

  async function replayIn(tx: Database, workspaceId: string) {
    // Shared with other replays, never with a retention batch folding this ledger meanwhile.
    await ledgerRetentionRepo.lockHistory(tx, workspaceId, true);
    const promos = await repo.listForWorkspace(tx, workspaceId);
    if (promos.length === 0) return { promos, states: new Map<string, LotState>() };
    const from = new Date(Math.min(...promos.map((p) => p.createdAt.getTime())));
    const totalBefore = await repo.totalBefore(tx, workspaceId, from);
    const moves = await repo.movesFrom(tx, workspaceId, from);
    return { promos, states: promotionRemainders(promos, moves, totalBefore) };
  }

  /**
   * Takes back what is left of the workspace's soonest-expired unprocessed promotion, once;
   * false when none is due. One transaction with the balance row locked first, so no
   * movement commits between the replay that says what is left and the expiry that takes
   * it (a top-up landing meanwhile can never be taken for promotional credits).
   */
  async function expireNext(workspaceId: string, now: Date): Promise<boolean> {
    return db.tenant(workspaceId, async (tx) => {
      const balance = await deps.balances.getBalance(tx, workspaceId, true);
      const { promos, states } = await replayIn(tx, workspaceId);
      const due = promos.find((p) => p.processedAt === null && p.expiresAt.getTime() <= now.getTime());
      if (!due) return false;
      const state = states.get(due.grantTransactionId);
      const mark = (expiredMicros: number, expiredTransactionId: string | null) =>
        repo.markProcessed(tx, workspaceId, due.grantTransactionId, {
          expiredMicros,
          expiredTransactionId,
          processedAt: now,
        });
      if (state?.expiredBy) {
        await mark(Number(state.expiredBy.micros), state.expiredBy.transactionId);
        return true;
      }
      const take = Number(min(state?.remainingMicros ?? 0n, BigInt(balance?.availableMicros ?? 0)));
      if (take <= 0) {
        await mark(0, null);
        return true;
      }
      const row = await deps.ledger.expireIn(tx, {
        workspaceId,
        amountMicros: take,
        idempotencyKey: `expire:${due.grantTransactionId}`,
        actor: EXPIRY_ACTOR,
        memo: `Promotional credits of ${due.grantTransactionId} expired`,
      });
      await mark(row.amountMicros, row.id);
      return true;
    });
  }

  return {
    /**
     * An operator grants credits; with `expiresAt` they are promotional: audited
     * (`billing.granted`) and recorded as a promotion in the grant's transaction. The same key
     * with another amount, memo or expiry is refused (409 idempotency_conflict). Without it,
     * an ordinary grant.
     *
     * @example await promotions.grant({ actor, workspaceId, amountMicros: 5_000_000, idempotencyKey: 'launch-ws_1', expiresAt: '2027-02-01T00:00:00Z' });
     */
    async grant(input: {
      actor: Actor;
      workspaceId: string;
      amountMicros: number;
      idempotencyKey: string;
      memo?: string | undefined;
      expiresAt?: Date | string | undefined;
    }): Promise<TransactionView & { expiresAt?: string }> {
      if (input.expiresAt === undefined) {
        const { expiresAt: _none, ...plain } = input;
        return deps.billing.grant(plain);
      }
      const expiresAt = parseExpiry(input.expiresAt, clock.now());
      if (expiresAt.getTime() <= clock.now().getTime()) {
        // A retry of a grant made before its expiry passed answers that grant; a new one is refused.
        const before = await db.tenant(input.workspaceId, async (tx) => {
          const row = await deps.balances.findTransaction(tx, input.workspaceId, input.idempotencyKey);
          return row ? { row, promo: await repo.get(tx, input.workspaceId, row.id) } : null;
        });
        if (!before) throw invalidExpiry();
        const same =
          before.promo?.expiresAt.getTime() === expiresAt.getTime() &&
          before.row.kind === 'grant' &&
          before.row.amountMicros === input.amountMicros &&
          before.row.memo === (input.memo ?? null);
        if (!same) {
          throw new AppError(
            'idempotency_conflict',
            'This idempotency key was already used for a different movement; use a new key.',
          );
        }
        return { ...toTransactionView(before.row), expiresAt: expiresAt.toISOString() };
      }
      const entry = await deps.ledger.grant(
        {
          workspaceId: input.workspaceId,
          amountMicros: input.amountMicros,
          idempotencyKey: input.idempotencyKey,
          actor: input.actor,
          memo: input.memo ?? null,
        },
        async (tx, row) => {
          await repo.insert(tx, {
            grantTransactionId: row.id,
            workspaceId: input.workspaceId,
            amountMicros: row.amountMicros,
            expiresAt,
            expiredMicros: null,
            expiredTransactionId: null,
            processedAt: null,
            createdAt: row.createdAt,
          });
          await deps.audit.record(tx, {
            workspaceId: input.workspaceId,
            actor: input.actor,
            action: 'billing.granted',
            target: { type: 'ledger_transaction', id: row.id },
            diff: { amountMicros: row.amountMicros, expiresAt: expiresAt.toISOString(), memo: row.memo },
          });
        },
      );
      // A replayed key answers the first grant: it must have been this promotion.
      const promo = await db.tenant(input.workspaceId, (tx) => repo.get(tx, input.workspaceId, entry.id));
      if (!promo || promo.expiresAt.getTime() !== expiresAt.getTime()) {
        throw new AppError(
          'idempotency_conflict',
          'This idempotency key was already used for a different movement; use a new key.',
        );
      }
      return { ...entry, expiresAt: expiresAt.toISOString() };
    },

    /** A workspace's promotions with what is left of each (by the replay). */
    async list(workspaceId: string): Promise<PromotionView[]> {
      const { promos, states } = await db.tenant(workspaceId, (tx) => replayIn(tx, workspaceId));
      return promos.map((p) => ({
        grantTransactionId: p.grantTransactionId,
        workspaceId: p.workspaceId,
        amountMicros: p.amountMicros,
        expiresAt: p.expiresAt.toISOString(),
        remainingMicros: Number(states.get(p.grantTransactionId)?.remainingMicros ?? 0n),
        expiredMicros: p.expiredMicros,
        expiredTransactionId: p.expiredTransactionId,
      }));
    },

    /**
     * The `billing.expire-promotions` job (hourly): for each promotion past its expiry, takes
     * back what is left of it. Rerunning changes nothing. Returns how many it handled.
     */
    async expireDue(limit = 200): Promise<number> {
      const now = clock.now();
      const workspaces = await db.system((tx) => repo.dueWorkspaces(tx, now, limit));
      let handled = 0;
      for (const workspaceId of workspaces) {
        try {
          // One at a time, soonest first, each from a fresh replay: an expiry changes what is available.
          while (await expireNext(workspaceId, now)) handled++;
        } catch (err) {
          // Spent meanwhile (insufficient_credits) or the database hiccuped: the next run tries again.
          deps.logger.warn({ workspaceId, code: (err as AppError).code ?? 'error' }, 'promotion expiry deferred');
        }
      }
      return handled;
    },
  };
}

export type PromotionsService = ReturnType<typeof promotionsService>;
