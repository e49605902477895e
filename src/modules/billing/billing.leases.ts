import type { Clock } from '../../platform/clock.ts';
import type { Actor } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import type { CreditGate, Reservation, ReserveInput } from '../gateway/index.ts';
import type { LedgerService } from './billing.ledger.ts';

export type LeaseSettings = {
  /** What one lease holds, in micros (the lease is at least four times the call that opens it). */
  leaseMicros: number;
  /** A lease older than this takes no more calls; it is settled once its calls have finished. */
  maxAgeMs: number;
  /** How often leases are checked for age (real time; ages are read from the clock). */
  sweepMs?: number;
};

type Lease = {
  workspaceId: string;
  reservationId: string;
  amountMicros: number;
  /** Worst cases of the calls in flight plus the actual costs of the finished ones. */
  usedMicros: number;
  /** Actual costs of the finished calls: what the lease settles at. */
  spentMicros: number;
  inFlight: number;
  calls: number;
  /** It takes no calls from then on (clock ms): its age limit, or the next month's start. */
  closesAt: number;
  closed: boolean;
};

/**
 * When a lease opened at `now` stops taking calls: after `maxAgeMs`, and at the latest when
 * the UTC month ends, so a month's calls are settled in the month (statements close by month).
 */
export function leaseClosesAt(now: number, maxAgeMs: number): number {
  const d = new Date(now);
  return Math.min(now + maxAgeMs, Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1));
}

type WorkspaceLeases = {
  lease: Lease | null;
  /** The ledger reservation being made for this workspace's next lease. */
  acquiring: Promise<unknown> | null;
  /** Until then (clock ms), each call reserves its own worst case: budgets apply, or the balance is low. */
  exactUntil: number;
};

const leaseActor: Actor = { type: 'system', name: 'gateway' };

/**
 * Credit leases: the gateway's credit gate without a database transaction per call.
 *
 * A replica reserves a lease on the ledger for a workspace (one reservation of
 * `leaseMicros`), then holds each call's worst case against it in memory and settles each
 * call's actual cost into it. A lease takes calls until it is too empty for the next one,
 * older than `maxAgeMs` or the UTC month ended; then it closes, and once its last call finished it is settled
 * on the ledger in one movement at the sum of its calls' costs (the rest goes back). The
 * ledger grants a lease only while the workspace has no budgets and at least ten leases'
 * worth available (`LEASE_HEADROOM`); otherwise, and for a while after, every call
 * reserves its own worst case as before, so budgets stay exact and the end of a balance
 * refuses no call another replica's lease could have paid for.
 *
 * If the replica stops without settling, the lease's reservation expires and the ledger
 * settles it from the usage events recorded under it (`creditLeaseId`).
 */
export function creditLeases(deps: {
  ledger: Pick<LedgerService, 'reserve' | 'settle' | 'release'>;
  clock: Clock;
  logger: Logger;
  settings: LeaseSettings;
}) {
  const { ledger, clock, settings } = deps;
  const byWorkspace = new Map<string, WorkspaceLeases>();
  /** Calls held against a lease (any other reservation is the ledger's own). */
  const held = new WeakMap<Reservation, Lease>();
  const settling = new Set<Promise<unknown>>();
  let timer: NodeJS.Timeout | null = null;

  function settleLease(lease: Lease) {
    const memo = `credit lease: ${lease.calls} ${lease.calls === 1 ? 'call' : 'calls'}`;
    const done = ledger
      .settle(lease.workspaceId, lease.reservationId, lease.spentMicros, leaseActor, memo)
      .catch((err: unknown) => {
        // Left open, the lease expires and is settled from its usage events.
        deps.logger.warn(
          { workspaceId: lease.workspaceId, lease: lease.reservationId, err },
          'billing: a credit lease could not be settled; its expiry will settle it',
        );
      });
    settling.add(done);
    void done.finally(() => settling.delete(done));
  }

  function close(ws: WorkspaceLeases, lease: Lease) {
    if (lease.closed) return;
    lease.closed = true;
    if (ws.lease === lease) ws.lease = null;
    if (lease.inFlight === 0) settleLease(lease);
  }

  function sweep() {
    const now = clock.now().getTime();
    for (const [workspaceId, ws] of byWorkspace) {
      if (ws.lease && now >= ws.lease.closesAt) close(ws, ws.lease);
      if (!ws.lease && !ws.acquiring && ws.exactUntil <= now) byWorkspace.delete(workspaceId);
    }
  }

  function takeFrom(lease: Lease, input: ReserveInput): Reservation {
    lease.usedMicros += input.amountMicros;
    lease.inFlight += 1;
    const r: Reservation = {
      id: `${lease.reservationId}/${input.requestId}`,
      workspaceId: input.workspaceId,
      amountMicros: input.amountMicros,
      leaseId: lease.reservationId,
    };
    held.set(r, lease);
    return r;
  }

  /** Reserves a new lease holding this call, or (when the ledger grants none) this call alone. */
  async function acquire(ws: WorkspaceLeases, input: ReserveInput, now: number): Promise<Reservation> {
    const got = await ledger.reserve({
      workspaceId: input.workspaceId,
      keyId: null,
      requestId: newId('lse', clock.now()),
      amountMicros: input.amountMicros,
      leaseMicros: Math.max(settings.leaseMicros, input.amountMicros * 4),
    });
    if (!got.lease) {
      ws.exactUntil = now + settings.maxAgeMs;
      return { id: got.id, workspaceId: input.workspaceId, amountMicros: got.amountMicros };
    }
    const lease: Lease = {
      workspaceId: input.workspaceId,
      reservationId: got.id,
      amountMicros: got.amountMicros,
      usedMicros: 0,
      spentMicros: 0,
      inFlight: 0,
      calls: 0,
      closesAt: leaseClosesAt(now, settings.maxAgeMs),
      closed: false,
    };
    ws.lease = lease;
    return takeFrom(lease, input);
  }

  const gate: CreditGate & { forget(workspaceId: string): void; stop(): Promise<void> } = {
    kind: 'ledger',

    async reserve(input) {
      let ws = byWorkspace.get(input.workspaceId);
      if (!ws) {
        ws = { lease: null, acquiring: null, exactUntil: 0 };
        byWorkspace.set(input.workspaceId, ws);
      }
      if (!timer) {
        timer = setInterval(sweep, settings.sweepMs ?? 1000);
        timer.unref();
      }
      for (;;) {
        const now = clock.now().getTime();
        if (ws.exactUntil > now) return ledger.reserve(input);
        const lease = ws.lease;
        if (lease && now < lease.closesAt && lease.amountMicros - lease.usedMicros >= input.amountMicros) {
          return takeFrom(lease, input);
        }
        if (lease) close(ws, lease);
        if (ws.acquiring) {
          // One reservation per workspace at a time: the calls meanwhile wait for its lease.
          await ws.acquiring.catch(() => undefined);
          continue;
        }
        const acquiring = acquire(ws, input, now);
        ws.acquiring = acquiring;
        try {
          return await acquiring;
        } finally {
          ws.acquiring = null;
        }
      }
    },

    async settle(r, actualMicros) {
      const lease = held.get(r);
      if (!lease) {
        await ledger.settle(r.workspaceId, r.id, actualMicros);
        return;
      }
      held.delete(r);
      lease.usedMicros += actualMicros - r.amountMicros;
      lease.spentMicros += actualMicros;
      lease.inFlight -= 1;
      lease.calls += 1;
      if (lease.closed && lease.inFlight === 0) settleLease(lease);
    },

    async release(r) {
      const lease = held.get(r);
      if (!lease) {
        await ledger.release(r.workspaceId, r.id);
        return;
      }
      held.delete(r);
      lease.usedMicros -= r.amountMicros;
      lease.inFlight -= 1;
      if (lease.closed && lease.inFlight === 0) settleLease(lease);
    },

    /** Closes every lease and waits for the settlements of those whose calls have finished. */
    async flush() {
      for (const ws of byWorkspace.values()) {
        if (ws.acquiring) await ws.acquiring.catch(() => undefined);
        if (ws.lease) close(ws, ws.lease);
      }
      while (settling.size > 0) await Promise.all([...settling]);
    },

    /** Stops holding calls against this workspace's lease on this replica (its budgets changed). */
    forget(workspaceId) {
      const ws = byWorkspace.get(workspaceId);
      if (ws?.lease) close(ws, ws.lease);
    },

    async stop() {
      if (timer) clearInterval(timer);
      timer = null;
      await gate.flush?.();
    },
  };
  return gate;
}

export type CreditLeases = ReturnType<typeof creditLeases>;
