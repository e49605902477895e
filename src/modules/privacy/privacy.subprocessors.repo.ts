import { and, asc, count, desc, eq, exists, isNotNull, isNull, lte, or, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import {
  type ObjectionRow,
  type SubprocessorRow,
  subprocessorNotices,
  subprocessorObjections,
  subprocessors,
} from './privacy.subprocessors.tables.ts';

/**
 * Every SQL statement of the sub-processor registry. The registry and its notices are
 * platform tables (run inside `db.system`); objections are a tenant table, named by
 * workspace in every query (`db.tenant`, or `db.system` for the operators' list).
 */
export const subprocessorsRepo = {
  async insert(tx: Database, row: SubprocessorRow): Promise<void> {
    await tx.insert(subprocessors).values(row);
  },

  async find(tx: Database, id: string): Promise<SubprocessorRow | null> {
    return (await tx.select().from(subprocessors).where(eq(subprocessors.id, id)))[0] ?? null;
  },

  async lock(tx: Database, id: string): Promise<SubprocessorRow | null> {
    return (await tx.select().from(subprocessors).where(eq(subprocessors.id, id)).for('update'))[0] ?? null;
  },

  /** Every entry, oldest effective date first. */
  async list(tx: Database): Promise<SubprocessorRow[]> {
    return tx.select().from(subprocessors).orderBy(asc(subprocessors.effectiveAt), asc(subprocessors.id));
  },

  async setRetired(tx: Database, id: string, at: Date): Promise<void> {
    await tx.update(subprocessors).set({ retiredAt: at }).where(eq(subprocessors.id, id));
  },

  /**
   * Entries whose notices are not all sent yet, registered before `before`, and entries with
   * a claim made before `staleBefore` and never sent (its sender died between claim and send).
   */
  async noticesPending(tx: Database, before: Date, staleBefore: Date, limit: number): Promise<string[]> {
    const stale = tx
      .select({ id: subprocessorNotices.subprocessorId })
      .from(subprocessorNotices)
      .where(
        and(
          eq(subprocessorNotices.subprocessorId, subprocessors.id),
          isNull(subprocessorNotices.sentAt),
          lte(subprocessorNotices.claimedAt, staleBefore),
        ),
      );
    const rows = await tx
      .select({ id: subprocessors.id })
      .from(subprocessors)
      .where(or(and(isNull(subprocessors.noticesDoneAt), lte(subprocessors.createdAt, before)), exists(stale)))
      .orderBy(asc(subprocessors.createdAt))
      .limit(limit);
    return rows.map((r) => r.id);
  },

  async markNoticesDone(tx: Database, id: string, at: Date): Promise<void> {
    await tx.update(subprocessors).set({ noticesDoneAt: at }).where(eq(subprocessors.id, id));
  },

  /**
   * Claims the notice of `userId` (before it is sent: another worker, or a rerun, finds it
   * claimed and sends nothing); false when it is claimed already. A claim made before
   * `staleBefore` and never sent is taken over: its sender died between claim and send. One
   * statement decides, so of two workers taking over the same claim only one gets it.
   */
  async claimNotice(
    tx: Database,
    subprocessorId: string,
    userId: string,
    at: Date,
    staleBefore: Date,
  ): Promise<boolean> {
    const rows = await tx
      .insert(subprocessorNotices)
      .values({ subprocessorId, userId, claimedAt: at, sentAt: null })
      .onConflictDoUpdate({
        target: [subprocessorNotices.subprocessorId, subprocessorNotices.userId],
        set: { claimedAt: at },
        setWhere: and(isNull(subprocessorNotices.sentAt), lte(subprocessorNotices.claimedAt, staleBefore)),
      })
      .returning({ userId: subprocessorNotices.userId });
    return rows.length > 0;
  },

  /** Notices of the sub-processor claimed and not (yet) sent. */
  async unsentCount(tx: Database, subprocessorId: string): Promise<number> {
    const [row] = await tx
      .select({ n: count() })
      .from(subprocessorNotices)
      .where(and(eq(subprocessorNotices.subprocessorId, subprocessorId), isNull(subprocessorNotices.sentAt)));
    return row?.n ?? 0;
  },

  async markNoticeSent(tx: Database, subprocessorId: string, userId: string, at: Date): Promise<void> {
    await tx
      .update(subprocessorNotices)
      .set({ sentAt: at })
      .where(and(eq(subprocessorNotices.subprocessorId, subprocessorId), eq(subprocessorNotices.userId, userId)));
  },

  /** Gives a claim back after the mailer refused the message, so a retry sends it. */
  async releaseNotice(tx: Database, subprocessorId: string, userId: string): Promise<void> {
    await tx
      .delete(subprocessorNotices)
      .where(
        and(
          eq(subprocessorNotices.subprocessorId, subprocessorId),
          eq(subprocessorNotices.userId, userId),
          isNull(subprocessorNotices.sentAt),
        ),
      );
  },

  /** Notices sent, per sub-processor. */
  async noticeCounts(tx: Database): Promise<Map<string, number>> {
    const rows = await tx
      .select({ id: subprocessorNotices.subprocessorId, n: count() })
      .from(subprocessorNotices)
      .where(isNotNull(subprocessorNotices.sentAt))
      .groupBy(subprocessorNotices.subprocessorId);
    return new Map(rows.map((r) => [r.id, r.n]));
  },

  /** Records the objection; false when the workspace already objected to this sub-processor. */
  async insertObjection(tx: Database, row: ObjectionRow): Promise<boolean> {
    const rows = await tx
      .insert(subprocessorObjections)
      .values(row)
      .onConflictDoNothing()
      .returning({ id: subprocessorObjections.subprocessorId });
    return rows.length > 0;
  },

  /** Objections across workspaces, newest first (system scope). */
  async listObjections(tx: Database, subprocessorId?: string): Promise<ObjectionRow[]> {
    return tx
      .select()
      .from(subprocessorObjections)
      .where(subprocessorId ? eq(subprocessorObjections.subprocessorId, subprocessorId) : undefined)
      .orderBy(desc(subprocessorObjections.createdAt))
      .limit(1000);
  },

  /** Objections per sub-processor (system scope). */
  async objectionCounts(tx: Database): Promise<Map<string, number>> {
    const rows = await tx
      .select({ id: subprocessorObjections.subprocessorId, n: sql<number>`count(*)::int` })
      .from(subprocessorObjections)
      .groupBy(subprocessorObjections.subprocessorId);
    return new Map(rows.map((r) => [r.id, r.n]));
  },
};

export type SubprocessorsRepo = typeof subprocessorsRepo;
