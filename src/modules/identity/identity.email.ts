import { MINUTE } from '../../platform/clock.ts';
import { AppError } from '../../platform/errors.ts';
import type { RequestMeta, SessionAuth } from '../../platform/http/context.ts';
import { isId, newId } from '../../platform/ids.ts';
import { assertPasswordAcceptable, hashPassword } from './identity.passwords.ts';
import { type EmailTokenPurpose, type EmailTokenRow, identityRepo, type UserRow } from './identity.repo.ts';
import { type IdentityBase, type IdentityDeps, normalizeEmail, type PublicUser } from './identity.service.ts';
import { hashToken, looksLikeToken, newOpaqueToken } from './identity.tokens.ts';

/** The job that mails a password-reset link, off the request path. Its data: `{ userId }` or `{ userId: null }`. */
export const PASSWORD_RESET_MAIL_JOB = 'identity.password-reset-mail';
export type PasswordResetMailJob = { userId: string | null };

type Deps = Pick<IdentityDeps, 'db' | 'clock' | 'config' | 'mailer' | 'throttle' | 'jobs'> & {
  base: Pick<IdentityBase, 'mustUser' | 'toPublicUser' | 'recordSecurityEvent' | 'sendMail' | 'retractMail'>;
};

const invalidLink = () => new AppError('invalid_token', 'This link is not valid.');

/**
 * Single-use links sent by email: address verification and password reset. Tokens are
 * stored as SHA-256; the outbox copy of a link is retracted when the link is used.
 */
export function emailFlows(deps: Deps) {
  const { db, clock, config, mailer, throttle, jobs } = deps;
  const { mustUser, toPublicUser, recordSecurityEvent, sendMail, retractMail } = deps.base;
  const repo = identityRepo;
  const ttlMs = config.BERTH_EMAIL_TOKEN_TTL_MINUTES * MINUTE;

  async function issueEmailToken(userId: string, purpose: EmailTokenPurpose) {
    const now = clock.now();
    const token = newOpaqueToken();
    const id = newId('tok', now);
    const expiresAt = new Date(now.getTime() + ttlMs);
    await repo.insertEmailToken(db.orm, {
      id,
      userId,
      purpose,
      tokenHash: hashToken(token),
      createdAt: now,
      expiresAt,
    });
    return { id, token, expiresAt };
  }

  /** Tells an unknown token from a used or an expired one; returns the live row. */
  function assertLive(row: EmailTokenRow | null, now: Date): EmailTokenRow {
    if (!row) throw invalidLink();
    if (row.usedAt) throw new AppError('token_used', 'This link was already used.');
    if (row.expiresAt <= now) throw new AppError('token_expired', 'This link has expired; ask for a new one.');
    return row;
  }

  /** Spends an email token once (atomic: a token works exactly once, even when requests race). */
  async function consumeEmailToken(purpose: EmailTokenPurpose, token: string): Promise<EmailTokenRow> {
    if (!looksLikeToken(token)) throw invalidLink();
    const tokenHash = hashToken(token);
    const row = await repo.consumeEmailToken(db.orm, purpose, tokenHash, clock.now());
    if (row) return row;
    assertLive(await repo.emailTokenByHash(db.orm, purpose, tokenHash), clock.now());
    throw new AppError('token_used', 'This link was already used.');
  }

  async function sendVerification(user: UserRow): Promise<void> {
    const { id, token, expiresAt } = await issueEmailToken(user.id, 'verify_email');
    await sendMail({
      to: user.email,
      subject: 'Confirm your email address for Berth',
      text: `Confirm your email address by opening this link:\n\n${config.publicUrl}/verify-email?token=${token}\n\nThe link works once and expires in ${config.BERTH_EMAIL_TOKEN_TTL_MINUTES} minutes. If you did not sign up for Berth, ignore this message.\n`,
      tag: 'verify_email',
      userId: user.id,
      expiresAt,
      ref: id,
    });
  }

  /**
   * The password-reset job: issues a link and mails it, for an active account. Errors
   * propagate so the job is retried (each try issues its own link).
   */
  async function deliverPasswordReset(data: PasswordResetMailJob): Promise<void> {
    if (!data.userId || !isId(data.userId, 'usr')) return;
    const user = await repo.userById(db.orm, data.userId);
    if (user?.status !== 'active') return;
    const { id, token, expiresAt } = await issueEmailToken(user.id, 'reset_password');
    await mailer.send({
      to: user.email,
      subject: 'Reset your Berth password',
      text: `Someone asked to reset the password of your Berth account. To choose a new password, open:\n\n${config.publicUrl}/reset-password?token=${token}\n\nThe link works once and expires in ${config.BERTH_EMAIL_TOKEN_TTL_MINUTES} minutes. If it was not you, ignore this message: your password stays as it is.\n`,
      tag: 'reset_password',
      userId: user.id,
      expiresAt,
      ref: id,
    });
  }

  return {
    sendVerification,
    deliverPasswordReset,
    api: {
      async verifyEmail(token: string, meta: RequestMeta): Promise<PublicUser> {
        const row = await consumeEmailToken('verify_email', token);
        await retractMail(row.id);
        const now = clock.now();
        const user = await mustUser(row.userId);
        const updated = user.emailVerifiedAt
          ? user
          : ((await repo.updateUser(db.orm, user.id, { emailVerifiedAt: now, updatedAt: now })) ?? user);
        await recordSecurityEvent({ type: 'email_verified', userId: user.id, meta });
        return toPublicUser(updated);
      },

      /** Mails a new verification link; limited per address and per IP (429 `rate_limited`). */
      async resendVerification(auth: SessionAuth, meta: RequestMeta): Promise<void> {
        const user = await mustUser(auth.userId);
        if (user.emailVerifiedAt) throw new AppError('conflict', 'Your email address is already verified.');
        await throttle.limitEmail(user.email, meta.ip);
        await sendVerification(user);
      },

      /**
       * Always the same answer and the same work on the request path, whether or not the
       * address has an account: count the request (429 `rate_limited` past the limits, for
       * both alike), look the address up, record a security event, queue the mail job. The
       * job issues the link and sends it only for an active account, off the request path.
       */
      async forgotPassword(emailInput: string, meta: RequestMeta): Promise<void> {
        const address = normalizeEmail(emailInput);
        await throttle.limitEmail(address, meta.ip);
        const user = await repo.userByEmail(db.orm, address);
        await recordSecurityEvent({ type: 'password_reset_requested', userId: user?.id ?? null, meta });
        await jobs.send<PasswordResetMailJob>(PASSWORD_RESET_MAIL_JOB, { userId: user?.id ?? null });
      },

      /**
       * Sets a new password from an emailed token. Spending the token, setting the password,
       * spending the user's other reset links and ending every session happen in one
       * transaction: all or nothing.
       */
      async resetPassword(input: { token: string; password: string }, meta: RequestMeta): Promise<void> {
        assertPasswordAcceptable(input.password);
        if (!looksLikeToken(input.token)) throw invalidLink();
        const tokenHash = hashToken(input.token);
        // Checked before hashing, so junk tokens cost no Argon2 work.
        const live = assertLive(await repo.emailTokenByHash(db.orm, 'reset_password', tokenHash), clock.now());
        const user = await mustUser(live.userId);
        const passwordHash = await hashPassword(input.password);
        const now = clock.now();
        const { ended, spent } = await db.orm.transaction(async (tx) => {
          const row = await repo.consumeEmailToken(tx, 'reset_password', tokenHash, now);
          if (!row) throw new AppError('token_used', 'This link was already used.');
          await repo.updateUser(tx, user.id, {
            passwordHash,
            passwordChangedAt: now,
            updatedAt: now,
            ...(user.emailVerifiedAt ? {} : { emailVerifiedAt: now }),
          });
          const others = await repo.expireUserEmailTokens(tx, user.id, 'reset_password', now);
          const n = await repo.revokeUserSessions(tx, user.id, now, 'password_reset');
          return { ended: n, spent: [row.id, ...others] };
        });
        for (const ref of spent) await retractMail(ref);
        await throttle.succeed(user.email);
        await recordSecurityEvent({ type: 'password_reset', userId: user.id, meta, details: { sessionsEnded: ended } });
      },
    },
  };
}
export type EmailFlows = ReturnType<typeof emailFlows>;
