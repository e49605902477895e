import { AppError } from '../../platform/errors.ts';
import type { RequestMeta, SessionAuth } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { EmailFlows } from './identity.email.ts';
import {
  assertPasswordAcceptable,
  burnPasswordCheck,
  hashPassword,
  needsRehash,
  verifyPassword,
} from './identity.passwords.ts';
import { identityRepo, type UserRow } from './identity.repo.ts';
import {
  CHALLENGE_MAX_ATTEMPTS,
  CHALLENGE_TTL_MS,
  type IdentityBase,
  type IdentityDeps,
  type IssuedSession,
  type LoginResult,
  normalizeEmail,
  type PublicUser,
} from './identity.service.ts';
import type { SessionsService } from './identity.sessions.ts';
import { hashToken, looksLikeToken, newOpaqueToken } from './identity.tokens.ts';

type Deps = Pick<IdentityDeps, 'db' | 'clock' | 'throttle' | 'mfa'> & {
  base: IdentityBase;
  sessions: Pick<SessionsService, 'issueSession'>;
  email: Pick<EmailFlows, 'sendVerification'>;
};

const invalidCredentials = () => new AppError('invalid_credentials', 'The email or password is not correct.');

/** Sign-up, password sign-in, the second-factor step, and proving or changing a password. */
export function signInFlows(deps: Deps) {
  const { db, clock, throttle, mfa, sessions, email } = deps;
  const { toPublicUser, mustUser, recordSecurityEvent, throttledProof, sendMail, createUserRow, retractMail } =
    deps.base;
  const repo = identityRepo;

  async function startSession(user: UserRow, meta: RequestMeta, method: string): Promise<LoginResult> {
    // Only a complete sign-in clears the account's failures: a correct password alone must not
    // reset the count of wrong second-factor codes.
    await throttle.succeed(user.email);
    const session = await sessions.issueSession(user.id, meta);
    await recordSecurityEvent({ type: 'login_succeeded', userId: user.id, meta, details: { method } });
    return { kind: 'session', user: await toPublicUser(user), session };
  }

  /** Checks a user's password (second proof for sensitive changes such as turning 2FA off); throttled like sign-in. */
  async function checkPassword(auth: SessionAuth, password: string, meta: RequestMeta): Promise<boolean> {
    const user = await mustUser(auth.userId);
    return throttledProof({ email: user.email, userId: user.id }, meta, 'check_password', () =>
      verifyPassword(user.passwordHash, password),
    );
  }

  return {
    checkPassword,

    /** Creates an account and signs it in; sign-ups are limited per IP (429 `rate_limited`). */
    async signup(
      input: { email: string; password: string; displayName?: string },
      meta: RequestMeta,
    ): Promise<{ user: PublicUser; session: IssuedSession }> {
      await throttle.limitSignup(meta.ip);
      const row = await createUserRow(input);
      await recordSecurityEvent({ type: 'account_created', userId: row.id, meta, details: { method: 'signup' } });
      await email.sendVerification(row);
      const session = await sessions.issueSession(row.id, meta);
      await recordSecurityEvent({ type: 'login_succeeded', userId: row.id, meta, details: { method: 'signup' } });
      return { user: await toPublicUser(row), session };
    },

    /**
     * Password sign-in. Unknown emails cost the same Argon2 work and get the same answer as
     * wrong passwords. With TOTP on, answers a challenge instead of a session.
     */
    async login(input: { email: string; password: string }, meta: RequestMeta): Promise<LoginResult> {
      const address = normalizeEmail(input.email);
      const user = await repo.userByEmail(db.orm, address);
      const ok = await throttledProof({ email: address, userId: user?.id ?? null }, meta, 'login', async () => {
        if (user) return verifyPassword(user.passwordHash, input.password);
        await burnPasswordCheck(input.password);
        return false;
      });
      if (!user || !ok) {
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

    /**
     * Second step of a sign-in with TOTP: a code or a recovery code against the challenge.
     * A challenge whose user turned TOTP off since is no longer valid: 400 `invalid_token`.
     */
    async loginMfa(
      input: { challengeToken: string; code?: string; recoveryCode?: string },
      meta: RequestMeta,
    ): Promise<LoginResult> {
      const invalid = () =>
        new AppError('invalid_token', 'This sign-in attempt expired or is not valid; sign in again.');
      if (!looksLikeToken(input.challengeToken)) throw invalid();
      const challenge = await repo.attemptChallenge(
        db.orm,
        hashToken(input.challengeToken),
        clock.now(),
        CHALLENGE_MAX_ATTEMPTS,
      );
      const user = challenge ? await repo.userById(db.orm, challenge.userId) : null;
      if (!challenge || !user || !(await mfa.isEnabled(user.id))) throw invalid();
      if (user.status !== 'active') throw new AppError('account_disabled', 'This account is disabled.');
      const method = input.code !== undefined ? 'totp' : 'recovery_code';
      const ok = await throttledProof({ email: user.email, userId: user.id }, meta, 'login_mfa', () =>
        input.code !== undefined
          ? mfa.verifyTotp(user.id, input.code)
          : mfa.useRecoveryCode(user.id, input.recoveryCode ?? ''),
      );
      if (!ok) {
        await recordSecurityEvent({ type: 'mfa_failed', userId: user.id, meta, details: { method } });
        throw new AppError('invalid_mfa_code', 'The code is not valid.');
      }
      if (!(await repo.finishChallenge(db.orm, challenge.id, clock.now()))) throw invalid();
      if (method === 'recovery_code') {
        await recordSecurityEvent({
          type: 'recovery_code_used',
          userId: user.id,
          meta,
          details: { remaining: await mfa.unusedRecoveryCodes(user.id) },
        });
      }
      return startSession(user, meta, method);
    },

    /**
     * Changes the password after proving the current one (throttled like sign-in). Setting
     * it, spending open reset links and ending every other session happen in one
     * transaction; this session stays.
     */
    async changePassword(
      auth: SessionAuth,
      input: { currentPassword: string; newPassword: string },
      meta: RequestMeta,
    ): Promise<void> {
      const user = await mustUser(auth.userId);
      const ok = await throttledProof({ email: user.email, userId: user.id }, meta, 'change_password', () =>
        verifyPassword(user.passwordHash, input.currentPassword),
      );
      if (!ok) {
        await recordSecurityEvent({ type: 'password_change_failed', userId: user.id, meta });
        throw new AppError('invalid_credentials', 'The current password is not correct.');
      }
      assertPasswordAcceptable(input.newPassword);
      const passwordHash = await hashPassword(input.newPassword);
      const now = clock.now();
      const { ended, spent } = await db.orm.transaction(async (tx) => {
        await repo.updateUser(tx, user.id, { passwordHash, passwordChangedAt: now, updatedAt: now });
        const refs = await repo.expireUserEmailTokens(tx, user.id, 'reset_password', now);
        const n = await repo.revokeUserSessions(tx, user.id, now, 'password_changed', auth.sessionId);
        return { ended: n, spent: refs };
      });
      for (const ref of spent) await retractMail(ref);
      await recordSecurityEvent({ type: 'password_changed', userId: user.id, meta, details: { sessionsEnded: ended } });
      await sendMail({
        to: user.email,
        subject: 'Your Berth password was changed',
        text: 'The password of your Berth account was just changed, and every other session was signed out. If this was not you, reset your password now.\n',
        tag: 'password_changed',
        userId: user.id,
      });
    },
  };
}
