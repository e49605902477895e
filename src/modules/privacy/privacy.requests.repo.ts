import { and, asc, desc, eq, inArray, isNull, lt, lte, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import {
  OPEN_STATUSES,
  type PrivacyRequestRow,
  privacyRequests,
  type RequestStatus,
  type RequestType,
} from './privacy.requests.tables.ts';

const open = () => inArray(privacyRequests.status, [...OPEN_STATUSES]);

export type RequestFilter = {
  status?: RequestStatus | undefined;
  type?: RequestType | undefined;
  userId?: string | undefined;
  /** Open and past its deadline at `now`. */
  overdueAt?: Date | undefined;
  /** The previous page's last id (ids sort by receipt). */
  before?: string | undefined;
  limit: number;
};

/** Every SQL statement on privacy_requests. */
export const requestsRepo = {
  /** Inserts unless the subject has an open request of this type (for this workspace): null then. */
  async insertUnlessOpen(tx: Database, row: PrivacyRequestRow): Promise<PrivacyRequestRow | null> {
    const rows = await tx.insert(privacyRequests).values(row).onConflictDoNothing().returning();
    return rows[0] ?? null;
  },

  async find(tx: Database, id: string): Promise<PrivacyRequestRow | null> {
    const rows = await tx.select().from(privacyRequests).where(eq(privacyRequests.id, id));
    return rows[0] ?? null;
  },

  /** The row, locked for the rest of the transaction. */
  async lock(tx: Database, id: string): Promise<PrivacyRequestRow | null> {
    const rows = await tx.select().from(privacyRequests).where(eq(privacyRequests.id, id)).for('update');
    return rows[0] ?? null;
  },

  async findOpen(
    tx: Database,
    userId: string,
    type: RequestType,
    workspaceId: string | null,
  ): Promise<PrivacyRequestRow | null> {
    const rows = await tx
      .select()
      .from(privacyRequests)
      .where(
        and(
          eq(privacyRequests.userId, userId),
          eq(privacyRequests.type, type),
          sql`coalesce(${privacyRequests.workspaceId}, '') = ${workspaceId ?? ''}`,
          open(),
        ),
      );
    return rows[0] ?? null;
  },

  async update(
    tx: Database,
    id: string,
    set: Partial<Omit<PrivacyRequestRow, 'id' | 'type' | 'userId' | 'workspaceId' | 'receivedAt' | 'dueAt'>>,
  ): Promise<PrivacyRequestRow | null> {
    const rows = await tx.update(privacyRequests).set(set).where(eq(privacyRequests.id, id)).returning();
    return rows[0] ?? null;
  },

  /** Newest first. */
  async list(tx: Database, f: RequestFilter): Promise<PrivacyRequestRow[]> {
    const conds = [];
    if (f.status) conds.push(eq(privacyRequests.status, f.status));
    if (f.type) conds.push(eq(privacyRequests.type, f.type));
    if (f.userId) conds.push(eq(privacyRequests.userId, f.userId));
    if (f.overdueAt) conds.push(open(), lte(privacyRequests.dueAt, f.overdueAt));
    if (f.before) conds.push(lt(privacyRequests.id, f.before));
    return tx
      .select()
      .from(privacyRequests)
      .where(conds.length > 0 ? and(...conds) : undefined)
      .orderBy(desc(privacyRequests.id))
      .limit(f.limit);
  },

  /** Open requests past their deadline whose operators were not told yet, oldest deadline first. */
  async overdueUnalerted(tx: Database, now: Date, limit: number): Promise<PrivacyRequestRow[]> {
    return tx
      .select()
      .from(privacyRequests)
      .where(and(open(), lte(privacyRequests.dueAt, now), isNull(privacyRequests.overdueAlertedAt)))
      .orderBy(asc(privacyRequests.dueAt), asc(privacyRequests.id))
      .limit(limit);
  },

  /** Marks the overdue alert as sent; false when another run claimed it first (or it was answered meanwhile). */
  async claimOverdueAlert(tx: Database, id: string, now: Date): Promise<boolean> {
    const rows = await tx
      .update(privacyRequests)
      .set({ overdueAlertedAt: now })
      .where(and(eq(privacyRequests.id, id), isNull(privacyRequests.overdueAlertedAt), open()))
      .returning({ id: privacyRequests.id });
    return rows.length === 1;
  },
};

export type RequestsRepo = typeof requestsRepo;
