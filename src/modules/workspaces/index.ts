// The workspaces module: workspaces, memberships, roles, invitations and the one
// authorisation check of every workspace route (`requirePermission`).
import { moduleDataMap } from '../../platform/db/datamap.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import type { IdentityService } from '../identity/index.ts';
import type { Mailer } from '../notifications/index.ts';
import type { Module, PlatformDeps } from '../types.ts';
import type { VaultService } from '../vault/index.ts';
import { createAccessControl } from './workspaces.access.ts';
import { RESEND_INVITATIONS_JOB, SEND_INVITATION_JOB, type SendInvitationJob } from './workspaces.invitations.ts';
import { workspacesRepo } from './workspaces.repo.ts';
import { registerWorkspaceRoutes } from './workspaces.routes.ts';
import { type UserDirectory, workspacesService } from './workspaces.service.ts';
import { workspacesTables } from './workspaces.tables.ts';

export type { AccessResolver, MembershipLookup, WorkspaceAccess } from './workspaces.access.ts';
export { requireScope } from './workspaces.access.ts';
export {
  allowedWithoutMfa,
  canGrant,
  canManageMember,
  PERMISSION_NAMES,
  PERMISSIONS,
  type Permission,
  ROLES,
  type Role,
  roleAllows,
} from './workspaces.permissions.ts';
export type {
  InvitationStatus,
  InvitationView,
  MemberView,
  UserDirectory,
  WorkspaceEvent,
  WorkspaceEventHandler,
  WorkspaceStatus,
  WorkspaceView,
} from './workspaces.service.ts';
export { RESEND_INVITATIONS_JOB, SEND_INVITATION_JOB, type SendInvitationJob };

type Identity = Pick<IdentityService, 'findUserById' | 'findUserByEmail'>;

/** Adapts the identity service to what this module needs to know about users. */
function userDirectory(identity: Identity): UserDirectory {
  return {
    async getUsers(ids, tx) {
      const unique = [...new Set(ids)];
      const found = await Promise.all(unique.map((id) => identity.findUserById(id, tx ? { tx } : {})));
      return found.flatMap((u) => (u ? [{ id: u.id, email: u.email, displayName: u.displayName }] : []));
    },
    async findUserIdByEmail(email) {
      return (await identity.findUserByEmail(email))?.id ?? null;
    },
    async hasMfa(userId) {
      return (await identity.findUserById(userId))?.mfaEnabled ?? false;
    },
  };
}

export type WorkspacesDeps = PlatformDeps & { identity: IdentityService; vault: VaultService; mailer: Mailer };

/**
 * Builds the workspaces service: the use cases (all taking a `scope`), `requirePermission`
 * for every workspace route of every module, and `onEvent` for changes other modules react to.
 *
 * @example
 * // in another module's routes
 * app.get('/api/workspaces/:workspaceId/keys', { preHandler: workspaces.requirePermission('keys:read') },
 *   async (req) => keys.listKeys({ scope: requireScope(req) }));
 * // in the keys module's wiring
 * workspaces.onEvent(async (e, tx) => { if (e.type === 'member.removed') await revokeKeysOf(tx, e); });
 */
export function createWorkspacesService(deps: WorkspacesDeps) {
  const core = workspacesService({
    db: deps.db,
    repo: workspacesRepo,
    clock: deps.clock,
    config: deps.config,
    mailer: deps.mailer,
    vault: deps.vault,
    users: userDirectory(deps.identity),
    jobs: deps.jobs,
    logger: deps.logger,
  });
  const access = createAccessControl({ resolveMembership: core.resolveMembership });
  return { ...core, requirePermission: access.requirePermission, registerAccessResolver: access.registerResolver };
}

export type WorkspacesService = ReturnType<typeof createWorkspacesService>;

export const INVITATIONS_PURGE_JOB = 'workspaces.purge-invitations';

export function createWorkspacesModule(deps: WorkspacesDeps): Module<WorkspacesService> {
  const service = createWorkspacesService(deps);
  return {
    service,
    dataMap: moduleDataMap('workspaces', workspacesTables),
    registerRoutes(app: HttpServer) {
      registerWorkspaceRoutes(app, { service, requirePermission: service.requirePermission });
    },
    async registerJobs(jobs: Jobs) {
      await jobs.register(INVITATIONS_PURGE_JOB, async () => {
        await service.purgeClosedInvitations();
      });
      await jobs.schedule(INVITATIONS_PURGE_JOB, '41 * * * *');
      await jobs.register<SendInvitationJob>(SEND_INVITATION_JOB, async (data) => {
        await service.sendInvitationEmail(data);
      });
      await jobs.register(RESEND_INVITATIONS_JOB, async () => {
        await service.resendUnsentInvitations();
      });
      await jobs.schedule(RESEND_INVITATIONS_JOB, '*/10 * * * *');
    },
  };
}
