import { and, desc, eq, isNull, lt, lte, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import {
  type BalanceRow,
  creditBalances,
  creditReservations,
  ledgerPostings,
  ledgerTransactions,
  type PaymentRow,
  type PlanRow,
  type PostingRow,
  paymentEvents,
  payments,
  type ReservationRow,
  type TransactionRow,
  workspacePlans,
} from './billing.tables.ts';

type Rows<T> = { rows: T[] };

/** Every SQL statement on the billing tables. */
export const billingRepo = {
  async findTransaction(tx: Database, workspaceId: string, idempotencyKey: string): Promise<TransactionRow | null> {
    const rows = await tx
      .select()
      .from(ledgerTransactions)
      .where(
        and(eq(ledgerTransactions.workspaceId, workspaceId), eq(ledgerTransactions.idempotencyKey, idempotencyKey)),
      );
    return rows[0] ?? null;
  },

  async ensureBalance(tx: Database, workspaceId: string, now: Date): Promise<void> {
    await tx
      .insert(creditBalances)
      .values({ workspaceId, availableMicros: 0, heldMicros: 0, updatedAt: now })
      .onConflictDoNothing();
  },

  /**
   * Moves a workspace's balances by the deltas when neither would go below zero (one
   * conditional UPDATE: the row lock serialises concurrent movements). Null when refused,
   * or when the workspace has no balance row yet.
   */
  async applyDeltas(
    tx: Database,
    workspaceId: string,
    d: { available: number; held: number },
    now: Date,
  ): Promise<BalanceRow | null> {
    const rows = await tx
      .update(creditBalances)
      .set({
        availableMicros: sql`${creditBalances.availableMicros} + ${d.available}`,
        heldMicros: sql`${creditBalances.heldMicros} + ${d.held}`,
        updatedAt: now,
      })
      .where(
        and(
          eq(creditBalances.workspaceId, workspaceId),
          sql`${creditBalances.availableMicros} + ${d.available} >= 0`,
          sql`${creditBalances.heldMicros} + ${d.held} >= 0`,
        ),
      )
      .returning();
    return rows[0] ?? null;
  },

  async getBalance(tx: Database, workspaceId: string, lock = false): Promise<BalanceRow | null> {
    const q = tx.select().from(creditBalances).where(eq(creditBalances.workspaceId, workspaceId));
    const rows = lock ? await q.for('update') : await q;
    return rows[0] ?? null;
  },

  /**
   * The workspaces whose credits (available plus held) are below `belowMicros` (system
   * scope): what the credit-standing job compares each minute, off the gateway's path.
   */
  async balancesBelow(
    tx: Database,
    belowMicros: number,
  ): Promise<Array<{ workspaceId: string; availableMicros: number; heldMicros: number }>> {
    return tx
      .select({
        workspaceId: creditBalances.workspaceId,
        availableMicros: creditBalances.availableMicros,
        heldMicros: creditBalances.heldMicros,
      })
      .from(creditBalances)
      .where(sql`${creditBalances.availableMicros} + ${creditBalances.heldMicros} < ${belowMicros}`)
      .orderBy(creditBalances.workspaceId);
  },

  async insertTransaction(tx: Database, row: TransactionRow, postings: PostingRow[]): Promise<void> {
    await tx.insert(ledgerTransactions).values(row);
    if (postings.length > 0) await tx.insert(ledgerPostings).values(postings);
  },

  /** Open reservations past their expiry, oldest first (system scope: every workspace). */
  async expiredReservations(tx: Database, now: Date, limit: number): Promise<ReservationRow[]> {
    return tx
      .select()
      .from(creditReservations)
      .where(and(eq(creditReservations.status, 'open'), lte(creditReservations.expiresAt, now)))
      .orderBy(creditReservations.expiresAt)
      .limit(limit);
  },

  async listTransactions(
    tx: Database,
    workspaceId: string,
    f: { after?: string | undefined; limit: number },
  ): Promise<TransactionRow[]> {
    const conds = [eq(ledgerTransactions.workspaceId, workspaceId)];
    if (f.after) conds.push(lt(ledgerTransactions.id, f.after));
    return tx
      .select()
      .from(ledgerTransactions)
      .where(and(...conds))
      .orderBy(desc(ledgerTransactions.id))
      .limit(f.limit);
  },

  async currentPlan(tx: Database, workspaceId: string, lock = false): Promise<PlanRow | null> {
    const q = tx
      .select()
      .from(workspacePlans)
      .where(and(eq(workspacePlans.workspaceId, workspaceId), isNull(workspacePlans.endedAt)));
    const rows = lock ? await q.for('update') : await q;
    return rows[0] ?? null;
  },

  /** A workspace's plans, newest first. */
  async planHistory(tx: Database, workspaceId: string): Promise<PlanRow[]> {
    return tx
      .select()
      .from(workspacePlans)
      .where(eq(workspacePlans.workspaceId, workspaceId))
      .orderBy(desc(workspacePlans.startedAt), desc(workspacePlans.id));
  },

  /** Every workspace's current plan (system scope), in workspace order. */
  async currentPlans(tx: Database): Promise<PlanRow[]> {
    return tx.select().from(workspacePlans).where(isNull(workspacePlans.endedAt)).orderBy(workspacePlans.workspaceId);
  },

  async endPlan(tx: Database, workspaceId: string, id: string, endedAt: Date): Promise<void> {
    await tx
      .update(workspacePlans)
      .set({ endedAt })
      .where(and(eq(workspacePlans.workspaceId, workspaceId), eq(workspacePlans.id, id)));
  },

  async insertPlan(tx: Database, row: PlanRow): Promise<void> {
    await tx.insert(workspacePlans).values(row);
  },

  async insertPayment(tx: Database, row: PaymentRow): Promise<void> {
    await tx.insert(payments).values(row);
  },

  async lockPayment(tx: Database, workspaceId: string, id: string): Promise<PaymentRow | null> {
    const rows = await tx
      .select()
      .from(payments)
      .where(and(eq(payments.workspaceId, workspaceId), eq(payments.id, id)))
      .for('update');
    return rows[0] ?? null;
  },

  async updatePayment(tx: Database, workspaceId: string, id: string, set: Partial<PaymentRow>): Promise<void> {
    await tx
      .update(payments)
      .set(set)
      .where(and(eq(payments.workspaceId, workspaceId), eq(payments.id, id)));
  },

  /** Notes a processor event as applied; false when it was already (a redelivery). */
  async notePaymentEvent(
    tx: Database,
    row: { id: string; processor: string; type: string; workspaceId: string | null; receivedAt: Date },
  ): Promise<boolean> {
    const rows = await tx.insert(paymentEvents).values(row).onConflictDoNothing().returning({ id: paymentEvents.id });
    return rows.length > 0;
  },

  /**
   * What `verify` compares, per workspace: the stored balances, the sums of the postings
   * on its two accounts, the sum of its open reservations, and how many of its
   * transactions have postings that do not sum to zero.
   */
  async reconcile(
    tx: Database,
    workspaceId: string | null,
  ): Promise<
    Array<{
      workspaceId: string;
      availableMicros: number;
      heldMicros: number;
      postedAvailable: number;
      postedHeld: number;
      openReservations: number;
      unbalanced: number;
    }>
  > {
    const only = workspaceId === null ? sql`true` : sql`b.workspace_id = ${workspaceId}`;
    const res = (await tx.execute(sql`
      select b.workspace_id as "workspaceId",
        b.available_micros::text as "availableMicros",
        b.held_micros::text as "heldMicros",
        coalesce((select sum(amount_micros) from ledger_postings p
          where p.workspace_id = b.workspace_id and p.account = 'available'), 0)::text as "postedAvailable",
        coalesce((select sum(amount_micros) from ledger_postings p
          where p.workspace_id = b.workspace_id and p.account = 'held'), 0)::text as "postedHeld",
        coalesce((select sum(amount_micros) from credit_reservations r
          where r.workspace_id = b.workspace_id and r.status = 'open'), 0)::text as "openReservations",
        (select count(*) from (select 1 from ledger_postings p where p.workspace_id = b.workspace_id
          group by p.transaction_id having sum(p.amount_micros) <> 0) u)::text as "unbalanced"
      from credit_balances b where ${only} order by b.workspace_id`)) as unknown as Rows<Record<string, string>>;
    return res.rows.map((r) => ({
      workspaceId: String(r.workspaceId),
      availableMicros: Number(r.availableMicros),
      heldMicros: Number(r.heldMicros),
      postedAvailable: Number(r.postedAvailable),
      postedHeld: Number(r.postedHeld),
      openReservations: Number(r.openReservations),
      unbalanced: Number(r.unbalanced),
    }));
  },
};

export type BillingRepo = typeof billingRepo;
