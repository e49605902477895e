import type { Clock } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { RequestMeta, SessionAuth } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { VaultContext, VaultService } from '../vault/index.ts';
import { identityRepo } from './identity.repo.ts';
import type { IdentityCore } from './identity.service.ts';
import { hashRecoveryCode, newRecoveryCode } from './identity.tokens.ts';
import { matchTotpStep, newTotpSecret, totpUri } from './identity.totp.ts';

export const RECOVERY_CODE_COUNT = 10;

type Deps = {
  db: Db;
  clock: Clock;
  vault: Pick<VaultService, 'encrypt' | 'decrypt'>;
};

const vaultContext = (userId: string, totpId: string): VaultContext => ({
  owner: { type: 'user', id: userId },
  record: `mfa_totp:${totpId}`,
  field: 'secret',
});

/**
 * TOTP second factor and recovery codes. Secrets live only as vault ciphertext; a code is
 * accepted once (its time step is claimed atomically); recovery codes are stored hashed and
 * each works once.
 */
export function mfaService(deps: Deps) {
  const { db, clock, vault } = deps;
  const repo = identityRepo;

  async function secretOf(userId: string, want: 'pending' | 'confirmed'): Promise<string> {
    const row = await repo.totpByUser(db.orm, userId);
    if (!row || (want === 'confirmed') !== (row.confirmedAt !== null)) {
      throw new AppError(
        want === 'confirmed' ? 'not_found' : 'conflict',
        want === 'confirmed'
          ? 'Two-factor authentication is not enabled.'
          : 'Start enrolment first: POST /api/me/mfa/totp.',
      );
    }
    const plain = await vault.decrypt(vaultContext(userId, row.id), row.secretCiphertext);
    return plain.toString('utf8');
  }

  /** Replaces a user's recovery codes inside `tx`; returns the new codes (shown once). */
  async function replaceRecoveryCodes(tx: Database, userId: string): Promise<string[]> {
    const now = clock.now();
    const codes = Array.from({ length: RECOVERY_CODE_COUNT }, () => newRecoveryCode());
    await repo.replaceRecoveryCodes(
      tx,
      userId,
      codes.map((code) => ({ id: newId('rc', now), userId, codeHash: hashRecoveryCode(code), createdAt: now })),
    );
    return codes;
  }

  return {
    async isEnabled(userId: string, tx: Database = db.orm): Promise<boolean> {
      const row = await repo.totpByUser(tx, userId);
      return row?.confirmedAt != null;
    },

    /** Starts enrolment: a new 160-bit secret, returned once, stored encrypted until confirmed. */
    async startTotp(userId: string, email: string): Promise<{ secret: string; otpauthUri: string }> {
      const existing = await repo.totpByUser(db.orm, userId);
      if (existing?.confirmedAt) {
        throw new AppError('mfa_already_enabled', 'Two-factor authentication is already on; turn it off first.');
      }
      const now = clock.now();
      const id = newId('mfa', now);
      const secret = newTotpSecret();
      const ciphertext = await vault.encrypt(vaultContext(userId, id), secret);
      const stored = await repo.upsertPendingTotp(db.orm, {
        id,
        userId,
        secretCiphertext: ciphertext,
        confirmedAt: null,
        lastUsedStep: 0,
        createdAt: now,
      });
      if (!stored) {
        throw new AppError('mfa_already_enabled', 'Two-factor authentication is already on; turn it off first.');
      }
      return { secret, otpauthUri: totpUri(secret, email) };
    },

    /**
     * Confirms enrolment with a first code; returns the recovery codes (shown once).
     * Confirming the factor and storing its recovery codes is one transaction: TOTP is never
     * on without recovery codes.
     */
    async confirmTotp(userId: string, code: string): Promise<string[]> {
      const secret = await secretOf(userId, 'pending');
      const now = clock.now();
      const step = matchTotpStep(secret, code, now);
      if (step === null) throw new AppError('invalid_mfa_code', 'The code is not valid.');
      return db.orm.transaction(async (tx) => {
        if (!(await repo.claimTotpStep(tx, userId, step, now))) {
          throw new AppError('invalid_mfa_code', 'The code is not valid.');
        }
        return replaceRecoveryCodes(tx, userId);
      });
    },

    /**
     * True when the user has a confirmed factor and the code is valid now and was not used
     * before (claims its time step). False, not an error, when the factor is gone.
     */
    async verifyTotp(userId: string, code: string): Promise<boolean> {
      const row = await repo.totpByUser(db.orm, userId);
      if (!row?.confirmedAt) return false;
      const secret = await secretOf(userId, 'confirmed');
      const step = matchTotpStep(secret, code, clock.now());
      if (step === null) return false;
      return repo.claimTotpStep(db.orm, userId, step);
    },

    /** True when the recovery code was unused; it is spent now. */
    async useRecoveryCode(userId: string, code: string): Promise<boolean> {
      return repo.useRecoveryCode(db.orm, userId, hashRecoveryCode(code), clock.now());
    },

    async disableTotp(userId: string): Promise<void> {
      await db.orm.transaction((tx) => repo.deleteTotp(tx, userId));
    },

    regenerateRecoveryCodes: (userId: string) => db.orm.transaction((tx) => replaceRecoveryCodes(tx, userId)),

    unusedRecoveryCodes: (userId: string) => repo.unusedRecoveryCodes(db.orm, userId),
  };
}
export type MfaService = ReturnType<typeof mfaService>;

type UseCaseDeps = {
  mfa: MfaService;
  core: Pick<IdentityCore, 'mustUser' | 'recordSecurityEvent' | 'checkPassword' | 'throttledProof'>;
};

const invalidCode = () => new AppError('invalid_mfa_code', 'The code is not valid.');

/**
 * The 2FA use cases behind /api/me/mfa/*: each change is proven and recorded as a security
 * event. Codes given from a session go through the sign-in throttle like sign-in codes, so a
 * stolen session cannot guess its way to turning 2FA off.
 */
export function mfaUseCases(deps: UseCaseDeps) {
  const { mfa } = deps;
  const { mustUser, recordSecurityEvent, checkPassword, throttledProof } = deps.core;

  /** A TOTP code from a signed-in user, throttled; a wrong one is recorded as `mfa_failed`. */
  async function proveWithCode(auth: SessionAuth, code: string, action: string, meta: RequestMeta): Promise<void> {
    const user = await mustUser(auth.userId);
    const ok = await throttledProof({ email: user.email, userId: user.id }, meta, action, () =>
      mfa.verifyTotp(user.id, code),
    );
    if (!ok) {
      await recordSecurityEvent({ type: 'mfa_failed', userId: user.id, meta, details: { method: 'totp', action } });
      throw invalidCode();
    }
  }

  return {
    async startTotp(auth: SessionAuth, meta: RequestMeta) {
      const user = await mustUser(auth.userId);
      const started = await mfa.startTotp(user.id, user.email);
      await recordSecurityEvent({ type: 'mfa_enrolment_started', userId: user.id, meta });
      return started;
    },

    async confirmTotp(auth: SessionAuth, code: string, meta: RequestMeta): Promise<string[]> {
      let codes: string[];
      try {
        codes = await mfa.confirmTotp(auth.userId, code);
      } catch (err) {
        if (err instanceof AppError && err.code === 'invalid_mfa_code') {
          await recordSecurityEvent({
            type: 'mfa_confirm_failed',
            userId: auth.userId,
            meta,
            details: { factor: 'totp' },
          });
        }
        throw err;
      }
      await recordSecurityEvent({ type: 'mfa_enabled', userId: auth.userId, meta, details: { factor: 'totp' } });
      return codes;
    },

    /** Turns TOTP off after a proof: a current code, or the password (both throttled). */
    async disableTotp(auth: SessionAuth, proof: { code: string } | { password: string }, meta: RequestMeta) {
      if (!(await mfa.isEnabled(auth.userId))) {
        throw new AppError('not_found', 'Two-factor authentication is not enabled.');
      }
      if ('code' in proof) {
        await proveWithCode(auth, proof.code, 'disable_totp', meta);
      } else if (!(await checkPassword(auth, proof.password, meta))) {
        await recordSecurityEvent({
          type: 'mfa_disable_failed',
          userId: auth.userId,
          meta,
          details: { method: 'password' },
        });
        throw new AppError('invalid_credentials', 'The password is not correct.');
      }
      await mfa.disableTotp(auth.userId);
      await recordSecurityEvent({ type: 'mfa_disabled', userId: auth.userId, meta, details: { factor: 'totp' } });
    },

    async regenerateRecoveryCodes(auth: SessionAuth, code: string, meta: RequestMeta): Promise<string[]> {
      await proveWithCode(auth, code, 'regenerate_recovery_codes', meta);
      const codes = await mfa.regenerateRecoveryCodes(auth.userId);
      await recordSecurityEvent({ type: 'recovery_codes_regenerated', userId: auth.userId, meta });
      return codes;
    },
  };
}
export type MfaUseCases = ReturnType<typeof mfaUseCases>;
