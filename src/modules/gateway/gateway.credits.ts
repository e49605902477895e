import { AppError } from '../../platform/errors.ts';

/**
 * What the gateway needs from billing: hold the worst-case cost of a call before it goes
 * upstream, then settle to the actual cost or release. The billing module implements it
 * with its ledger; until then Berth runs with `unlimitedCredits` and says so at start.
 *
 * @example
 * const r = await credits.reserve({ workspaceId, keyId, requestId, amountMicros: 1200 });
 * await credits.settle(r, 830); // or credits.release(r) when the call failed
 */
export type Reservation = {
  id: string;
  workspaceId: string;
  amountMicros: number;
  /** The credit lease the call is held against (its usage event names it); absent: its own reservation. */
  leaseId?: string | null;
};

export type ReserveInput = { workspaceId: string; keyId: string | null; requestId: string; amountMicros: number };

export interface CreditGate {
  readonly kind: 'unlimited' | 'ledger' | 'memory';
  /** Throws AppError `insufficient_credits` (402) when the balance cannot cover the amount. */
  reserve(input: ReserveInput): Promise<Reservation>;
  settle(reservation: Reservation, actualMicros: number): Promise<void>;
  release(reservation: Reservation): Promise<void>;
  /** Settles whatever the gate holds on the ledger's behalf (credit leases): shutdown, tests. */
  flush?(): Promise<void>;
}

/** No balance at all: every reservation succeeds. */
export const unlimitedCredits: CreditGate = {
  kind: 'unlimited',
  async reserve(input) {
    return { id: input.requestId, workspaceId: input.workspaceId, amountMicros: input.amountMicros };
  },
  async settle() {},
  async release() {},
};

export function insufficientCredits(): AppError {
  return new AppError(
    'insufficient_credits',
    'The workspace does not have enough credits for this call (its worst-case cost is reserved before it runs).',
  );
}

/**
 * A balance per workspace held in memory: each reservation holds its amount until it is
 * settled or released, each at most once. For a single process (tests, evaluation
 * installs); the billing module's ledger is the durable implementation.
 */
export function memoryCredits(initial: Record<string, number> = {}) {
  const balances = new Map(Object.entries(initial));
  const open = new Map<string, Reservation>();
  let seq = 0;
  const gate: CreditGate & {
    balance(workspaceId: string): number;
    grant(workspaceId: string, micros: number): void;
    openReservations(): number;
  } = {
    kind: 'memory',
    async reserve(input) {
      const balance = balances.get(input.workspaceId) ?? 0;
      if (input.amountMicros > balance) throw insufficientCredits();
      balances.set(input.workspaceId, balance - input.amountMicros);
      const r = { id: `res_${++seq}`, workspaceId: input.workspaceId, amountMicros: input.amountMicros };
      open.set(r.id, r);
      return r;
    },
    async settle(r, actual) {
      if (!open.delete(r.id)) return;
      balances.set(r.workspaceId, (balances.get(r.workspaceId) ?? 0) + r.amountMicros - actual);
    },
    async release(r) {
      if (!open.delete(r.id)) return;
      balances.set(r.workspaceId, (balances.get(r.workspaceId) ?? 0) + r.amountMicros);
    },
    balance: (ws) => balances.get(ws) ?? 0,
    grant: (ws, micros) => balances.set(ws, (balances.get(ws) ?? 0) + micros),
    openReservations: () => open.size,
  };
  return gate;
}
