import type { Database, Db } from '../../platform/db/db.ts';
import { newId } from '../../platform/ids.ts';
import { movementHash } from './billing.movements.ts';
import type { BillingRepo } from './billing.repo.ts';
import { carryForwardKey, type LedgerRetentionRepo, type PromotionSpan } from './billing.retention.repo.ts';
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

const NOTHING: WorkspaceCount = {
  transactions: 0,
  postings: 0,
  reservations: 0,
  promotions: 0,
  carried: 0,
  carriedPostings: 0,
};

type Deps = {
  db: Pick<Db, 'system'>;
  repo: LedgerRetentionRepo;
  ledger: Pick<BillingRepo, 'insertTransaction'>;
  /** Expired transactions folded per database transaction (default 5,000). */
  batchSize?: number;
};

const RETENTION_ACTOR = 'retention';
const BATCH_SIZE = 5_000;

/**
 * Where a workspace's ledger may be cut, given its promotions: the cut-off, moved back to the
 * grant of every promotion whose expiry the replay still has to work out. The replay
 * (billing.promotions.ts) needs a promotion not yet processed from its grant on, and with it
 * every promotion open at the same time (spending takes the soonest-expiring first, so what
 * is left of one depends on the others), and theirs in turn. Before that point no promotion
 * is open, so the balance carried forward is all the replay needs. Also the processed
 * promotions that can go: granted and closed (their `expire` transaction made) before it.
 */
export function holdPoint(spans: PromotionSpan[], cutoff: Date): { at: Date; expired: string[] } {
  const end = (s: PromotionSpan) => s.closedAt?.getTime() ?? Number.POSITIVE_INFINITY;
  const overlap = (a: PromotionSpan, b: PromotionSpan) =>
    a.grantedAt.getTime() <= end(b) && b.grantedAt.getTime() <= end(a);
  const needed = new Set(spans.filter((s) => s.closedAt === null));
  for (let grew = true; grew; ) {
    grew = false;
    for (const s of spans) {
      if (needed.has(s) || ![...needed].some((n) => overlap(s, n))) continue;
      needed.add(s);
      grew = true;
    }
  }
  const at = new Date(Math.min(cutoff.getTime(), ...[...needed].map((s) => s.grantedAt.getTime())));
  const expired = spans
    .filter((s) => !needed.has(s) && s.closedAt !== null && s.closedAt.getTime() < at.getTime())
    .map((s) => s.grantTransactionId);
  return { at, expired };
}

/**
 * The ledger's retention: transactions made before the cut-off (7 years) go, without changing
 * any balance or any later statement. For each workspace, the expired postings are summed per
 * account and replaced by one `carry_forward` transaction dated at the cut-off holding those
 * sums (they sum to zero, as every transaction's postings do, so `verify` still balances and
 * each account's sum is the same); the expired transactions, their postings, the resolved
 * reservations no kept transaction names and the processed promotions the replay no longer
 * needs are deleted. A carry-forward is itself a transaction: a later run folds it into the
 * next one, but only when there are real movements to fold (a daily run leaves a workspace
 * with nothing new as it is).
 *
 * A workspace goes in batches of at most `batchSize` transactions, oldest first, each in a
 * database transaction of its own that deletes them and folds their sums into the
 * carry-forward (rewritten with the new totals). A run stopped between batches leaves every
 * balance exact and a carry-forward holding what was deleted so far; the next run continues.
 * No balance row is locked: a batch holds the workspace's ledger-history lock, which only the
 * promotion replay shares, so the gateway's calls never wait for retention.
 *
 * What stays past the cut-off: the ledger from the grant of a promotion the replay still needs
 * (`holdPoint`; promotions expire within 10 years); a processed promotion until its expiry is
 * older than the cut-off; reservations still open or named by a kept transaction. Payments
 * and auto top-ups expire by their own `created_at`, and their top-up transaction is made
 * after them, so a kept one never names an expired transaction.
 *
 * @example await billing.ledgerRetention.expire(new Date('2019-06-01T00:00:00Z'), false);
 */
export function ledgerRetention(deps: Deps) {
  const { db, repo } = deps;
  const batchSize = deps.batchSize ?? BATCH_SIZE;

  async function holdIn(tx: Database, workspaceId: string, cutoff: Date) {
    return holdPoint(await repo.promotionSpans(tx, workspaceId), cutoff);
  }

  /** What expiring the workspace would do, changing nothing. */
  async function countWorkspace(workspaceId: string, cutoff: Date): Promise<WorkspaceCount> {
    return db.system(async (tx) => {
      const { at, expired } = await holdIn(tx, workspaceId, cutoff);
      if (!(await repo.hasExpiredMovements(tx, workspaceId, at))) return { ...NOTHING, promotions: expired.length };
      const sums = await repo.expiredSums(tx, workspaceId, at);
      const carried = sums.filter((s) => s.sumMicros !== 0).length;
      return {
        transactions: await repo.countExpiredTransactions(tx, workspaceId, at),
        postings: sums.reduce((n, s) => n + s.postings, 0),
        reservations: await repo.countExpiredReservations(tx, workspaceId, at),
        promotions: expired.length,
        carried: carried > 0 ? 1 : 0,
        carriedPostings: carried,
      };
    });
  }

  /**
   * Folds the workspace's next batch of expired transactions into its carry-forward: null when
   * nothing is left to do (no movement before the hold point but a lone carry-forward, which is
   * left as it is, and no promotion to delete).
   */
  async function expireBatch(workspaceId: string, cutoff: Date): Promise<(WorkspaceCount & { more: boolean }) | null> {
    return db.system(async (tx) => {
      await repo.lockHistory(tx, workspaceId);
      const { at, expired } = await holdIn(tx, workspaceId, cutoff);
      // Promotions first: none ever names a transaction deleted before it.
      const promotions = await repo.deletePromotions(tx, workspaceId, expired);
      if (!(await repo.hasExpiredMovements(tx, workspaceId, at))) {
        return promotions > 0 ? { ...NOTHING, promotions, more: false } : null;
      }
      const ids = await repo.nextBatch(tx, workspaceId, at, batchSize);
      const current = await repo.carryForwardAt(tx, workspaceId, at);
      const previous = current ? await repo.deleteTransactions(tx, workspaceId, [current]) : null;
      const gone = await repo.deleteTransactions(tx, workspaceId, ids);
      const reservations = await repo.deleteResolvedReservations(tx, workspaceId, gone.reservationIds);
      const totals = new Map<string, number>();
      for (const s of [...(previous?.sums ?? []), ...gone.sums]) {
        totals.set(s.account, (totals.get(s.account) ?? 0) + s.sumMicros);
      }
      const sums = [...totals]
        .filter(([, sum]) => sum !== 0)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([account, sumMicros]) => ({ account, sumMicros }));
      if (sums.length > 0) {
        const { row, rows } = carryForward(workspaceId, at, sums);
        await deps.ledger.insertTransaction(tx, row, rows);
      }
      return {
        transactions: gone.transactions,
        postings: gone.postings,
        reservations,
        promotions,
        carried: sums.length > 0 ? 1 : 0,
        carriedPostings: sums.length,
        more: ids.length === batchSize,
      };
    });
  }

  async function expireWorkspace(workspaceId: string, cutoff: Date): Promise<WorkspaceCount> {
    const done = { ...NOTHING };
    for (;;) {
      const batch = await expireBatch(workspaceId, cutoff);
      if (!batch) break;
      done.transactions += batch.transactions;
      done.postings += batch.postings;
      done.reservations += batch.reservations;
      done.promotions += batch.promotions;
      // Each batch rewrites the one carry-forward: the last one says what stands.
      done.carried = batch.carried;
      done.carriedPostings = batch.carriedPostings;
      if (!batch.more) break;
    }
    return done;
  }

  return {
    tables: LEDGER_RETENTION_TABLES,

    /**
     * Expires every workspace's ledger before `cutoff` (a dry run counts and changes nothing).
     * Returns one result per table it handles.
     */
    async expire(cutoff: Date, dryRun: boolean): Promise<LedgerRetentionResult[]> {
      const workspaces = await db.system((tx) => repo.workspacesBefore(tx, cutoff));
      const total = { ...NOTHING };
      for (const workspaceId of workspaces) {
        const n = dryRun ? await countWorkspace(workspaceId, cutoff) : await expireWorkspace(workspaceId, cutoff);
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
    idempotencyKey: carryForwardKey(at),
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
