import { bindTenant, type Database } from '../../platform/db/db.ts';
import { AppError, forbidden, notFound } from '../../platform/errors.ts';
import type { Actor, Role, Scope } from '../../platform/http/context.ts';
import { isId, newId } from '../../platform/ids.ts';
import {
  toWorkspaceView,
  type WorkspaceEventHandler,
  type WorkspaceStatus,
  type WorkspacesServiceDeps,
  type WorkspaceView,
  workspaceName,
  workspacesCore,
} from './workspaces.core.ts';
import { invitationsUseCases } from './workspaces.invitations.ts';
import { membersUseCases } from './workspaces.members.ts';
import type { WorkspaceRow } from './workspaces.tables.ts';

export type {
  InvitationStatus,
  InvitationView,
  MemberView,
  UserDirectory,
  WorkspaceEvent,
  WorkspaceEventHandler,
  WorkspaceStatus,
  WorkspacesServiceDeps,
  WorkspaceView,
} from './workspaces.core.ts';

/**
 * The workspaces use cases: the workspace itself (here), its members
 * (workspaces.members.ts) and its invitations (workspaces.invitations.ts). Every call on a
 * workspace takes its `scope`; each runs in one transaction bound to that workspace
 * (`db.tenant`), so row-level security holds even if a query forgot its filter.
 *
 * @example
 * const ws = await workspaces.createWorkspace({ ownerUserId: user.id, name: 'Acme' });
 * await workspaces.invite({ scope, email: 'bo@example.com', role: 'member' });
 */
export function workspacesService(deps: WorkspacesServiceDeps) {
  const core = workspacesCore(deps);
  const { db, repo, clock, users } = deps;

  return {
    /**
     * Subscribes to workspace events; the handler runs inside the changing transaction.
     * The audit module records them; the keys module revokes a removed member's keys.
     */
    onEvent(handler: WorkspaceEventHandler): void {
      core.onEvent(handler);
    },

    /**
     * Where seat limits come from (billing: the workspace's plan). Invitations beyond the
     * limit (members plus open invitations) are refused with `seat_limit_reached`.
     */
    setSeatLimit(fn: (workspaceId: string) => Promise<number | null>): void {
      core.setSeatLimit(fn);
    },

    /**
     * Creates a workspace owned by `ownerUserId` (also used by `berth admin create`). With
     * `tx`, it joins the caller's transaction (first-run setup, where the owner is not
     * committed yet), which it binds to the new workspace for the rest of that transaction.
     */
    async createWorkspace(input: {
      ownerUserId: string;
      name: string;
      actor?: Actor;
      tx?: Database;
    }): Promise<WorkspaceView> {
      const name = workspaceName(input.name);
      const [owner] = await users.getUsers([input.ownerUserId], input.tx);
      if (!owner) throw notFound('user');
      const now = clock.now();
      const id = newId('ws', now);
      const actor: Actor = input.actor ?? { type: 'user', userId: input.ownerUserId };
      const inTenant = async (fn: (tx: Database) => Promise<WorkspaceView>) => {
        if (!input.tx) return db.tenant(id, fn);
        await bindTenant(input.tx, id);
        return fn(input.tx);
      };
      return inTenant(async (tx) => {
        const row: WorkspaceRow = {
          id,
          name,
          requireMfa: false,
          status: 'active',
          createdBy: input.ownerUserId,
          createdAt: now,
          updatedAt: now,
        };
        await repo.insertWorkspace(tx, row);
        await repo.insertMembership(tx, {
          workspaceId: id,
          userId: input.ownerUserId,
          role: 'owner',
          createdAt: now,
          updatedAt: now,
        });
        await core.emit(tx, { type: 'workspace.created', workspaceId: id, actor, name });
        return toWorkspaceView(row);
      });
    },

    /** The workspaces `userId` belongs to, with their role in each. */
    async listMyWorkspaces(userId: string): Promise<Array<WorkspaceView & { role: Role }>> {
      const rows = await db.system((tx) => repo.listWorkspacesOfUser(tx, userId));
      return rows.map((r) => ({ ...toWorkspaceView(r), role: r.role }));
    },

    /**
     * Every workspace owner, one entry per person with the workspaces they own, a page at a
     * time (by user id, after `after`): for notices every owner must get once.
     *
     * @example const page = await workspaces.listOwners({ after: null, limit: 200 });
     */
    async listOwners(opts: {
      after: string | null;
      limit: number;
    }): Promise<Array<{ userId: string; email: string | null; workspaceIds: string[] }>> {
      const rows = await db.system((tx) => repo.listOwners(tx, opts.after, opts.limit));
      const found = new Map((await users.getUsers(rows.map((r) => r.userId))).map((u) => [u.id, u]));
      return rows.map((r) => ({ ...r, email: found.get(r.userId)?.email ?? null }));
    },

    /** Workspaces in which `userId` is the only owner (account deletion must resolve these first). */
    async listSoleOwnedWorkspaces(userId: string): Promise<string[]> {
      return db.system((tx) => repo.listSoleOwnedWorkspaceIds(tx, userId));
    },

    /**
     * The caller's membership in a workspace, or null when they are not a member (or it does
     * not exist: the two are indistinguishable on purpose). Used by `requirePermission`.
     */
    async resolveMembership(workspaceId: string, userId: string): Promise<{ role: Role; requireMfa: boolean } | null> {
      if (!isId(workspaceId, 'ws')) return null;
      return db.tenant(workspaceId, async (tx) => {
        const m = await repo.findMembership(tx, workspaceId, userId);
        if (!m) return null;
        const w = await repo.findWorkspace(tx, workspaceId);
        return w ? { role: m.role, requireMfa: w.requireMfa } : null;
      });
    },

    /**
     * A member's current role read inside the caller's transaction `tx` (bound to the
     * workspace), share-locked so a role change or removal either committed before (and is
     * seen) or waits until the caller commits. Null when they are not a member.
     */
    async lockMemberRole(tx: Database, workspaceId: string, userId: string): Promise<Role | null> {
      return (await repo.lockMembershipShared(tx, workspaceId, userId))?.role ?? null;
    },

    async getWorkspace({ scope }: { scope: Scope }): Promise<WorkspaceView & { role: Role }> {
      const w = await db.tenant(scope.workspaceId, (tx) => repo.findWorkspace(tx, scope.workspaceId));
      if (!w) throw notFound('workspace');
      return { ...toWorkspaceView(w), role: scope.role };
    },

    async renameWorkspace({ scope, name }: { scope: Scope; name: string }): Promise<WorkspaceView> {
      const newName = workspaceName(name);
      return db.tenant(scope.workspaceId, async (tx) => {
        await core.lockForChange(tx, scope);
        const w = await repo.updateWorkspace(tx, scope.workspaceId, { name: newName, updatedAt: clock.now() });
        if (!w) throw notFound('workspace');
        await core.emit(tx, {
          type: 'workspace.renamed',
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          name: w.name,
        });
        return toWorkspaceView(w);
      });
    },

    /**
     * Requires (or stops requiring) two-factor authentication of every member. Turning it on
     * takes an owner whose own account has 2FA now (the person behind the session or API
     * key), so nobody locks themselves out of their own workspace.
     */
    async setRequireMfa({ scope, requireMfa }: { scope: Scope; requireMfa: boolean }): Promise<WorkspaceView> {
      if (requireMfa) {
        const person = scope.actor.type === 'system' ? null : scope.actor.userId;
        if (!person || !(await users.hasMfa(person))) {
          throw new AppError('mfa_required', 'Turn on two-factor authentication for your own account first.');
        }
      }
      return db.tenant(scope.workspaceId, async (tx) => {
        const { actorRole } = await core.lockForChange(tx, scope);
        if (actorRole !== 'owner') throw forbidden('Only an owner can change the workspace security settings.');
        const w = await repo.updateWorkspace(tx, scope.workspaceId, { requireMfa, updatedAt: clock.now() });
        if (!w) throw notFound('workspace');
        await core.emit(tx, {
          type: 'workspace.security_changed',
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          requireMfa,
        });
        return toWorkspaceView(w);
      });
    },

    /**
     * Who the platform writes to about a workspace (billing receipts, alerts, notices): its
     * members with one of `roles`, with their email addresses, owners first.
     *
     * @example const owners = await workspaces.contacts(workspaceId, ['owner']);
     */
    async contacts(
      workspaceId: string,
      roles: readonly Role[],
    ): Promise<Array<{ userId: string; email: string; role: Role }>> {
      const rows = await db.tenant(workspaceId, (tx) => repo.listMembers(tx, workspaceId));
      const wanted = rows.filter((r) => roles.includes(r.role));
      const found = new Map((await users.getUsers(wanted.map((r) => r.userId))).map((u) => [u.id, u]));
      return wanted.flatMap((r) => {
        const email = found.get(r.userId)?.email;
        return email ? [{ userId: r.userId, email, role: r.role }] : [];
      });
    },

    /** The workspace's standing, or null when it does not exist. */
    async statusOf(workspaceId: string): Promise<WorkspaceStatus | null> {
      if (!isId(workspaceId, 'ws')) return null;
      return db.tenant(workspaceId, async (tx) => (await repo.findWorkspace(tx, workspaceId))?.status ?? null);
    },

    /**
     * Sets the workspace's standing (platform operators: suspend, restrict, reactivate).
     * Recorded in the workspace's audit chain, in the transaction of the change.
     */
    async setStatus({ actor, workspaceId, status }: { actor: Actor; workspaceId: string; status: WorkspaceStatus }) {
      if (!isId(workspaceId, 'ws')) throw notFound('workspace');
      return db.tenant(workspaceId, async (tx) => {
        const before = await repo.findWorkspace(tx, workspaceId);
        if (!before) throw notFound('workspace');
        if (before.status === status) return { id: workspaceId, status };
        const w = await repo.updateWorkspace(tx, workspaceId, { status, updatedAt: clock.now() });
        if (!w) throw notFound('workspace');
        await core.emit(tx, { type: 'workspace.status_changed', workspaceId, actor, from: before.status, to: status });
        return { id: workspaceId, status };
      });
    },

    /**
     * Deletes the workspace and everything in it (owner only, confirmed by its exact name).
     * The workspace's data key is destroyed in the same transaction (crypto-shredding), so
     * its encrypted secrets are unreadable even in backups.
     */
    async deleteWorkspace({ scope, confirmName }: { scope: Scope; confirmName: string }): Promise<void> {
      await db.tenant(scope.workspaceId, async (tx) => {
        const { workspace, actorRole } = await core.lockForChange(tx, scope);
        if (actorRole !== 'owner') throw forbidden('Only an owner can delete the workspace.');
        if (confirmName !== workspace.name) {
          throw new AppError('confirmation_mismatch', 'Type the workspace name exactly to confirm the deletion.');
        }
        await core.emit(tx, { type: 'workspace.deleting', workspaceId: scope.workspaceId, actor: scope.actor });
        await deps.vault.destroyOwnerKey({ type: 'workspace', id: scope.workspaceId }, tx);
        await repo.deleteWorkspace(tx, scope.workspaceId);
      });
    },

    ...membersUseCases(core),
    ...invitationsUseCases(core),
  };
}

export type WorkspacesCore = ReturnType<typeof workspacesService>;
