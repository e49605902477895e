// Placeholder: the workspaces module (memberships, roles, invitations, tenant isolation) lands here.
import type { IdentityService } from '../identity/index.ts';
import type { Mailer } from '../notifications/index.ts';
import type { Module, PlatformDeps } from '../types.ts';
import type { VaultService } from '../vault/index.ts';

export type WorkspacesService = Record<string, never>;

export function createWorkspacesModule(
  _deps: PlatformDeps & { identity: IdentityService; vault: VaultService; mailer: Mailer },
): Module<WorkspacesService> {
  return { service: {}, dataMap: [] };
}
