import { and, eq, gte, inArray, lte, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import {
  type AutoTopupRow,
  type AutoTopupSettingsRow,
  autoTopupSettings,
  autoTopups,
} from './billing.autotopup.tables.ts';

type Rows<T> = { rows: T[] };

/** The settings a member chooses (the rest of the row is the saved card and the failure count). */
export type AutoTopupChoice = Pick<
  AutoTopupSettingsRow,
  'enabled' | 'thresholdMicros' | 'amountMicros' | 'monthlyMaxCount' | 'monthlyMaxMicros'
>;

export type SavedCard = { customerId: string; paymentMethodId: string; brand: string; last4: string };

/** Every SQL statement on the auto top-up tables. */
export const autoTopupRepo = {
  async getSettings(tx: Database, workspaceId: string, lock = false): Promise<AutoTopupSettingsRow | null> {
    const q = tx.select().from(autoTopupSettings).where(eq(autoTopupSettings.workspaceId, workspaceId));
    const rows = lock ? await q.for('update') : await q;
    return rows[0] ?? null;
  },

  /** Saves a member's choice; the saved card stays. */
  async saveChoice(
    tx: Database,
    workspaceId: string,
    choice: AutoTopupChoice & Pick<AutoTopupSettingsRow, 'consecutiveFailures' | 'disabledReason' | 'nextAttemptAt'>,
    by: string | null,
    now: Date,
  ): Promise<void> {
    const set = { ...choice, updatedBy: by, updatedAt: now };
    // An update where the row exists: an insert's row is checked before its conflict is seen.
    const updated = await tx
      .update(autoTopupSettings)
      .set(set)
      .where(eq(autoTopupSettings.workspaceId, workspaceId))
      .returning({ workspaceId: autoTopupSettings.workspaceId });
    if (updated.length === 0) await tx.insert(autoTopupSettings).values({ workspaceId, ...set });
  },

  /** Keeps the processor's references to a newly saved card (replacing an earlier one). */
  async saveCard(tx: Database, workspaceId: string, card: SavedCard, now: Date): Promise<void> {
    const set = {
      processorCustomerId: card.customerId,
      processorPaymentMethodId: card.paymentMethodId,
      cardBrand: card.brand,
      cardLast4: card.last4,
      updatedAt: now,
    };
    await tx
      .insert(autoTopupSettings)
      .values({ workspaceId, enabled: false, ...set })
      .onConflictDoUpdate({ target: autoTopupSettings.workspaceId, set });
  },

  async updateSettings(
    tx: Database,
    workspaceId: string,
    set: Partial<Omit<AutoTopupSettingsRow, 'workspaceId'>>,
  ): Promise<void> {
    await tx.update(autoTopupSettings).set(set).where(eq(autoTopupSettings.workspaceId, workspaceId));
  },

  /**
   * Workspaces that opted in, may be charged now, hold no charge in flight, and whose
   * available credits are below their threshold (system scope: every workspace).
   */
  async dueWorkspaces(tx: Database, now: Date, limit: number): Promise<string[]> {
    const res = (await tx.execute(sql`
      select s.workspace_id as "workspaceId" from auto_topup_settings s
      join credit_balances b on b.workspace_id = s.workspace_id
      where s.enabled and b.available_micros < s.threshold_micros
        and (s.next_attempt_at is null or s.next_attempt_at <= ${now.toISOString()}::timestamptz)
        and not exists (select 1 from auto_topups a where a.workspace_id = s.workspace_id and a.status = 'pending')
      order by s.workspace_id limit ${limit}`)) as unknown as Rows<{ workspaceId: string }>;
    return res.rows.map((r) => String(r.workspaceId));
  },

  /** The charges of a month that count against its cap: in flight or paid. */
  async monthUsage(tx: Database, workspaceId: string, from: Date): Promise<{ count: number; micros: number }> {
    const rows = await tx
      .select({
        count: sql<string>`count(*)::text`,
        micros: sql<string>`coalesce(sum(${autoTopups.amountMicros}), 0)::text`,
      })
      .from(autoTopups)
      .where(
        and(
          eq(autoTopups.workspaceId, workspaceId),
          inArray(autoTopups.status, ['pending', 'succeeded']),
          gte(autoTopups.createdAt, from),
        ),
      );
    return { count: Number(rows[0]?.count ?? 0), micros: Number(rows[0]?.micros ?? 0) };
  },

  async inFlight(tx: Database, workspaceId: string): Promise<AutoTopupRow | null> {
    const rows = await tx
      .select()
      .from(autoTopups)
      .where(and(eq(autoTopups.workspaceId, workspaceId), eq(autoTopups.status, 'pending')));
    return rows[0] ?? null;
  },

  async insertCharge(tx: Database, row: AutoTopupRow): Promise<void> {
    await tx.insert(autoTopups).values(row);
  },

  async lockCharge(tx: Database, workspaceId: string, id: string): Promise<AutoTopupRow | null> {
    const rows = await tx
      .select()
      .from(autoTopups)
      .where(and(eq(autoTopups.workspaceId, workspaceId), eq(autoTopups.id, id)))
      .for('update');
    return rows[0] ?? null;
  },

  async updateCharge(tx: Database, workspaceId: string, id: string, set: Partial<AutoTopupRow>): Promise<void> {
    await tx
      .update(autoTopups)
      .set(set)
      .where(and(eq(autoTopups.workspaceId, workspaceId), eq(autoTopups.id, id)));
  },

  /** Charges still in flight since before `before` (system scope): their outcome is asked for. */
  async staleCharges(tx: Database, before: Date, limit: number): Promise<AutoTopupRow[]> {
    return tx
      .select()
      .from(autoTopups)
      .where(and(eq(autoTopups.status, 'pending'), lte(autoTopups.createdAt, before)))
      .orderBy(autoTopups.createdAt)
      .limit(limit);
  },
};

export type AutoTopupRepo = typeof autoTopupRepo;
