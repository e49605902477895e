// Placeholder: the vault module (envelope encryption, data keys, KEK rotation) lands here.
import type { Module, PlatformDeps } from '../types.ts';

export type Keyring = { current: { version: number; key: Buffer }; all: Map<number, Buffer> };
export type VaultService = Record<string, never>;

export function createVaultModule(_deps: PlatformDeps & { keyring: Keyring }): Module<VaultService> {
  return { service: {}, dataMap: [] };
}
