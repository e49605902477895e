import { AppError, forbidden, notFound } from '../../platform/errors.ts';
import type { Role, Scope } from '../../platform/http/context.ts';
import type { MemberView, WorkspacesCoreRules } from './workspaces.core.ts';
import { canManageMember } from './workspaces.permissions.ts';

/**
 * Members and roles: list, change a role, remove, leave, transfer ownership. Every change
 * locks the workspace row and re-reads the actor's role inside the transaction, and keeps
 * at least one owner.
 */
export function membersUseCases(core: WorkspacesCoreRules) {
  const { db, repo, clock, users } = core.deps;

  async function removeMembership(scope: Scope, userId: string, reason: 'removed' | 'left') {
    await db.tenant(scope.workspaceId, async (tx) => {
      const { actorRole } = await core.lockForChange(tx, scope);
      const target = await repo.findMembership(tx, scope.workspaceId, userId);
      if (!target) throw notFound('member');
      if (reason === 'removed' && !canManageMember(actorRole, target.role)) {
        throw forbidden('Only an owner can remove an owner.');
      }
      await core.assertNotLastOwner(tx, scope.workspaceId, target.role);
      await repo.deleteMembership(tx, scope.workspaceId, userId);
      await core.emit(tx, {
        type: 'member.removed',
        workspaceId: scope.workspaceId,
        actor: scope.actor,
        userId,
        role: target.role,
        reason,
      });
    });
  }

  return {
    async listMembers({ scope }: { scope: Scope }): Promise<MemberView[]> {
      const rows = await db.tenant(scope.workspaceId, (tx) => repo.listMembers(tx, scope.workspaceId));
      const found = new Map((await users.getUsers(rows.map((r) => r.userId))).map((u) => [u.id, u]));
      return rows.map((r) => ({
        userId: r.userId,
        email: found.get(r.userId)?.email ?? null,
        displayName: found.get(r.userId)?.displayName ?? null,
        role: r.role,
        joinedAt: r.createdAt.toISOString(),
      }));
    },

    /** Changes a member's role. Admins manage non-owners; the last owner cannot be demoted. */
    async changeRole({ scope, userId, role }: { scope: Scope; userId: string; role: Role }): Promise<MemberView> {
      const changed = await db.tenant(scope.workspaceId, async (tx) => {
        const { actorRole } = await core.lockForChange(tx, scope);
        const target = await repo.findMembership(tx, scope.workspaceId, userId);
        if (!target) throw notFound('member');
        if (!canManageMember(actorRole, target.role, role)) {
          throw forbidden('Only an owner can change an owner, or make someone an owner.');
        }
        if (target.role !== role) {
          if (role !== 'owner') await core.assertNotLastOwner(tx, scope.workspaceId, target.role);
          await repo.updateRole(tx, scope.workspaceId, userId, role, clock.now());
          await core.emit(tx, {
            type: 'member.role_changed',
            workspaceId: scope.workspaceId,
            actor: scope.actor,
            userId,
            from: target.role,
            to: role,
          });
        }
        return { ...target, role };
      });
      const [user] = await users.getUsers([userId]);
      return {
        userId,
        email: user?.email ?? null,
        displayName: user?.displayName ?? null,
        role: changed.role,
        joinedAt: changed.createdAt.toISOString(),
      };
    },

    /** Removes a member (fires `member.removed` so later modules revoke what they hold). */
    async removeMember({ scope, userId }: { scope: Scope; userId: string }): Promise<void> {
      const self = scope.actor.type === 'user' && scope.actor.userId === userId;
      await removeMembership(scope, userId, self ? 'left' : 'removed');
    },

    /** The caller leaves the workspace (not the last owner). */
    async leave({ scope }: { scope: Scope }): Promise<void> {
      await removeMembership(scope, core.actorUserId(scope), 'left');
    },

    /** Makes another member an owner; the calling owner becomes an admin. */
    async transferOwnership({ scope, toUserId }: { scope: Scope; toUserId: string }): Promise<void> {
      const from = core.actorUserId(scope);
      if (toUserId === from) throw new AppError('bad_request', 'You already own this workspace.');
      await db.tenant(scope.workspaceId, async (tx) => {
        const { actorRole } = await core.lockForChange(tx, scope);
        if (actorRole !== 'owner') throw forbidden('Only an owner can transfer ownership.');
        const target = await repo.findMembership(tx, scope.workspaceId, toUserId);
        if (!target) throw notFound('member');
        const now = clock.now();
        await repo.updateRole(tx, scope.workspaceId, toUserId, 'owner', now);
        await repo.updateRole(tx, scope.workspaceId, from, 'admin', now);
        await core.emit(tx, {
          type: 'ownership.transferred',
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          from,
          to: toUserId,
        });
      });
    },
  };
}
