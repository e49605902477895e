import type { Clock } from '../../platform/clock.ts';
import type { Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import { newId } from '../../platform/ids.ts';
import type { VaultContext, VaultService } from '../vault/index.ts';
import { identityRepo } from './identity.repo.ts';
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

  async function newRecoveryCodes(userId: string): Promise<string[]> {
    const now = clock.now();
    const codes = Array.from({ length: RECOVERY_CODE_COUNT }, () => newRecoveryCode());
    await db.orm.transaction((tx) =>
      repo.replaceRecoveryCodes(
        tx,
        userId,
        codes.map((code) => ({ id: newId('rc', now), userId, codeHash: hashRecoveryCode(code), createdAt: now })),
      ),
    );
    return codes;
  }

  return {
    async isEnabled(userId: string): Promise<boolean> {
      const row = await repo.totpByUser(db.orm, userId);
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

    /** Confirms enrolment with a first code; returns the recovery codes (shown once). */
    async confirmTotp(userId: string, code: string): Promise<string[]> {
      const secret = await secretOf(userId, 'pending');
      const now = clock.now();
      const step = matchTotpStep(secret, code, now);
      if (step === null || !(await repo.claimTotpStep(db.orm, userId, step, now))) {
        throw new AppError('invalid_mfa_code', 'The code is not valid.');
      }
      return newRecoveryCodes(userId);
    },

    /** True when the code is valid now and was not used before (claims its time step). */
    async verifyTotp(userId: string, code: string): Promise<boolean> {
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

    regenerateRecoveryCodes: newRecoveryCodes,

    unusedRecoveryCodes: (userId: string) => repo.unusedRecoveryCodes(db.orm, userId),
  };
}
export type MfaService = ReturnType<typeof mfaService>;
