import type { Db } from '../../platform/db/db.ts';
import { newId } from '../../platform/ids.ts';
import { movementHash } from './billing.movements.ts';
import type { BillingRepo } from './billing.repo.ts';
import type { LedgerRetentionRepo } from './billing.retention.repo.ts';
import type { PostingRow, TransactionRow } from './billing.tables.ts';

/** The tables billing's ledger retention handles itself (the privacy module's retention run calls it for them). */
export const LEDGER_RETENTION_TABLES = [
  'ledger_transactions',
  'ledger_postings',
  'credit_reservations',
  'promotional_credits',
] as const;

export type LedgerRetentionResult = {
  table: (typeof LEDGER_RETENTION_TABLES)[number];
  /** `rollup`: expired rows replaced by balances carried forward; `older_than`: expired rows deleted. */
  rule: 'rollup' | 'older_than';
  rowsDeleted: number;
  /** Carried-forward transactions (or their postings) written in place of the expired ones. */
  rowsRolledUp: number;
};

/** What one workspace's expiry did (or, in a dry run, would do). */
type WorkspaceCount = {
  transactions: number;
  postings: number;
  reservations: number;
  promotions: number;
  carried: number;
  carriedPostings: number;
};

type Deps = {
  db: Pick<Db, 'system'>;
  repo: LedgerRetentionRepo;
  ledger: Pick<BillingRepo, 'insertTransaction'>;
};

const RETENTION_ACTOR = 'retention';

/**
 * The ledger's retention: transactions made before the cut-off (7 years) go, without changing
 * any balance or any later statement. For each workspace, in one transaction with its balance
 * row locked, the expired postings are summed per account and replaced by one `carry_forward`
 * transaction dated at the cut-off holding those sums (they sum to zero, as every
 * transaction's postings do, so `verify` still balances and each account's sum is the same);
 * then the expired transactions, their postings, the resolved reservations they were for and
 * the processed promotions they granted are deleted. A carry-forward is itself a transaction:
 * a later run folds it into the next one. Idempotent: a second run with the same cut-off finds
 * nothing older; a run that stops halfway leaves every workspace either done or untouched.
 *
 * What stays past the cut-off: a promotion not yet processed keeps its workspace's ledger
 * from its grant on (its expiry replays the ledger from there; promotions expire within 10
 * years); open reservations are kept (their expired `reserve` is in the carried `held`).
 * Payments and auto top-ups expire by their own `created_at`, and their top-up transaction is
 * made after them, so a kept one never names an expired transaction.
 *
 * @example await billing.ledgerRetention.expire(new Date('2019-06-01T00:00:00Z'), false);
 */
export function ledgerRetention(deps: Deps) {
  const { db, repo } = deps;

  async function expireWorkspace(workspaceId: string, cutoff: Date, dryRun: boolean): Promise<WorkspaceCount> {
    return db.system(async (tx) => {
      if (!dryRun) await repo.lockBalance(tx, workspaceId);
      const liveGrant = await repo.oldestLiveGrantBefore(tx, workspaceId, cutoff);
      const at = liveGrant ?? cutoff;
      const transactions = await repo.countExpiredTransactions(tx, workspaceId, at);
      const promotions = await repo.expiredPromotions(tx, workspaceId, at, !dryRun);
      if (transactions === 0) {
        return { transactions: 0, postings: 0, reservations: 0, promotions, carried: 0, carriedPostings: 0 };
      }
      const sums = await repo.expiredSums(tx, workspaceId, at);
      const postings = sums.reduce((n, s) => n + s.postings, 0);
      const carriedSums = sums.filter((s) => s.sumMicros !== 0);
      const reservations = await repo.expiredReservations(tx, workspaceId, at, !dryRun);
      const carried = carriedSums.length > 0 ? 1 : 0;
      if (dryRun)
        return { transactions, postings, reservations, promotions, carried, carriedPostings: carriedSums.length };

      if (carried) {
        const { row, rows } = carryForward(workspaceId, at, carriedSums);
        await deps.ledger.insertTransaction(tx, row, rows);
      }
      const gone = await repo.deleteExpired(tx, workspaceId, at);
      return {
        transactions: gone.transactions,
        postings: gone.postings,
        reservations,
        promotions,
        carried,
        carriedPostings: carried ? carriedSums.length : 0,
      };
    });
  }

  return {
    tables: LEDGER_RETENTION_TABLES,

    /**
     * Expires every workspace's ledger before `cutoff` (a dry run counts and changes nothing).
     * Returns one result per table it handles.
     */
    async expire(cutoff: Date, dryRun: boolean): Promise<LedgerRetentionResult[]> {
      const workspaces = await db.system((tx) => repo.workspacesBefore(tx, cutoff));
      const total: WorkspaceCount = {
        transactions: 0,
        postings: 0,
        reservations: 0,
        promotions: 0,
        carried: 0,
        carriedPostings: 0,
      };
      for (const workspaceId of workspaces) {
        const n = await expireWorkspace(workspaceId, cutoff, dryRun);
        for (const k of Object.keys(total) as Array<keyof WorkspaceCount>) total[k] += n[k];
      }
      return [
        { table: 'ledger_transactions', rule: 'rollup', rowsDeleted: total.transactions, rowsRolledUp: total.carried },
        { table: 'ledger_postings', rule: 'rollup', rowsDeleted: total.postings, rowsRolledUp: total.carriedPostings },
        { table: 'credit_reservations', rule: 'older_than', rowsDeleted: total.reservations, rowsRolledUp: 0 },
        { table: 'promotional_credits', rule: 'older_than', rowsDeleted: total.promotions, rowsRolledUp: 0 },
      ];
    },
  };
}

export type LedgerRetention = ReturnType<typeof ledgerRetention>;

/**
 * The opening-balance transaction of a workspace at `at`: one posting per account holding the
 * sum of its expired postings. Its balances after are the carried `available` and `held`, its
 * amount their total; its key names the cut-off, so it is written once per cut-off.
 */
export function carryForward(
  workspaceId: string,
  at: Date,
  sums: Array<{ account: string; sumMicros: number }>,
): { row: TransactionRow; rows: PostingRow[] } {
  const of = (account: string) => sums.find((s) => s.account === account)?.sumMicros ?? 0;
  const available = of('available');
  const held = of('held');
  const cutoff = at.toISOString();
  const row: TransactionRow = {
    id: newId('ltx', at),
    workspaceId,
    kind: 'carry_forward',
    idempotencyKey: `carry_forward:${cutoff}`,
    requestHash: movementHash('carry_forward', {
      cutoff,
      postings: Object.fromEntries(sums.map((s) => [s.account, s.sumMicros])),
    }),
    amountMicros: Math.abs(available + held),
    reservationId: null,
    availableAfterMicros: available,
    heldAfterMicros: held,
    actorType: 'system',
    actorId: RETENTION_ACTOR,
    memo: `Balance carried forward: the transactions before ${cutoff} expired (billing records are kept 7 years)`,
    createdAt: at,
  };
  const rows = sums.map((s) => ({ transactionId: row.id, workspaceId, account: s.account, amountMicros: s.sumMicros }));
  return { row, rows };
}
