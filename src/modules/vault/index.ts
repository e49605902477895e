// The vault module: AES-256-GCM envelope encryption with per-owner data keys wrapped by a
// versioned key-encryption key (KEK), KEK rotation and crypto-shredding.
// (Signatures first; the implementation follows in vault.service.ts.)

import type { Database } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Module, PlatformDeps } from '../types.ts';

/** The key-encryption keys Berth knows: the newest version wraps, every version unwraps. */
export type Keyring = { current: { version: number; key: Buffer }; all: Map<number, Buffer> };

/** Whose secret a ciphertext is: its data key belongs to this owner. */
export type VaultOwner = { type: 'user' | 'workspace'; id: string };

/** Binds a ciphertext to its owner, record and field (the AES-GCM additional data). */
export type VaultContext = { owner: VaultOwner; record: string; field: string };

export type VaultService = {
  /** Encrypts under the owner's data key (created on first use). Pass `tx` to take part in a transaction. */
  encrypt(ctx: VaultContext, plaintext: Buffer | string, tx?: Database): Promise<Buffer>;
  /** Decrypts; throws AppError('not_found') when the owner's key was destroyed or the ciphertext does not match. */
  decrypt(ctx: VaultContext, ciphertext: Buffer, tx?: Database): Promise<Buffer>;
  /** Crypto-shredding: destroys the owner's data key so every ciphertext of the owner becomes unreadable. */
  destroyOwnerKey(owner: VaultOwner, tx?: Database): Promise<{ destroyed: number }>;
  /** Rewraps every live data key under the current KEK (idempotent, batched). */
  rotateKek(): Promise<{ rewrapped: number; kekVersion: number }>;
};

export function createVaultModule(_deps: PlatformDeps & { keyring: Keyring }): Module<VaultService> {
  const pending = () => Promise.reject(new AppError('unavailable', 'The vault is not ready yet.'));
  return {
    service: { encrypt: pending, decrypt: pending, destroyOwnerKey: pending, rotateKek: pending },
    dataMap: [],
  };
}
