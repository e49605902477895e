import { and, asc, desc, eq, lt, max, ne, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { billingStatements, type StatementRow } from './billing.statements.tables.ts';
import {
  creditBalances,
  ledgerTransactions,
  type PaymentRow,
  payments,
  type TransactionRow,
  workspacePlans,
} from './billing.tables.ts';

type Rows<T> = { rows: T[] };

/**
 * A month of a workspace's ledger, read in one statement (one snapshot): the change of its
 * own accounts (`available` + `held`), and each kind of movement as its platform account saw
 * it. Double entry makes the two agree; a statement says when they do not. A balance carried
 * forward by retention is no movement: it counts in the balance before later months
 * (`balanceBefore`), never in a month's figures.
 */
export type MonthFigures = {
  /** Sum of the postings on `available` and `held` in the month. */
  accountsDelta: number;
  granted: number;
  bought: number;
  refunded: number;
  /** Signed: operators' corrections up minus down. */
  adjusted: number;
  expired: number;
  used: number;
  settlements: number;
  /** `available + held` of the balance row now (null when the workspace has none). */
  balanceNow: number | null;
};

const ts = (d: Date) => sql`${d.toISOString()}::timestamptz`;

/** Every SQL statement of statements and receipts: reads of the ledger and payments, and the statements table. */
export const statementsRepo = {
  async monthFigures(tx: Database, workspaceId: string, start: Date, end: Date): Promise<MonthFigures> {
    const res = (await tx.execute(sql`
      select
        coalesce(sum(p.amount_micros) filter (where p.account in ('available', 'held')), 0)::text as "accountsDelta",
        coalesce(-(sum(p.amount_micros) filter (where p.account = 'platform:grants' and t.kind = 'grant')), 0)::text as "granted",
        coalesce(-(sum(p.amount_micros) filter (where p.account = 'platform:payments' and t.kind = 'topup')), 0)::text as "bought",
        coalesce(sum(p.amount_micros) filter (where p.account = 'platform:payments' and t.kind = 'refund'), 0)::text as "refunded",
        coalesce(-(sum(p.amount_micros) filter (where p.account = 'platform:adjustments')), 0)::text as "adjusted",
        coalesce(sum(p.amount_micros) filter (where p.account = 'platform:grants' and t.kind = 'expire'), 0)::text as "expired",
        coalesce(sum(p.amount_micros) filter (where p.account = 'platform:usage'), 0)::text as "used",
        (count(distinct t.id) filter (where t.kind = 'settle'))::text as "settlements",
        (select (b.available_micros + b.held_micros)::text from credit_balances b
          where b.workspace_id = ${workspaceId}) as "balanceNow"
      from ledger_transactions t
      join ledger_postings p on p.transaction_id = t.id and p.workspace_id = ${workspaceId}
      where t.workspace_id = ${workspaceId} and t.created_at >= ${ts(start)} and t.created_at < ${ts(end)}
        and t.kind <> 'carry_forward'`)) as unknown as Rows<Record<string, string | null>>;
    const r = res.rows[0] ?? {};
    const n = (v: string | null | undefined) => Number(v ?? 0);
    return {
      accountsDelta: n(r.accountsDelta),
      granted: n(r.granted),
      bought: n(r.bought),
      refunded: n(r.refunded),
      adjusted: n(r.adjusted),
      expired: n(r.expired),
      used: n(r.used),
      settlements: n(r.settlements),
      balanceNow: r.balanceNow === null || r.balanceNow === undefined ? null : Number(r.balanceNow),
    };
  },

  /** `available + held` as the postings of every transaction made before `at` leave it. */
  async balanceBefore(tx: Database, workspaceId: string, at: Date): Promise<number> {
    const res = (await tx.execute(sql`
      select coalesce(sum(p.amount_micros), 0)::text as "balance"
      from ledger_postings p
      join ledger_transactions t on t.id = p.transaction_id and t.workspace_id = ${workspaceId}
      where p.workspace_id = ${workspaceId} and p.account in ('available', 'held') and t.created_at < ${ts(at)}`)) as unknown as Rows<{
      balance: string;
    }>;
    return Number(res.rows[0]?.balance ?? 0);
  },

  /**
   * When the workspace's first and last ledger movements were made (null without any). A
   * balance carried forward is not activity: months it alone falls in get no statement.
   */
  async transactionSpan(tx: Database, workspaceId: string): Promise<{ first: Date | null; last: Date | null }> {
    const movements = and(
      eq(ledgerTransactions.workspaceId, workspaceId),
      ne(ledgerTransactions.kind, 'carry_forward'),
    );
    const first = await tx
      .select({ at: ledgerTransactions.createdAt })
      .from(ledgerTransactions)
      .where(movements)
      .orderBy(asc(ledgerTransactions.createdAt))
      .limit(1);
    const last = await tx
      .select({ at: ledgerTransactions.createdAt })
      .from(ledgerTransactions)
      .where(movements)
      .orderBy(desc(ledgerTransactions.createdAt))
      .limit(1);
    return { first: first[0]?.at ?? null, last: last[0]?.at ?? null };
  },

  /** Where retention last carried the workspace's expired transactions forward (null: never). */
  async carriedForwardAt(tx: Database, workspaceId: string): Promise<Date | null> {
    const rows = await tx
      .select({ at: ledgerTransactions.createdAt })
      .from(ledgerTransactions)
      .where(and(eq(ledgerTransactions.workspaceId, workspaceId), eq(ledgerTransactions.kind, 'carry_forward')))
      .orderBy(desc(ledgerTransactions.createdAt))
      .limit(1);
    return rows[0]?.at ?? null;
  },

  async firstPlanStart(tx: Database, workspaceId: string): Promise<Date | null> {
    const rows = await tx
      .select({ at: workspacePlans.startedAt })
      .from(workspacePlans)
      .where(eq(workspacePlans.workspaceId, workspaceId))
      .orderBy(asc(workspacePlans.startedAt))
      .limit(1);
    return rows[0]?.at ?? null;
  },

  /** Every workspace billing knows (system scope), with the period of its newest closed statement. */
  async statementCandidates(tx: Database): Promise<Array<{ workspaceId: string; lastPeriod: string | null }>> {
    const rows = await tx
      .select({ workspaceId: creditBalances.workspaceId, lastPeriod: max(billingStatements.period) })
      .from(creditBalances)
      .leftJoin(billingStatements, eq(billingStatements.workspaceId, creditBalances.workspaceId))
      .groupBy(creditBalances.workspaceId)
      .orderBy(creditBalances.workspaceId);
    return rows.map((r) => ({ workspaceId: r.workspaceId, lastPeriod: r.lastPeriod ?? null }));
  },

  async findStatement(tx: Database, workspaceId: string, period: string): Promise<StatementRow | null> {
    const rows = await tx
      .select()
      .from(billingStatements)
      .where(and(eq(billingStatements.workspaceId, workspaceId), eq(billingStatements.period, period)));
    return rows[0] ?? null;
  },

  /** Closed statements, newest period first, before `before` when given. */
  async listStatements(
    tx: Database,
    workspaceId: string,
    f: { before?: string | undefined; limit: number },
  ): Promise<StatementRow[]> {
    const conds = [eq(billingStatements.workspaceId, workspaceId)];
    if (f.before) conds.push(lt(billingStatements.period, f.before));
    return tx
      .select()
      .from(billingStatements)
      .where(and(...conds))
      .orderBy(desc(billingStatements.period))
      .limit(f.limit);
  },

  /** The next number of a month's statements, across workspaces (system scope). */
  async nextSeq(tx: Database, period: string): Promise<number> {
    const rows = await tx
      .select({ seq: max(billingStatements.seq) })
      .from(billingStatements)
      .where(eq(billingStatements.period, period));
    return (rows[0]?.seq ?? 0) + 1;
  },

  async insertStatement(tx: Database, row: StatementRow): Promise<void> {
    await tx.insert(billingStatements).values(row);
  },

  /** Payments of a workspace, newest first, after the cursor (an id) when given. */
  async listPayments(
    tx: Database,
    workspaceId: string,
    f: { after?: string | undefined; limit: number },
  ): Promise<PaymentRow[]> {
    const conds = [eq(payments.workspaceId, workspaceId)];
    if (f.after) conds.push(lt(payments.id, f.after));
    return tx
      .select()
      .from(payments)
      .where(and(...conds))
      .orderBy(desc(payments.id))
      .limit(f.limit);
  },

  async findPayment(tx: Database, workspaceId: string, id: string): Promise<PaymentRow | null> {
    const rows = await tx
      .select()
      .from(payments)
      .where(and(eq(payments.workspaceId, workspaceId), eq(payments.id, id)));
    return rows[0] ?? null;
  },

  async findTransactionById(tx: Database, workspaceId: string, id: string): Promise<TransactionRow | null> {
    const rows = await tx
      .select()
      .from(ledgerTransactions)
      .where(and(eq(ledgerTransactions.workspaceId, workspaceId), eq(ledgerTransactions.id, id)));
    return rows[0] ?? null;
  },
};

export type StatementsRepo = typeof statementsRepo;
