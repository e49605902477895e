import { and, asc, eq, gt, inArray, isNull, ne, or } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { creditStanding, type StandingRow, type StandingState } from './billing.standing.tables.ts';

/** Every SQL statement on credit_standing. */
export const standingRepo = {
  /**
   * The rows the standing job looks at (system scope): every open row that is not `ok`, and
   * the rows, closed or not, of `workspaceIds` (the workspaces whose credits are below a threshold).
   */
  async tracked(tx: Database, workspaceIds: string[]): Promise<StandingRow[]> {
    const notOk = and(isNull(creditStanding.closedAt), ne(creditStanding.state, 'ok'));
    return tx
      .select()
      .from(creditStanding)
      .where(workspaceIds.length > 0 ? or(notOk, inArray(creditStanding.workspaceId, workspaceIds)) : notOk);
  },

  async find(tx: Database, workspaceId: string): Promise<StandingRow | null> {
    const rows = await tx.select().from(creditStanding).where(eq(creditStanding.workspaceId, workspaceId));
    return rows[0] ?? null;
  },

  /** The workspace's row, locked for the rest of the transaction; created `ok` when it has none. */
  async lock(tx: Database, workspaceId: string, now: Date): Promise<StandingRow> {
    await tx
      .insert(creditStanding)
      .values({ workspaceId, state: 'ok', since: now, updatedAt: now })
      .onConflictDoNothing();
    const rows = await tx
      .select()
      .from(creditStanding)
      .where(eq(creditStanding.workspaceId, workspaceId))
      .for('update');
    const row = rows[0];
    if (!row) throw new Error('credit_standing row missing after insert');
    return row;
  },

  async update(tx: Database, workspaceId: string, set: Partial<Omit<StandingRow, 'workspaceId'>>): Promise<void> {
    await tx.update(creditStanding).set(set).where(eq(creditStanding.workspaceId, workspaceId));
  },

  /** Stops keeping the standing of a deleted workspace (its balance row outlives it). */
  async close(tx: Database, workspaceId: string, now: Date): Promise<void> {
    await tx
      .insert(creditStanding)
      .values({ workspaceId, state: 'ok', since: now, closedAt: now, updatedAt: now })
      .onConflictDoUpdate({ target: creditStanding.workspaceId, set: { closedAt: now, updatedAt: now } });
  },

  /** Open rows (system scope), in workspace order, optionally in one state; `after` is the previous page's last id. */
  async list(
    tx: Database,
    f: { state?: StandingState | undefined; after?: string | undefined; limit: number },
  ): Promise<StandingRow[]> {
    const conds = [isNull(creditStanding.closedAt)];
    if (f.state) conds.push(eq(creditStanding.state, f.state));
    if (f.after) conds.push(gt(creditStanding.workspaceId, f.after));
    return tx
      .select()
      .from(creditStanding)
      .where(and(...conds))
      .orderBy(asc(creditStanding.workspaceId))
      .limit(f.limit);
  },
};

export type StandingRepo = typeof standingRepo;
