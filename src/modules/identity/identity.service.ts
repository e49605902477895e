import { z } from 'zod';
import type { Config } from '../../config.ts';
import { type Clock, HOUR, MINUTE } from '../../platform/clock.ts';
import type { Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { RequestMeta, SessionAuth } from '../../platform/http/context.ts';
import { isId, newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import type { Mailer, MailMessage } from '../notifications/index.ts';
import type { MfaService } from './identity.mfa.ts';
import {
  assertPasswordAcceptable,
  burnPasswordCheck,
  hashPassword,
  needsRehash,
  verifyPassword,
} from './identity.passwords.ts';
import { type EmailTokenPurpose, identityRepo, type SessionRow, type UserRow } from './identity.repo.ts';
import type { LoginThrottle } from './identity.throttle.ts';
import { hashToken, type IdentityKeys, looksLikeToken, newOpaqueToken, newSessionToken } from './identity.tokens.ts';

/** A user as the API and other modules see it (never the password hash). */
export type PublicUser = {
  id: string;
  email: string;
  displayName: string | null;
  status: 'active' | 'disabled';
  isOperator: boolean;
  emailVerified: boolean;
  mfaEnabled: boolean;
  createdAt: string;
};

export type PublicSession = {
  id: string;
  createdAt: string;
  lastSeenAt: string;
  idleExpiresAt: string;
  absoluteExpiresAt: string;
  ip: string | null;
  userAgent: string | null;
};

/** A session just issued: the token goes into the cookie and nowhere else. */
export type IssuedSession = { sessionId: string; token: string; csrfToken: string; absoluteExpiresAt: Date };

export type SecurityEventInput = {
  type: string;
  userId?: string | null;
  meta?: Partial<RequestMeta>;
  details?: Record<string, string | number | boolean | null>;
};

export type LoginResult =
  | { kind: 'session'; user: PublicUser; session: IssuedSession }
  | { kind: 'mfa'; challengeToken: string };

/** Sessions are touched (last seen, idle expiry slid) at most once per this interval. */
export const SESSION_TOUCH_INTERVAL_MS = MINUTE;
export const CHALLENGE_TTL_MS = 5 * MINUTE;
export const CHALLENGE_MAX_ATTEMPTS = 5;

const emailSchema = z.email().max(254);

/** Emails are stored trimmed and lower-case: one address, one account. */
export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

type Deps = {
  db: Db;
  clock: Clock;
  config: Config;
  logger: Logger;
  mailer: Mailer;
  keys: IdentityKeys;
  throttle: LoginThrottle;
  mfa: MfaService;
};

const invalidCredentials = () => new AppError('invalid_credentials', 'The email or password is not correct.');

export function identityService(deps: Deps) {
  const { db, clock, config, logger, mailer, keys, throttle, mfa } = deps;
  const repo = identityRepo;
  const idleMs = config.BERTH_SESSION_IDLE_MINUTES * MINUTE;
  const absoluteMs = config.BERTH_SESSION_ABSOLUTE_HOURS * HOUR;

  async function toPublicUser(row: UserRow): Promise<PublicUser> {
    return {
      id: row.id,
      email: row.email,
      displayName: row.displayName,
      status: row.status,
      isOperator: row.isOperator,
      emailVerified: row.emailVerifiedAt !== null,
      mfaEnabled: await mfa.isEnabled(row.id),
      createdAt: row.createdAt.toISOString(),
    };
  }

  const toPublicSession = (s: SessionRow): PublicSession => ({
    id: s.id,
    createdAt: s.createdAt.toISOString(),
    lastSeenAt: s.lastSeenAt.toISOString(),
    idleExpiresAt: s.idleExpiresAt.toISOString(),
    absoluteExpiresAt: s.absoluteExpiresAt.toISOString(),
    ip: s.ip,
    userAgent: s.userAgent,
  });

  async function mustUser(id: string): Promise<UserRow> {
    const row = isId(id, 'usr') ? await repo.userById(db.orm, id) : null;
    if (!row) throw new AppError('not_found', 'No such user.');
    return row;
  }

  async function recordSecurityEvent(e: SecurityEventInput): Promise<void> {
    const now = clock.now();
    await repo.insertSecurityEvent(db.orm, {
      id: newId('sev', now),
      userId: e.userId ?? null,
      type: e.type,
      ip: e.meta?.ip ?? null,
      userAgent: e.meta?.userAgent?.slice(0, 512) ?? null,
      details: e.details ?? {},
      createdAt: now,
    });
  }

  /** Sends without failing the caller: a mail outage must not block sign-up; it is logged by tag only. */
  async function sendMail(message: MailMessage): Promise<void> {
    try {
      await mailer.send(message);
    } catch (err) {
      logger.warn({ tag: message.tag, err: (err as Error)?.name ?? 'error' }, 'mail not sent');
    }
  }

  async function issueSession(userId: string, meta: RequestMeta): Promise<IssuedSession> {
    const now = clock.now();
    const token = newSessionToken();
    const sessionId = newId('ses', now);
    const absoluteExpiresAt = new Date(now.getTime() + absoluteMs);
    await repo.insertSession(db.orm, {
      id: sessionId,
      userId,
      tokenHash: hashToken(token),
      createdAt: now,
      lastSeenAt: now,
      idleExpiresAt: new Date(Math.min(now.getTime() + idleMs, absoluteExpiresAt.getTime())),
      absoluteExpiresAt,
      ip: meta.ip,
      userAgent: meta.userAgent?.slice(0, 512) ?? null,
    });
    return { sessionId, token, csrfToken: keys.csrfToken(sessionId), absoluteExpiresAt };
  }

  async function issueEmailToken(userId: string, purpose: EmailTokenPurpose): Promise<string> {
    const now = clock.now();
    const token = newOpaqueToken();
    await repo.insertEmailToken(db.orm, {
      id: newId('tok', now),
      userId,
      purpose,
      tokenHash: hashToken(token),
      createdAt: now,
      expiresAt: new Date(now.getTime() + config.BERTH_EMAIL_TOKEN_TTL_MINUTES * MINUTE),
    });
    return token;
  }

  /** Spends an email token once; tells an unknown token from a used or an expired one. */
  async function consumeEmailToken(purpose: EmailTokenPurpose, token: string) {
    if (!looksLikeToken(token)) throw new AppError('invalid_token', 'This link is not valid.');
    const tokenHash = hashToken(token);
    const row = await repo.consumeEmailToken(db.orm, purpose, tokenHash, clock.now());
    if (row) return row;
    const existing = await repo.emailTokenByHash(db.orm, purpose, tokenHash);
    if (!existing) throw new AppError('invalid_token', 'This link is not valid.');
    if (existing.usedAt) throw new AppError('token_used', 'This link was already used.');
    throw new AppError('token_expired', 'This link has expired; ask for a new one.');
  }

  async function sendVerification(user: UserRow): Promise<void> {
    const token = await issueEmailToken(user.id, 'verify_email');
    await sendMail({
      to: user.email,
      subject: 'Confirm your email address for Berth',
      text: `Confirm your email address by opening this link:\n\n${config.publicUrl}/verify-email?token=${token}\n\nThe link works once and expires in ${config.BERTH_EMAIL_TOKEN_TTL_MINUTES} minutes. If you did not sign up for Berth, ignore this message.\n`,
      tag: 'verify_email',
    });
  }

  async function createUser(input: {
    email: string;
    password: string;
    displayName?: string | null;
    isOperator?: boolean;
    emailVerified?: boolean;
  }): Promise<UserRow> {
    const email = normalizeEmail(input.email);
    if (!emailSchema.safeParse(email).success) {
      throw new AppError('validation_failed', 'The email address is not valid.', {
        details: [{ path: '/email', message: 'invalid email' }],
      });
    }
    assertPasswordAcceptable(input.password);
    const now = clock.now();
    const row = {
      id: newId('usr', now),
      email,
      displayName: input.displayName ?? null,
      passwordHash: await hashPassword(input.password),
      status: 'active' as const,
      isOperator: input.isOperator ?? false,
      emailVerifiedAt: input.emailVerified ? now : null,
      passwordChangedAt: now,
      createdAt: now,
      updatedAt: now,
    };
    if (!(await repo.insertUser(db.orm, row))) {
      throw new AppError('email_taken', 'An account with this email address already exists.');
    }
    return row;
  }

  async function startSession(user: UserRow, meta: RequestMeta, method: string): Promise<LoginResult> {
    // Only a complete sign-in clears the account's failures: a correct password alone must not
    // reset the count of wrong second-factor codes.
    await throttle.succeed(user.email);
    const session = await issueSession(user.id, meta);
    await recordSecurityEvent({ type: 'login_succeeded', userId: user.id, meta, details: { method } });
    return { kind: 'session', user: await toPublicUser(user), session };
  }

  async function setPassword(userId: string, password: string) {
    const now = clock.now();
    await repo.updateUser(db.orm, userId, {
      passwordHash: await hashPassword(password),
      passwordChangedAt: now,
      updatedAt: now,
    });
    await repo.expireUserEmailTokens(db.orm, userId, 'reset_password', now);
  }

  /** Checks a user's password (second proof for sensitive changes such as turning 2FA off); throttled like sign-in. */
  async function checkPassword(auth: SessionAuth, password: string, meta: RequestMeta): Promise<boolean> {
    const user = await mustUser(auth.userId);
    await throttle.check(user.email, meta.ip);
    const ok = await verifyPassword(user.passwordHash, password);
    if (!ok) await throttle.fail(user.email, meta.ip);
    return ok;
  }

  return {
    normalizeEmail,
    recordSecurityEvent,
    toPublicUser,
    mustUser,

    /**
     * Creates an account (CLI `berth admin create`, sign-up). Validates the password rules;
     * `email_taken` when the address is in use.
     *
     * @example await identity.createUser({ email: 'ada@example.com', password, isOperator: true });
     */
    async createUser(input: Parameters<typeof createUser>[0]): Promise<{ id: string; email: string }> {
      const row = await createUser(input);
      await recordSecurityEvent({
        type: 'account_created',
        userId: row.id,
        details: { operator: row.isOperator },
      });
      return { id: row.id, email: row.email };
    },

    async findUserById(id: string): Promise<PublicUser | null> {
      const row = isId(id, 'usr') ? await repo.userById(db.orm, id) : null;
      return row ? toPublicUser(row) : null;
    },

    async findUserByEmail(email: string): Promise<PublicUser | null> {
      const row = await repo.userByEmail(db.orm, normalizeEmail(email));
      return row ? toPublicUser(row) : null;
    },

    async signup(
      input: { email: string; password: string; displayName?: string },
      meta: RequestMeta,
    ): Promise<{ user: PublicUser; session: IssuedSession }> {
      const row = await createUser(input);
      await recordSecurityEvent({ type: 'account_created', userId: row.id, meta, details: { method: 'signup' } });
      await sendVerification(row);
      const session = await issueSession(row.id, meta);
      await recordSecurityEvent({ type: 'login_succeeded', userId: row.id, meta, details: { method: 'signup' } });
      return { user: await toPublicUser(row), session };
    },

    /**
     * Password sign-in. Unknown emails cost the same Argon2 work and get the same answer as
     * wrong passwords. With TOTP on, answers a challenge instead of a session.
     */
    async login(input: { email: string; password: string }, meta: RequestMeta): Promise<LoginResult> {
      const email = normalizeEmail(input.email);
      await throttle.check(email, meta.ip);
      const user = await repo.userByEmail(db.orm, email);
      const ok = user ? await verifyPassword(user.passwordHash, input.password) : false;
      if (!user) await burnPasswordCheck(input.password);
      if (!user || !ok) {
        await throttle.fail(email, meta.ip);
        await recordSecurityEvent({
          type: 'login_failed',
          userId: user?.id ?? null,
          meta,
          details: { reason: user ? 'wrong_password' : 'unknown_email' },
        });
        throw invalidCredentials();
      }
      if (user.status !== 'active') {
        await recordSecurityEvent({ type: 'login_failed', userId: user.id, meta, details: { reason: 'disabled' } });
        throw new AppError('account_disabled', 'This account is disabled.');
      }
      if (needsRehash(user.passwordHash)) {
        await repo.updateUser(db.orm, user.id, { passwordHash: await hashPassword(input.password) });
        await recordSecurityEvent({ type: 'password_rehashed', userId: user.id, meta });
      }
      if (await mfa.isEnabled(user.id)) {
        const now = clock.now();
        const challengeToken = newOpaqueToken();
        await repo.insertChallenge(db.orm, {
          id: newId('tok', now),
          userId: user.id,
          tokenHash: hashToken(challengeToken),
          createdAt: now,
          expiresAt: new Date(now.getTime() + CHALLENGE_TTL_MS),
          attempts: 0,
        });
        await recordSecurityEvent({ type: 'mfa_challenge_issued', userId: user.id, meta });
        return { kind: 'mfa', challengeToken };
      }
      return startSession(user, meta, 'password');
    },

    /** Second step of a sign-in with TOTP: a code or a recovery code against the challenge. */
    async loginMfa(
      input: { challengeToken: string; code?: string; recoveryCode?: string },
      meta: RequestMeta,
    ): Promise<LoginResult> {
      const invalid = () =>
        new AppError('invalid_token', 'This sign-in attempt expired or is not valid; sign in again.');
      if (!looksLikeToken(input.challengeToken)) throw invalid();
      const user = await (async () => {
        const challenge = await repo.attemptChallenge(
          db.orm,
          hashToken(input.challengeToken),
          clock.now(),
          CHALLENGE_MAX_ATTEMPTS,
        );
        const row = challenge ? await repo.userById(db.orm, challenge.userId) : null;
        return challenge && row ? { row, challengeId: challenge.id } : null;
      })();
      if (!user) throw invalid();
      await throttle.check(user.row.email, meta.ip);
      if (user.row.status !== 'active') throw new AppError('account_disabled', 'This account is disabled.');
      const method = input.code !== undefined ? 'totp' : 'recovery_code';
      const ok =
        input.code !== undefined
          ? await mfa.verifyTotp(user.row.id, input.code)
          : await mfa.useRecoveryCode(user.row.id, input.recoveryCode ?? '');
      if (!ok) {
        await throttle.fail(user.row.email, meta.ip);
        await recordSecurityEvent({ type: 'mfa_failed', userId: user.row.id, meta, details: { method } });
        throw new AppError('invalid_mfa_code', 'The code is not valid.');
      }
      if (!(await repo.finishChallenge(db.orm, user.challengeId, clock.now()))) throw invalid();
      if (method === 'recovery_code') {
        await recordSecurityEvent({
          type: 'recovery_code_used',
          userId: user.row.id,
          meta,
          details: { remaining: await mfa.unusedRecoveryCodes(user.row.id) },
        });
      }
      return startSession(user.row, meta, method);
    },

    /**
     * Resolves a session token to who is calling. Revoked, expired or disabled -> null.
     * Slides the idle expiry at most once a minute, so most requests only read.
     */
    async resolveSession(token: string): Promise<SessionAuth | null> {
      if (!looksLikeToken(token)) return null;
      const found = await repo.sessionByTokenHash(db.orm, hashToken(token));
      if (!found) return null;
      const { session } = found;
      const now = clock.now();
      if (
        session.revokedAt ||
        now >= session.idleExpiresAt ||
        now >= session.absoluteExpiresAt ||
        found.userStatus !== 'active'
      ) {
        return null;
      }
      if (now.getTime() - session.lastSeenAt.getTime() >= SESSION_TOUCH_INTERVAL_MS) {
        const idle = new Date(Math.min(now.getTime() + idleMs, session.absoluteExpiresAt.getTime()));
        await repo.touchSession(db.orm, session.id, now, idle, new Date(now.getTime() - SESSION_TOUCH_INTERVAL_MS));
      }
      return {
        kind: 'session',
        userId: session.userId,
        sessionId: session.id,
        mfaEnabled: found.mfaConfirmedAt !== null,
        isOperator: found.isOperator,
      };
    },

    csrfToken: (sessionId: string) => keys.csrfToken(sessionId),
    verifyCsrfToken: (sessionId: string, token: string) => keys.verifyCsrfToken(sessionId, token),

    async me(auth: SessionAuth): Promise<PublicUser> {
      return toPublicUser(await mustUser(auth.userId));
    },

    async currentSession(auth: SessionAuth): Promise<PublicSession> {
      const s = await repo.sessionById(db.orm, auth.sessionId);
      if (!s) throw new AppError('unauthenticated', 'Sign in first.');
      return toPublicSession(s);
    },

    async updateMe(auth: SessionAuth, patch: { displayName?: string | null }): Promise<PublicUser> {
      const row = await repo.updateUser(db.orm, auth.userId, {
        ...(patch.displayName !== undefined ? { displayName: patch.displayName } : {}),
        updatedAt: clock.now(),
      });
      if (!row) throw new AppError('not_found', 'No such user.');
      return toPublicUser(row);
    },

    async logout(auth: SessionAuth, meta: RequestMeta): Promise<void> {
      await repo.revokeSession(db.orm, auth.userId, auth.sessionId, clock.now(), 'logout');
      await recordSecurityEvent({ type: 'logout', userId: auth.userId, meta, details: { sessionId: auth.sessionId } });
    },

    async listSessions(auth: SessionAuth): Promise<Array<PublicSession & { current: boolean }>> {
      const rows = await repo.activeSessions(db.orm, auth.userId, clock.now());
      return rows.map((s) => ({ ...toPublicSession(s), current: s.id === auth.sessionId }));
    },

    async revokeSession(auth: SessionAuth, sessionId: string, meta: RequestMeta): Promise<void> {
      const ok =
        isId(sessionId, 'ses') && (await repo.revokeSession(db.orm, auth.userId, sessionId, clock.now(), 'revoked'));
      if (!ok) throw new AppError('not_found', 'No such session.');
      await recordSecurityEvent({ type: 'session_revoked', userId: auth.userId, meta, details: { sessionId } });
    },

    /** "Sign out everywhere": ends every session of the user, the current one included. */
    async revokeAllSessions(auth: SessionAuth, meta: RequestMeta): Promise<number> {
      const n = await repo.revokeUserSessions(db.orm, auth.userId, clock.now(), 'sign_out_everywhere');
      await recordSecurityEvent({ type: 'sessions_revoked', userId: auth.userId, meta, details: { count: n } });
      return n;
    },

    async verifyEmail(token: string, meta: RequestMeta): Promise<PublicUser> {
      const row = await consumeEmailToken('verify_email', token);
      const now = clock.now();
      const user = await mustUser(row.userId);
      const updated = user.emailVerifiedAt
        ? user
        : ((await repo.updateUser(db.orm, user.id, { emailVerifiedAt: now, updatedAt: now })) ?? user);
      await recordSecurityEvent({ type: 'email_verified', userId: user.id, meta });
      return toPublicUser(updated);
    },

    async resendVerification(auth: SessionAuth): Promise<void> {
      const user = await mustUser(auth.userId);
      if (user.emailVerifiedAt) throw new AppError('conflict', 'Your email address is already verified.');
      await sendVerification(user);
    },

    /** Same answer whether or not the email has an account; only active accounts get a link. */
    async forgotPassword(emailInput: string, meta: RequestMeta): Promise<void> {
      const user = await repo.userByEmail(db.orm, normalizeEmail(emailInput));
      if (user?.status !== 'active') return;
      const token = await issueEmailToken(user.id, 'reset_password');
      await recordSecurityEvent({ type: 'password_reset_requested', userId: user.id, meta });
      await sendMail({
        to: user.email,
        subject: 'Reset your Berth password',
        text: `Someone asked to reset the password of your Berth account. To choose a new password, open:\n\n${config.publicUrl}/reset-password?token=${token}\n\nThe link works once and expires in ${config.BERTH_EMAIL_TOKEN_TTL_MINUTES} minutes. If it was not you, ignore this message: your password stays as it is.\n`,
        tag: 'reset_password',
      });
    },

    /** Sets a new password from an emailed token; every session of the account ends. */
    async resetPassword(input: { token: string; password: string }, meta: RequestMeta): Promise<void> {
      assertPasswordAcceptable(input.password);
      const row = await consumeEmailToken('reset_password', input.token);
      const user = await mustUser(row.userId);
      await setPassword(user.id, input.password);
      const now = clock.now();
      if (!user.emailVerifiedAt) await repo.updateUser(db.orm, user.id, { emailVerifiedAt: now });
      const ended = await repo.revokeUserSessions(db.orm, user.id, now, 'password_reset');
      await throttle.succeed(user.email);
      await recordSecurityEvent({ type: 'password_reset', userId: user.id, meta, details: { sessionsEnded: ended } });
    },

    /** Changes the password; every other session of the account ends, this one stays. */
    async changePassword(
      auth: SessionAuth,
      input: { currentPassword: string; newPassword: string },
      meta: RequestMeta,
    ): Promise<void> {
      const user = await mustUser(auth.userId);
      await throttle.check(user.email, meta.ip);
      if (!(await verifyPassword(user.passwordHash, input.currentPassword))) {
        await throttle.fail(user.email, meta.ip);
        await recordSecurityEvent({ type: 'password_change_failed', userId: user.id, meta });
        throw new AppError('invalid_credentials', 'The current password is not correct.');
      }
      assertPasswordAcceptable(input.newPassword);
      await setPassword(user.id, input.newPassword);
      const ended = await repo.revokeUserSessions(db.orm, user.id, clock.now(), 'password_changed', auth.sessionId);
      await recordSecurityEvent({ type: 'password_changed', userId: user.id, meta, details: { sessionsEnded: ended } });
      await sendMail({
        to: user.email,
        subject: 'Your Berth password was changed',
        text: 'The password of your Berth account was just changed, and every other session was signed out. If this was not you, reset your password now.\n',
        tag: 'password_changed',
      });
    },

    checkPassword,

    async listSecurityEvents(userId: string, limit = 100) {
      return repo.securityEventsForUser(db.orm, userId, limit);
    },

    /** Deletes expired sessions, spent tokens and challenges and old throttling rows. */
    async purgeExpired() {
      return repo.purgeExpired(db.orm, clock.now(), throttle.purgeBefore());
    },
  };
}
export type IdentityCore = ReturnType<typeof identityService>;
