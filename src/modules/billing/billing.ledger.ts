import type { Clock } from '../../platform/clock.ts';
import { type Database, type Db, isUniqueViolation } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Actor } from '../../platform/http/context.ts';
import type { CreditGate, Reservation, ReserveInput } from '../gateway/index.ts';
import { movementHash, postingsOf, transactionRow } from './billing.movements.ts';
import type { BillingRepo } from './billing.repo.ts';
import { LEASE_MEMO } from './billing.reservations.plan.ts';
import { reservationsRepo } from './billing.reservations.repo.ts';
import { reservationQueue } from './billing.reservations.ts';
import type { TransactionKind, TransactionRow } from './billing.tables.ts';

/** Largest single movement: 10^15 micros (one billion USD), far inside bigint and exact in a JS number. */
export const MAX_AMOUNT_MICROS = 1_000_000_000_000_000;

export type TransactionView = {
  id: string;
  workspaceId: string;
  kind: TransactionKind;
  idempotencyKey: string;
  amountMicros: number;
  reservationId: string | null;
  availableAfterMicros: number;
  heldAfterMicros: number;
  actor: { type: string; id: string };
  memo: string | null;
  createdAt: string;
};

export type BalanceView = { workspaceId: string; availableMicros: number; heldMicros: number };

export type VerifyReport = {
  workspaceId: string;
  ok: boolean;
  availableMicros: number;
  heldMicros: number;
  postedAvailableMicros: number;
  postedHeldMicros: number;
  openReservationsMicros: number;
  unbalancedTransactions: number;
};

export type LedgerSettings = {
  /** How long a reservation may stay open before the expiry job releases it. */
  reservationTtlMs: number;
  /** Ledger batches in flight at once (default 1); each takes a connection. */
  maxInFlight?: number;
};

type Deps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: BillingRepo;
  clock: Clock;
  settings: LedgerSettings;
  /** What the calls held against a credit lease cost, from their usage events (a lease left open by a stopped replica). */
  leaseUsage?: (workspaceId: string, leaseId: string, since: Date) => Promise<number>;
};

/** A movement: what it does to the workspace's two accounts; the platform account takes the opposite. */
type Movement = {
  kind: TransactionKind;
  idempotencyKey: string;
  /** What the key stands for: a replay with other parameters is refused. */
  params: Record<string, unknown>;
  amountMicros: number;
  available: number;
  held: number;
  actor: Actor;
  memo?: string | null;
  reservationId?: string | null;
};

/** Work done in a new movement's transaction (an audit event, a reservation row). */
export type AfterMovement = (tx: Database, row: TransactionRow) => Promise<unknown>;

export type MoveInput = {
  workspaceId: string;
  amountMicros: number;
  idempotencyKey: string;
  actor: Actor;
  memo?: string | null;
};

/** A movement between `available` and its platform account: +amount (grant, top-up) or -amount (refund). */
function availableMovement(kind: 'grant' | 'topup' | 'refund' | 'expire', sign: 1 | -1, input: MoveInput): Movement {
  const amount = checkAmount(input.amountMicros);
  return {
    kind,
    idempotencyKey: input.idempotencyKey,
    params: { amount, memo: input.memo ?? null },
    amountMicros: amount,
    available: sign * amount,
    held: 0,
    actor: input.actor,
    memo: input.memo ?? null,
  };
}

export function toTransactionView(r: TransactionRow): TransactionView {
  return {
    id: r.id,
    workspaceId: r.workspaceId,
    kind: r.kind,
    idempotencyKey: r.idempotencyKey,
    amountMicros: r.amountMicros,
    reservationId: r.reservationId,
    availableAfterMicros: r.availableAfterMicros,
    heldAfterMicros: r.heldAfterMicros,
    actor: { type: r.actorType, id: r.actorId },
    memo: r.memo,
    createdAt: r.createdAt.toISOString(),
  };
}

/** A positive whole number of micro-units within the ledger's range, or a 400. */
export function checkAmount(micros: number, what = 'amount'): number {
  if (!Number.isSafeInteger(micros) || micros <= 0 || micros > MAX_AMOUNT_MICROS) {
    throw new AppError(
      'invalid_amount',
      `The ${what} must be a whole, positive number of micro-units (at most 10^15).`,
    );
  }
  return micros;
}

/**
 * The credit ledger. Grants, top-ups, refunds, adjustments and expiries each run in one
 * transaction bound to their workspace: the balance row is moved by a conditional UPDATE
 * (so concurrent movements serialise on it and none takes the balance below zero), the
 * transaction and its postings are inserted, and a key seen before answers with the first
 * result instead (a key reused with other parameters is refused). Reservations hold credits
 * from `available` in `held` until they are settled (the actual cost goes to
 * `platform:usage`, the rest back) or released; being the gateway's hot path, they are
 * group-committed (billing.reservations.ts), with the same rules and the same entries.
 */
export function ledgerService(deps: Deps) {
  const { db, repo, clock } = deps;
  const queue = reservationQueue({
    db,
    repo: reservationsRepo,
    clock,
    reservationTtlMs: deps.settings.reservationTtlMs,
    ...(deps.settings.maxInFlight ? { maxInFlight: deps.settings.maxInFlight } : {}),
  });

  async function replayOf(tx: Database, m: Movement, workspaceId: string, hash: string) {
    const seen = await repo.findTransaction(tx, workspaceId, m.idempotencyKey);
    if (!seen) return null;
    if (seen.requestHash !== hash || seen.kind !== m.kind) {
      throw new AppError(
        'idempotency_conflict',
        'This idempotency key was already used for a different movement; use a new key.',
      );
    }
    return seen;
  }

  /**
   * Applies one movement inside `tx` (bound to the workspace); returns it (`fresh`), or the
   * first one made with its key.
   */
  async function applyIn(
    tx: Database,
    workspaceId: string,
    m: Movement,
  ): Promise<{ row: TransactionRow; fresh: boolean }> {
    const hash = movementHash(m.kind, m.params);
    const seen = await replayOf(tx, m, workspaceId, hash);
    if (seen) return { row: seen, fresh: false };
    const now = clock.now();
    let after = await repo.applyDeltas(tx, workspaceId, m, now);
    if (!after) {
      // Refused, or the workspace's first movement (no balance row yet; another one may be
      // creating it right now: the insert waits for it, the retried update then sees it).
      await repo.ensureBalance(tx, workspaceId, now);
      after = await repo.applyDeltas(tx, workspaceId, m, now);
    }
    if (!after) {
      throw new AppError('insufficient_credits', 'The workspace does not have enough credits for this.');
    }
    const row = transactionRow({
      workspaceId,
      kind: m.kind,
      idempotencyKey: m.idempotencyKey,
      requestHash: hash,
      amountMicros: m.amountMicros,
      reservationId: m.reservationId ?? null,
      after,
      actor: m.actor,
      memo: m.memo ?? null,
      now,
    });
    const postings = postingsOf(row, m);
    await repo.insertTransaction(tx, row, postings);
    return { row, fresh: true };
  }

  /**
   * Runs a movement in its own transaction. Two requests with one key at once: the second
   * waits on the balance row, then fails the key's unique index and rolls back; its retry
   * finds the first one's transaction and answers with it.
   */
  async function apply(workspaceId: string, m: Movement, extra?: AfterMovement) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await db.tenant(workspaceId, async (tx) => {
          const done = await applyIn(tx, workspaceId, m);
          if (extra && done.fresh) await extra(tx, done.row);
          return done;
        });
      } catch (err) {
        if (attempt < 2 && isUniqueViolation(err)) continue;
        throw err;
      }
    }
  }

  const gatewayActor: Actor = { type: 'system', name: 'gateway' };

  const service = {
    /** Adds promotional or plan credits; `then` runs in the same transaction when the grant is new (its audit event). */
    async grant(input: MoveInput, then?: AfterMovement) {
      return toTransactionView((await apply(input.workspaceId, availableMovement('grant', 1, input), then)).row);
    },

    /** A grant that says whether it happened now (`fresh`) or was made before with its key. */
    async grantOnce(input: MoveInput) {
      const { row, fresh } = await apply(input.workspaceId, availableMovement('grant', 1, input));
      return { entry: toTransactionView(row), fresh };
    },

    /** A grant inside the caller's transaction (bound to the workspace), e.g. a new workspace's free credits. */
    async grantIn(tx: Database, input: MoveInput) {
      return toTransactionView((await applyIn(tx, input.workspaceId, availableMovement('grant', 1, input))).row);
    },

    /** Adds credits a payment bought. */
    async topUp(input: MoveInput, then?: AfterMovement) {
      return toTransactionView((await apply(input.workspaceId, availableMovement('topup', 1, input), then)).row);
    },

    /** A top-up inside the caller's transaction (bound to the workspace): a payment processor's event. */
    async topUpIn(tx: Database, input: MoveInput) {
      return (await applyIn(tx, input.workspaceId, availableMovement('topup', 1, input))).row;
    },

    /** Gives credits back to the payment they came from (refused beyond what is available). */
    async refund(input: MoveInput, then?: AfterMovement) {
      return toTransactionView((await apply(input.workspaceId, availableMovement('refund', -1, input), then)).row);
    },

    /**
     * Takes back promotional credits that reached their expiry, inside the caller's
     * transaction (bound to the workspace, its balance row locked while it decided how much);
     * refused beyond what is available.
     */
    async expireIn(tx: Database, input: MoveInput) {
      return (await applyIn(tx, input.workspaceId, availableMovement('expire', -1, input))).row;
    },

    /** An operator's correction, up or down (never below zero), with its reason. */
    async adjust(
      input: { workspaceId: string; deltaMicros: number; idempotencyKey: string; actor: Actor; memo: string },
      then?: AfterMovement,
    ) {
      const amount = checkAmount(Math.abs(input.deltaMicros), 'adjustment');
      return apply(
        input.workspaceId,
        {
          kind: 'adjust',
          idempotencyKey: input.idempotencyKey,
          params: { delta: input.deltaMicros, memo: input.memo },
          amountMicros: amount,
          available: input.deltaMicros,
          held: 0,
          actor: input.actor,
          memo: input.memo,
        },
        then,
      ).then((done) => toTransactionView(done.row));
    },

    /**
     * Holds `amountMicros` for a call; `insufficient_credits` when it is not available,
     * `budget_exceeded` when a budget of the workspace or key would be passed.
     */
    async reserve(
      input: ReserveInput & { actor?: Actor; leaseMicros?: number },
    ): Promise<Reservation & { lease: boolean }> {
      const amount = input.amountMicros === 0 ? 0 : checkAmount(input.amountMicros);
      const row = await queue.submit({
        kind: 'reserve',
        workspaceId: input.workspaceId,
        keyId: input.keyId,
        requestId: input.requestId,
        amountMicros: amount,
        ...(input.leaseMicros !== undefined ? { leaseMicros: checkAmount(input.leaseMicros, 'lease') } : {}),
        actor: input.actor ?? gatewayActor,
      });
      return {
        id: row.reservationId ?? '',
        workspaceId: input.workspaceId,
        amountMicros: row.amountMicros,
        lease: row.memo === LEASE_MEMO,
      };
    },

    /** Charges the actual cost of a reserved call (beyond the reservation only what is available), once. */
    settle: async (
      workspaceId: string,
      reservationId: string,
      actualMicros: number,
      actor: Actor = gatewayActor,
      memo: string | null = null,
    ) => {
      if (!Number.isSafeInteger(actualMicros) || actualMicros < 0) {
        throw new AppError('invalid_amount', 'The settled amount must be a whole number of micro-units, zero or more.');
      }
      return toTransactionView(
        await queue.submit({ kind: 'settle', workspaceId, reservationId, actualMicros, actor, memo }),
      );
    },

    /** Gives a reservation's credits back (the call failed before costing anything), once. */
    release: async (workspaceId: string, reservationId: string, actor: Actor = gatewayActor) =>
      toTransactionView(await queue.submit({ kind: 'release', workspaceId, reservationId, status: 'released', actor })),

    /**
     * Releases reservations left open past their expiry (a call that crashed never settles).
     * A credit lease left open (its replica stopped) is settled instead, at what the usage
     * events recorded under it cost: the calls it covered were answered, so they are charged.
     */
    async expireReservations(limit = 500): Promise<number> {
      const due = await db.system((tx) => repo.expiredReservations(tx, clock.now(), limit));
      const actor: Actor = { type: 'system', name: 'reservation-expiry' };
      const done = await Promise.allSettled(
        due.map(async (r) => {
          if (r.kind === 'lease' && deps.leaseUsage) {
            const cost = await deps.leaseUsage(r.workspaceId, r.id, r.createdAt);
            return queue.submit({
              kind: 'settle',
              workspaceId: r.workspaceId,
              reservationId: r.id,
              actualMicros: cost,
              actor,
              memo: 'credit lease expired: charged from its usage events',
            });
          }
          return queue.submit({
            kind: 'release',
            workspaceId: r.workspaceId,
            reservationId: r.id,
            status: 'expired',
            actor,
          });
        }),
      );
      for (const d of done) {
        // Settled or released meanwhile: nothing to expire.
        if (d.status === 'rejected' && !(d.reason instanceof AppError && d.reason.code === 'reservation_closed')) {
          throw d.reason;
        }
      }
      return done.filter((d) => d.status === 'fulfilled').length;
    },

    async balance(workspaceId: string): Promise<BalanceView> {
      const row = await db.tenant(workspaceId, (tx) => repo.getBalance(tx, workspaceId));
      return { workspaceId, availableMicros: row?.availableMicros ?? 0, heldMicros: row?.heldMicros ?? 0 };
    },

    async entries(workspaceId: string, f: { after?: string | undefined; limit: number }) {
      const rows = await db.tenant(workspaceId, (tx) => repo.listTransactions(tx, workspaceId, f));
      return rows.map(toTransactionView);
    },

    /** Recomputes every balance (or one workspace's) from the postings; `ok` false on any difference. */
    async verify(workspaceId: string | null = null): Promise<VerifyReport[]> {
      const rows = await db.system((tx) => repo.reconcile(tx, workspaceId));
      return rows.map((r) => ({
        workspaceId: r.workspaceId,
        ok:
          r.availableMicros === r.postedAvailable &&
          r.heldMicros === r.postedHeld &&
          r.heldMicros === r.openReservations &&
          r.unbalanced === 0,
        availableMicros: r.availableMicros,
        heldMicros: r.heldMicros,
        postedAvailableMicros: r.postedAvailable,
        postedHeldMicros: r.postedHeld,
        openReservationsMicros: r.openReservations,
        unbalancedTransactions: r.unbalanced,
      }));
    },
  };

  /** The gateway's view: reserve before a call, settle or release after it. */
  const gate: CreditGate = {
    kind: 'ledger',
    reserve: (input) => service.reserve(input),
    async settle(r, actual) {
      await service.settle(r.workspaceId, r.id, actual);
    },
    async release(r) {
      await service.release(r.workspaceId, r.id);
    },
  };

  return { ...service, gate };
}

export type LedgerService = ReturnType<typeof ledgerService>;
