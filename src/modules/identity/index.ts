// Placeholder: the identity module (users, sessions, CSRF, 2FA, throttling) lands here.
import type { Mailer } from '../notifications/index.ts';
import type { Module, PlatformDeps } from '../types.ts';
import type { VaultService } from '../vault/index.ts';

export type IdentityService = Record<string, never>;

export function createIdentityModule(
  _deps: PlatformDeps & { vault: VaultService; mailer: Mailer },
): Module<IdentityService> {
  return { service: {}, dataMap: [] };
}
