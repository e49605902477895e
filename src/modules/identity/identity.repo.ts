import { and, asc, count, desc, eq, gt, inArray, isNull, lt, lte, min, ne, or, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import {
  emailTokens,
  loginChallenges,
  loginFailures,
  mfaRecoveryCodes,
  mfaTotp,
  securityEvents,
  sessions,
  users,
} from './identity.tables.ts';

export type UserRow = typeof users.$inferSelect;
export type SessionRow = typeof sessions.$inferSelect;
export type EmailTokenRow = typeof emailTokens.$inferSelect;
export type EmailTokenPurpose = EmailTokenRow['purpose'];
export type SecurityEventRow = typeof securityEvents.$inferSelect;
export type ThrottleKind = (typeof loginFailures.$inferSelect)['kind'];

/** Every SQL statement on the identity tables. Each function takes the handle to run on (root or transaction). */
export const identityRepo = {
  // users
  async insertUser(db: Database, row: typeof users.$inferInsert): Promise<boolean> {
    const inserted = await db
      .insert(users)
      .values(row)
      .onConflictDoNothing({ target: users.email })
      .returning({ id: users.id });
    return inserted.length === 1;
  },
  async userById(db: Database, id: string): Promise<UserRow | null> {
    const [row] = await db.select().from(users).where(eq(users.id, id));
    return row ?? null;
  },
  /** The user row, locked until the transaction ends (status changes serialise on it). */
  async lockUser(db: Database, id: string): Promise<UserRow | null> {
    const [row] = await db.select().from(users).where(eq(users.id, id)).for('update');
    return row ?? null;
  },
  async userByEmail(db: Database, email: string): Promise<UserRow | null> {
    const [row] = await db.select().from(users).where(eq(users.email, email));
    return row ?? null;
  },
  async updateUser(db: Database, id: string, patch: Partial<typeof users.$inferInsert>): Promise<UserRow | null> {
    const [row] = await db.update(users).set(patch).where(eq(users.id, id)).returning();
    return row ?? null;
  },
  /** Sets the status only while it is `from`: whether it changed. */
  async changeStatus(
    db: Database,
    id: string,
    from: UserRow['status'],
    to: UserRow['status'],
    at: Date,
  ): Promise<boolean> {
    const rows = await db
      .update(users)
      .set({ status: to, updatedAt: at })
      .where(and(eq(users.id, id), eq(users.status, from)))
      .returning({ id: users.id });
    return rows.length > 0;
  },
  async listOperators(db: Database): Promise<UserRow[]> {
    return db.select().from(users).where(eq(users.isOperator, true)).orderBy(asc(users.createdAt));
  },
  /**
   * Locks every operator row and returns them with their status, so two removals or
   * disablings cannot both see "one other active operator left".
   */
  async lockOperators(db: Database): Promise<Array<{ id: string; status: UserRow['status'] }>> {
    return db
      .select({ id: users.id, status: users.status })
      .from(users)
      .where(eq(users.isOperator, true))
      .orderBy(asc(users.id))
      .for('update');
  },

  // sessions
  async insertSession(db: Database, row: typeof sessions.$inferInsert): Promise<void> {
    await db.insert(sessions).values(row);
  },
  /** The session behind a token with its user and whether the user has a confirmed second factor. */
  async sessionByTokenHash(db: Database, tokenHash: string) {
    const [row] = await db
      .select({
        session: sessions,
        userStatus: users.status,
        isOperator: users.isOperator,
        mfaConfirmedAt: mfaTotp.confirmedAt,
      })
      .from(sessions)
      .innerJoin(users, eq(users.id, sessions.userId))
      .leftJoin(mfaTotp, eq(mfaTotp.userId, sessions.userId))
      .where(eq(sessions.tokenHash, tokenHash));
    return row ?? null;
  },
  async sessionById(db: Database, id: string): Promise<SessionRow | null> {
    const [row] = await db.select().from(sessions).where(eq(sessions.id, id));
    return row ?? null;
  },
  /** Slides the idle expiry; a no-op when another request already did it this minute. */
  async touchSession(db: Database, id: string, now: Date, idleExpiresAt: Date, notSeenSince: Date): Promise<void> {
    await db
      .update(sessions)
      .set({ lastSeenAt: now, idleExpiresAt })
      .where(and(eq(sessions.id, id), lt(sessions.lastSeenAt, notSeenSince), isNull(sessions.revokedAt)));
  },
  async activeSessions(db: Database, userId: string, now: Date): Promise<SessionRow[]> {
    return db
      .select()
      .from(sessions)
      .where(
        and(
          eq(sessions.userId, userId),
          isNull(sessions.revokedAt),
          gt(sessions.idleExpiresAt, now),
          gt(sessions.absoluteExpiresAt, now),
        ),
      )
      .orderBy(desc(sessions.createdAt));
  },
  async revokeSession(db: Database, userId: string, id: string, now: Date, reason: string): Promise<boolean> {
    const rows = await db
      .update(sessions)
      .set({ revokedAt: now, revokeReason: reason })
      .where(and(eq(sessions.id, id), eq(sessions.userId, userId), isNull(sessions.revokedAt)))
      .returning({ id: sessions.id });
    return rows.length === 1;
  },
  /** Ends every live session of a user, except `keep` when given. Returns how many ended. */
  async revokeUserSessions(db: Database, userId: string, now: Date, reason: string, keep?: string): Promise<number> {
    const rows = await db
      .update(sessions)
      .set({ revokedAt: now, revokeReason: reason })
      .where(and(eq(sessions.userId, userId), isNull(sessions.revokedAt), keep ? ne(sessions.id, keep) : undefined))
      .returning({ id: sessions.id });
    return rows.length;
  },

  // email tokens
  async insertEmailToken(db: Database, row: typeof emailTokens.$inferInsert): Promise<void> {
    await db.insert(emailTokens).values(row);
  },
  /** Marks a live token used and returns it: atomic, so a token works exactly once. */
  async consumeEmailToken(
    db: Database,
    purpose: EmailTokenPurpose,
    tokenHash: string,
    now: Date,
  ): Promise<EmailTokenRow | null> {
    const [row] = await db
      .update(emailTokens)
      .set({ usedAt: now })
      .where(
        and(
          eq(emailTokens.tokenHash, tokenHash),
          eq(emailTokens.purpose, purpose),
          isNull(emailTokens.usedAt),
          gt(emailTokens.expiresAt, now),
        ),
      )
      .returning();
    return row ?? null;
  },
  async emailTokenByHash(db: Database, purpose: EmailTokenPurpose, tokenHash: string): Promise<EmailTokenRow | null> {
    const [row] = await db
      .select()
      .from(emailTokens)
      .where(and(eq(emailTokens.tokenHash, tokenHash), eq(emailTokens.purpose, purpose)));
    return row ?? null;
  },
  /** Spends every live token of a user for a purpose; returns their ids. */
  async expireUserEmailTokens(db: Database, userId: string, purpose: EmailTokenPurpose, now: Date): Promise<string[]> {
    const rows = await db
      .update(emailTokens)
      .set({ usedAt: now })
      .where(and(eq(emailTokens.userId, userId), eq(emailTokens.purpose, purpose), isNull(emailTokens.usedAt)))
      .returning({ id: emailTokens.id });
    return rows.map((r) => r.id);
  },

  // TOTP
  async totpByUser(db: Database, userId: string) {
    const [row] = await db.select().from(mfaTotp).where(eq(mfaTotp.userId, userId));
    return row ?? null;
  },
  /** Starts (or restarts) an unconfirmed enrolment; a confirmed factor is never replaced here. */
  async upsertPendingTotp(db: Database, row: typeof mfaTotp.$inferInsert): Promise<boolean> {
    const rows = await db
      .insert(mfaTotp)
      .values(row)
      .onConflictDoUpdate({
        target: mfaTotp.userId,
        set: { id: row.id, secretCiphertext: row.secretCiphertext, createdAt: row.createdAt, lastUsedStep: 0 },
        setWhere: isNull(mfaTotp.confirmedAt),
      })
      .returning({ id: mfaTotp.id });
    return rows.length === 1;
  },
  /**
   * Claims a time step for a user's factor: succeeds only when the step is newer than the
   * last one used, in one statement, so the same code is accepted once even when two
   * requests race.
   */
  async claimTotpStep(db: Database, userId: string, step: number, confirmAt?: Date): Promise<boolean> {
    const rows = await db
      .update(mfaTotp)
      .set({ lastUsedStep: step, ...(confirmAt ? { confirmedAt: confirmAt } : {}) })
      .where(
        and(
          eq(mfaTotp.userId, userId),
          lt(mfaTotp.lastUsedStep, step),
          confirmAt ? isNull(mfaTotp.confirmedAt) : sql`${mfaTotp.confirmedAt} is not null`,
        ),
      )
      .returning({ id: mfaTotp.id });
    return rows.length === 1;
  },
  async deleteTotp(db: Database, userId: string): Promise<void> {
    await db.delete(mfaTotp).where(eq(mfaTotp.userId, userId));
    await db.delete(mfaRecoveryCodes).where(eq(mfaRecoveryCodes.userId, userId));
  },

  // recovery codes
  async replaceRecoveryCodes(db: Database, userId: string, rows: Array<typeof mfaRecoveryCodes.$inferInsert>) {
    await db.delete(mfaRecoveryCodes).where(eq(mfaRecoveryCodes.userId, userId));
    await db.insert(mfaRecoveryCodes).values(rows);
  },
  async useRecoveryCode(db: Database, userId: string, codeHash: string, now: Date): Promise<boolean> {
    const rows = await db
      .update(mfaRecoveryCodes)
      .set({ usedAt: now })
      .where(
        and(
          eq(mfaRecoveryCodes.userId, userId),
          eq(mfaRecoveryCodes.codeHash, codeHash),
          isNull(mfaRecoveryCodes.usedAt),
        ),
      )
      .returning({ id: mfaRecoveryCodes.id });
    return rows.length === 1;
  },
  async unusedRecoveryCodes(db: Database, userId: string): Promise<number> {
    const [row] = await db
      .select({ n: count() })
      .from(mfaRecoveryCodes)
      .where(and(eq(mfaRecoveryCodes.userId, userId), isNull(mfaRecoveryCodes.usedAt)));
    return Number(row?.n ?? 0);
  },

  // login challenges
  async insertChallenge(db: Database, row: typeof loginChallenges.$inferInsert): Promise<void> {
    await db.insert(loginChallenges).values(row);
  },
  /** Counts one attempt on a live challenge and returns it; null when it is unknown, used, expired or spent. */
  async attemptChallenge(db: Database, tokenHash: string, now: Date, maxAttempts: number) {
    const [row] = await db
      .update(loginChallenges)
      .set({ attempts: sql`${loginChallenges.attempts} + 1` })
      .where(
        and(
          eq(loginChallenges.tokenHash, tokenHash),
          isNull(loginChallenges.usedAt),
          gt(loginChallenges.expiresAt, now),
          lt(loginChallenges.attempts, maxAttempts),
        ),
      )
      .returning();
    return row ?? null;
  },
  async finishChallenge(db: Database, id: string, now: Date): Promise<boolean> {
    const rows = await db
      .update(loginChallenges)
      .set({ usedAt: now })
      .where(and(eq(loginChallenges.id, id), isNull(loginChallenges.usedAt)))
      .returning({ id: loginChallenges.id });
    return rows.length === 1;
  },

  // throttling
  /**
   * Serialises every counter change of one key until the transaction ends, so a count and
   * the insert after it cannot interleave with another request's (no check-then-act race).
   */
  async lockThrottleKey(db: Database, lockClass: number, keyHash: string): Promise<void> {
    await db.execute(sql`select pg_advisory_xact_lock(${lockClass}::int, hashtext(${keyHash}))`);
  },
  async recordFailure(db: Database, kind: ThrottleKind, keyHash: string, now: Date): Promise<number> {
    const [row] = await db
      .insert(loginFailures)
      .values({ kind, keyHash, createdAt: now })
      .returning({ id: loginFailures.id });
    return row?.id ?? 0;
  },
  async deleteFailures(db: Database, ids: number[]): Promise<void> {
    if (ids.length > 0) await db.delete(loginFailures).where(inArray(loginFailures.id, ids));
  },
  /** Counted attempts for a key since `since`, and the oldest of them (when the window frees up). */
  async failuresSince(db: Database, kind: ThrottleKind, keyHash: string, since: Date) {
    const [row] = await db
      .select({ n: count(), oldest: min(loginFailures.createdAt) })
      .from(loginFailures)
      .where(and(eq(loginFailures.kind, kind), eq(loginFailures.keyHash, keyHash), gt(loginFailures.createdAt, since)));
    return { count: Number(row?.n ?? 0), oldest: row?.oldest ? new Date(row.oldest) : null };
  },
  async clearFailures(db: Database, kind: ThrottleKind, keyHash: string): Promise<void> {
    await db.delete(loginFailures).where(and(eq(loginFailures.kind, kind), eq(loginFailures.keyHash, keyHash)));
  },

  // security events
  async insertSecurityEvent(db: Database, row: typeof securityEvents.$inferInsert): Promise<void> {
    await db.insert(securityEvents).values(row);
  },
  async securityEventsForUser(db: Database, userId: string, limit: number): Promise<SecurityEventRow[]> {
    return db
      .select()
      .from(securityEvents)
      .where(eq(securityEvents.userId, userId))
      .orderBy(desc(securityEvents.createdAt), desc(securityEvents.id))
      .limit(limit);
  },

  /** Deletes what has expired: ended sessions, spent tokens and challenges, old throttling rows. */
  async purgeExpired(db: Database, now: Date, failuresBefore: Date) {
    const s = await db
      .delete(sessions)
      .where(
        or(
          lte(sessions.absoluteExpiresAt, now),
          lte(sessions.idleExpiresAt, now),
          sql`${sessions.revokedAt} is not null`,
        ),
      )
      .returning({ id: sessions.id });
    const t = await db
      .delete(emailTokens)
      .where(or(lte(emailTokens.expiresAt, now), sql`${emailTokens.usedAt} is not null`))
      .returning({ id: emailTokens.id });
    const c = await db
      .delete(loginChallenges)
      .where(or(lte(loginChallenges.expiresAt, now), sql`${loginChallenges.usedAt} is not null`))
      .returning({ id: loginChallenges.id });
    const f = await db
      .delete(loginFailures)
      .where(lte(loginFailures.createdAt, failuresBefore))
      .returning({ id: loginFailures.id });
    return { sessions: s.length, emailTokens: t.length, challenges: c.length, loginFailures: f.length };
  },
};
