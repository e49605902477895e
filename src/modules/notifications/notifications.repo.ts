import { desc, eq, lte } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { emailOutbox, type OutboxRow } from './notifications.tables.ts';

/** Every SQL statement on the email outbox. Each function takes the handle to run on. */
export const notificationsRepo = {
  async insert(db: Database, row: typeof emailOutbox.$inferInsert): Promise<void> {
    await db.insert(emailOutbox).values(row);
  },
  /** Newest first. */
  async list(db: Database, limit: number): Promise<OutboxRow[]> {
    return db.select().from(emailOutbox).orderBy(desc(emailOutbox.createdAt), desc(emailOutbox.id)).limit(limit);
  },
  /** Deletes rows whose link has expired; returns how many. */
  async deleteExpired(db: Database, now: Date): Promise<number> {
    const rows = await db.delete(emailOutbox).where(lte(emailOutbox.expiresAt, now)).returning({ id: emailOutbox.id });
    return rows.length;
  },
  /** Deletes the messages carrying one token (it was used or revoked). */
  async deleteByRef(db: Database, ref: string): Promise<number> {
    const rows = await db.delete(emailOutbox).where(eq(emailOutbox.ref, ref)).returning({ id: emailOutbox.id });
    return rows.length;
  },
};
