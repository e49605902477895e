import type { Clock } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { RequestMeta, SessionAuth } from '../../platform/http/context.ts';
import type { MfaService } from './identity.mfa.ts';
import { identityRepo } from './identity.repo.ts';
import type { IdentityCore } from './identity.service.ts';

type Deps = {
  db: Pick<Db, 'system'>;
  clock: Clock;
  mfa: Pick<MfaService, 'isEnabled' | 'verifyTotp'>;
  core: Pick<IdentityCore, 'mustUser' | 'recordSecurityEvent' | 'checkPassword' | 'throttledProof'>;
  /** Told once a closing has committed (other modules drop what the account could still use). */
  userDisabled: (userId: string) => Promise<void>;
};

/**
 * What deleting an account needs from identity (the privacy module runs the deletion):
 * proving again who one is, closing the account at once, and reopening it when the
 * deletion is cancelled within its grace period.
 */
export function deletionUseCases(deps: Deps) {
  const { db, clock, mfa } = deps;
  const { mustUser, recordSecurityEvent, checkPassword, throttledProof } = deps.core;
  const repo = identityRepo;

  return {
    /**
     * Re-authentication for an irreversible step: the current password and, when the
     * account has two-factor authentication, a current code (both throttled like sign-in).
     * Missing proof: 401 `reauthentication_required`; a wrong password: 401
     * `invalid_credentials`; a wrong code: 400 `invalid_mfa_code`.
     */
    async reauthenticate(
      auth: SessionAuth,
      proof: { password?: string | undefined; code?: string | undefined },
      meta: RequestMeta,
      action: string,
    ): Promise<void> {
      const mfaOn = await mfa.isEnabled(auth.userId);
      if (!proof.password || (mfaOn && !proof.code)) {
        throw new AppError(
          'reauthentication_required',
          mfaOn ? 'Confirm with your password and a code from your authenticator app.' : 'Confirm with your password.',
        );
      }
      if (!(await checkPassword(auth, proof.password, meta))) {
        await recordSecurityEvent({
          type: 'reauthentication_failed',
          userId: auth.userId,
          meta,
          details: { method: 'password', action },
        });
        throw new AppError('invalid_credentials', 'The password is not correct.');
      }
      if (mfaOn) {
        const user = await mustUser(auth.userId);
        const code = proof.code ?? '';
        const ok = await throttledProof({ email: user.email, userId: user.id }, meta, action, () =>
          mfa.verifyTotp(user.id, code),
        );
        if (!ok) {
          await recordSecurityEvent({ type: 'mfa_failed', userId: user.id, meta, details: { method: 'totp', action } });
          throw new AppError('invalid_mfa_code', 'The code is not valid.');
        }
      }
    },

    /**
     * Closes an account whose deletion was asked for, in one system transaction: first
     * `write(tx)` (the caller's record of the deletion; it may refuse), then the account is
     * `closing` (no sign-in), every session ended and its second factor and recovery codes
     * removed. Only an active account closes (an operator's ban that won the race: 403
     * `account_disabled`); the last active operator cannot close their account (403
     * `last_operator`).
     * After the commit, the handlers of disabled accounts run (API keys stop on every
     * replica) and a security event is recorded.
     */
    async closeAccount<T>(userId: string, meta: RequestMeta | null, write: (tx: Database) => Promise<T>): Promise<T> {
      const now = clock.now();
      const result = await db.system(async (tx) => {
        const operators = await repo.lockOperators(tx);
        if (
          operators.some((o) => o.id === userId) &&
          !operators.some((o) => o.id !== userId && o.status === 'active')
        ) {
          throw new AppError(
            'last_operator',
            'Berth needs at least one active operator; add another operator before deleting this account.',
          );
        }
        const out = await write(tx);
        if (!(await repo.changeStatus(tx, userId, 'active', 'closing', now))) {
          throw new AppError('account_disabled', 'This account is disabled.');
        }
        await repo.revokeUserSessions(tx, userId, now, 'account_deletion');
        await repo.deleteTotp(tx, userId);
        return out;
      });
      await deps.userDisabled(userId);
      await recordSecurityEvent({ type: 'account_deletion_requested', userId, ...(meta ? { meta } : {}) });
      return result;
    },

    /**
     * Reopens an account whose deletion was cancelled: `write(tx)` (the caller's record; it
     * may refuse), then the account is active again, in one transaction, but only if it is
     * still `closing`: an account an operator disabled stays disabled. Sessions and the
     * second factor ended at closing stay ended: the user signs in again with the password.
     */
    async reopenAccount<T>(userId: string, meta: RequestMeta | null, write: (tx: Database) => Promise<T>): Promise<T> {
      const result = await db.system(async (tx) => {
        const out = await write(tx);
        await repo.changeStatus(tx, userId, 'closing', 'active', clock.now());
        return out;
      });
      await recordSecurityEvent({ type: 'account_deletion_cancelled', userId, ...(meta ? { meta } : {}) });
      return result;
    },
  };
}
export type DeletionUseCases = ReturnType<typeof deletionUseCases>;
