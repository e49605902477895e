import type { Config } from '../../config.ts';
import type { Clock } from '../../platform/clock.ts';
import { DAY } from '../../platform/clock.ts';
import { randomToken, sha256Hex } from '../../platform/crypto.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError, forbidden, notFound } from '../../platform/errors.ts';
import type { Actor, Role, Scope } from '../../platform/http/context.ts';
import { isId, newId } from '../../platform/ids.ts';
import type { Mailer } from '../notifications/index.ts';
import type { VaultService } from '../vault/index.ts';
import { canGrant, canManageMember } from './workspaces.permissions.ts';
import type { WorkspacesRepo } from './workspaces.repo.ts';
import type { InvitationRow, WorkspaceRow } from './workspaces.tables.ts';

/** What this module needs to know about users (the identity module answers it). */
export type UserDirectory = {
  /** The users with these ids that exist (any order). */
  getUsers(ids: string[]): Promise<Array<{ id: string; email: string; displayName: string | null }>>;
  /** The id of the user with this (lower-case) email, if any. */
  findUserIdByEmail(email: string): Promise<string | null>;
};

/**
 * Something that happened in a workspace. Handlers run inside the transaction that made
 * the change, so what they write (audit events, revoked API keys) commits or rolls back
 * with it.
 */
export type WorkspaceEvent = { workspaceId: string; actor: Actor } & (
  | { type: 'workspace.created'; name: string }
  | { type: 'workspace.renamed'; name: string }
  | { type: 'workspace.security_changed'; requireMfa: boolean }
  /** Fired before the workspace's rows are deleted (they cascade from `workspaces`). */
  | { type: 'workspace.deleting' }
  | { type: 'member.added'; userId: string; role: Role; invitationId: string }
  | { type: 'member.role_changed'; userId: string; from: Role; to: Role }
  /** A member left or was removed: revoke whatever they hold in this workspace (API keys...). */
  | { type: 'member.removed'; userId: string; role: Role; reason: 'removed' | 'left' }
  | { type: 'ownership.transferred'; from: string; to: string }
  | { type: 'invitation.created'; invitationId: string; role: Role }
  | { type: 'invitation.revoked'; invitationId: string }
  | { type: 'invitation.accepted'; invitationId: string; userId: string }
  | { type: 'invitation.declined'; invitationId: string }
);
export type WorkspaceEventHandler = (event: WorkspaceEvent, tx: Database) => Promise<void>;

export type WorkspaceView = {
  id: string;
  name: string;
  requireMfa: boolean;
  createdAt: string;
  updatedAt: string;
};
export type MemberView = {
  userId: string;
  email: string | null;
  displayName: string | null;
  role: Role;
  joinedAt: string;
};
export type InvitationStatus = 'pending' | 'accepted' | 'declined' | 'revoked' | 'expired';
export type InvitationView = {
  id: string;
  email: string;
  role: Role;
  status: InvitationStatus;
  invitedBy: string | null;
  expiresAt: string;
  createdAt: string;
};

type Deps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: WorkspacesRepo;
  clock: Clock;
  config: Pick<Config, 'publicUrl' | 'BERTH_INVITATION_TTL_DAYS'>;
  mailer: Mailer;
  vault: Pick<VaultService, 'destroyOwnerKey'>;
  users: UserDirectory;
};

export function toWorkspaceView(w: WorkspaceRow): WorkspaceView {
  return {
    id: w.id,
    name: w.name,
    requireMfa: w.requireMfa,
    createdAt: w.createdAt.toISOString(),
    updatedAt: w.updatedAt.toISOString(),
  };
}

function invitationStatus(inv: InvitationRow, now: Date): InvitationStatus {
  if (inv.acceptedAt) return 'accepted';
  if (inv.declinedAt) return 'declined';
  if (inv.revokedAt) return 'revoked';
  if (inv.expiresAt.getTime() <= now.getTime()) return 'expired';
  return 'pending';
}

function toInvitationView(inv: InvitationRow, now: Date): InvitationView {
  return {
    id: inv.id,
    email: inv.email,
    role: inv.role,
    status: invitationStatus(inv, now),
    invitedBy: inv.invitedBy,
    expiresAt: inv.expiresAt.toISOString(),
    createdAt: inv.createdAt.toISOString(),
  };
}

/** Invitation emails are matched case-insensitively: they are stored in lower case. */
export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

const lastOwner = () =>
  new AppError('last_owner', 'A workspace always keeps at least one owner: make someone else an owner first.');

/**
 * The workspaces use cases. Every call on a workspace takes its `scope`; each runs in one
 * transaction bound to that workspace (`db.tenant`), so row-level security holds even if a
 * query forgot its filter. Membership changes lock the workspace row first, which
 * serialises them: two owners demoting each other at once cannot leave zero owners.
 *
 * @example
 * const ws = await workspaces.createWorkspace({ ownerUserId: user.id, name: 'Acme' });
 * await workspaces.invite({ scope, email: 'bo@example.com', role: 'member' });
 */
export function workspacesService(deps: Deps) {
  const { db, repo, clock } = deps;
  const handlers: WorkspaceEventHandler[] = [];

  async function emit(tx: Database, event: WorkspaceEvent) {
    for (const h of handlers) await h(event, tx);
  }

  /** Locks the workspace and re-reads the actor's current role (it may have changed since the check). */
  async function lockForChange(tx: Database, scope: Scope): Promise<{ workspace: WorkspaceRow; actorRole: Role }> {
    const workspace = await repo.lockWorkspace(tx, scope.workspaceId);
    if (!workspace) throw notFound('workspace');
    if (scope.actor.type !== 'user') return { workspace, actorRole: scope.role };
    const me = await repo.findMembership(tx, scope.workspaceId, scope.actor.userId);
    if (!me) throw notFound('workspace');
    return { workspace, actorRole: me.role };
  }

  function actorUserId(scope: Scope): string {
    if (scope.actor.type !== 'user') throw new AppError('bad_request', 'Only a signed-in user can do this.');
    return scope.actor.userId;
  }

  async function assertNotLastOwner(tx: Database, workspaceId: string, role: Role) {
    if (role === 'owner' && (await repo.countOwners(tx, workspaceId)) <= 1) throw lastOwner();
  }

  async function removeMembership(scope: Scope, userId: string, reason: 'removed' | 'left') {
    await db.tenant(scope.workspaceId, async (tx) => {
      const { actorRole } = await lockForChange(tx, scope);
      const target = await repo.findMembership(tx, scope.workspaceId, userId);
      if (!target) throw notFound('member');
      if (reason === 'removed' && !canManageMember(actorRole, target.role)) {
        throw forbidden('Only an owner can remove an owner.');
      }
      await assertNotLastOwner(tx, scope.workspaceId, target.role);
      await repo.deleteMembership(tx, scope.workspaceId, userId);
      await emit(tx, {
        type: 'member.removed',
        workspaceId: scope.workspaceId,
        actor: scope.actor,
        userId,
        role: target.role,
        reason,
      });
    });
  }

  /**
   * Finds an invitation by its token. The lookup spans workspaces (the token says which), so
   * it runs as system work of its own, before the caller opens the workspace's transaction.
   */
  async function findByToken(token: string): Promise<{ id: string; workspaceId: string }> {
    const found = await db.system((sys) => repo.findInvitationByTokenHash(sys, sha256Hex(token)));
    if (!found) throw new AppError('invalid_token', 'This invitation link is not valid.');
    return { id: found.id, workspaceId: found.workspaceId };
  }

  /** Re-reads the invitation locked, inside its workspace's transaction, and checks it is still open. */
  async function openInvitation(tx: Database, ref: { id: string; workspaceId: string }): Promise<InvitationRow> {
    const inv = await repo.lockInvitation(tx, ref.workspaceId, ref.id);
    if (!inv) throw new AppError('invalid_token', 'This invitation link is not valid.');
    switch (invitationStatus(inv, clock.now())) {
      case 'revoked':
        throw new AppError('invalid_token', 'This invitation was revoked.');
      case 'accepted':
      case 'declined':
        throw new AppError('token_used', 'This invitation was already used.');
      case 'expired':
        throw new AppError('token_expired', 'This invitation has expired: ask for a new one.');
      default:
        return inv;
    }
  }

  return {
    /**
     * Subscribes to workspace events; the handler runs inside the changing transaction.
     * The audit module records them; the keys module revokes a removed member's keys.
     */
    onEvent(handler: WorkspaceEventHandler): void {
      handlers.push(handler);
    },

    /** Creates a workspace owned by `ownerUserId` (also used by `berth admin create`). */
    async createWorkspace(input: { ownerUserId: string; name: string; actor?: Actor }): Promise<WorkspaceView> {
      const now = clock.now();
      const name = input.name.trim();
      if (name.length < 1 || name.length > 100) {
        throw new AppError('validation_failed', 'A workspace name has 1 to 100 characters.');
      }
      const id = newId('ws', now);
      const actor: Actor = input.actor ?? { type: 'user', userId: input.ownerUserId };
      return db.tenant(id, async (tx) => {
        const row: WorkspaceRow = {
          id,
          name,
          requireMfa: false,
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
        await emit(tx, { type: 'workspace.created', workspaceId: id, actor, name });
        return toWorkspaceView(row);
      });
    },

    /** The workspaces `userId` belongs to, with their role in each. */
    async listMyWorkspaces(userId: string): Promise<Array<WorkspaceView & { role: Role }>> {
      const rows = await db.system((tx) => repo.listWorkspacesOfUser(tx, userId));
      return rows.map((r) => ({ ...toWorkspaceView(r), role: r.role }));
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

    async getWorkspace({ scope }: { scope: Scope }): Promise<WorkspaceView & { role: Role }> {
      const w = await db.tenant(scope.workspaceId, (tx) => repo.findWorkspace(tx, scope.workspaceId));
      if (!w) throw notFound('workspace');
      return { ...toWorkspaceView(w), role: scope.role };
    },

    async renameWorkspace({ scope, name }: { scope: Scope; name: string }): Promise<WorkspaceView> {
      return db.tenant(scope.workspaceId, async (tx) => {
        await lockForChange(tx, scope);
        const w = await repo.updateWorkspace(tx, scope.workspaceId, { name: name.trim(), updatedAt: clock.now() });
        if (!w) throw notFound('workspace');
        await emit(tx, { type: 'workspace.renamed', workspaceId: scope.workspaceId, actor: scope.actor, name: w.name });
        return toWorkspaceView(w);
      });
    },

    /**
     * Requires (or stops requiring) two-factor authentication of every member. Turning it on
     * takes an owner who has 2FA, so nobody locks themselves out of their own workspace.
     */
    async setRequireMfa({
      scope,
      requireMfa,
      actorHasMfa,
    }: {
      scope: Scope;
      requireMfa: boolean;
      actorHasMfa: boolean;
    }): Promise<WorkspaceView> {
      if (requireMfa && !actorHasMfa) {
        throw new AppError('mfa_required', 'Turn on two-factor authentication for your own account first.');
      }
      return db.tenant(scope.workspaceId, async (tx) => {
        const { actorRole } = await lockForChange(tx, scope);
        if (actorRole !== 'owner') throw forbidden('Only an owner can change the workspace security settings.');
        const w = await repo.updateWorkspace(tx, scope.workspaceId, { requireMfa, updatedAt: clock.now() });
        if (!w) throw notFound('workspace');
        await emit(tx, {
          type: 'workspace.security_changed',
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          requireMfa,
        });
        return toWorkspaceView(w);
      });
    },

    /**
     * Deletes the workspace and everything in it (owner only, confirmed by its exact name).
     * The workspace's data key is destroyed in the same transaction (crypto-shredding), so
     * its encrypted secrets are unreadable even in backups.
     */
    async deleteWorkspace({ scope, confirmName }: { scope: Scope; confirmName: string }): Promise<void> {
      await db.tenant(scope.workspaceId, async (tx) => {
        const { workspace, actorRole } = await lockForChange(tx, scope);
        if (actorRole !== 'owner') throw forbidden('Only an owner can delete the workspace.');
        if (confirmName !== workspace.name) {
          throw new AppError('confirmation_mismatch', 'Type the workspace name exactly to confirm the deletion.');
        }
        await emit(tx, { type: 'workspace.deleting', workspaceId: scope.workspaceId, actor: scope.actor });
        await deps.vault.destroyOwnerKey({ type: 'workspace', id: scope.workspaceId }, tx);
        await repo.deleteWorkspace(tx, scope.workspaceId);
      });
    },

    async listMembers({ scope }: { scope: Scope }): Promise<MemberView[]> {
      const rows = await db.tenant(scope.workspaceId, (tx) => repo.listMembers(tx, scope.workspaceId));
      const users = new Map((await deps.users.getUsers(rows.map((r) => r.userId))).map((u) => [u.id, u]));
      return rows.map((r) => ({
        userId: r.userId,
        email: users.get(r.userId)?.email ?? null,
        displayName: users.get(r.userId)?.displayName ?? null,
        role: r.role,
        joinedAt: r.createdAt.toISOString(),
      }));
    },

    /** Changes a member's role. Admins manage non-owners; the last owner cannot be demoted. */
    async changeRole({ scope, userId, role }: { scope: Scope; userId: string; role: Role }): Promise<MemberView> {
      const changed = await db.tenant(scope.workspaceId, async (tx) => {
        const { actorRole } = await lockForChange(tx, scope);
        const target = await repo.findMembership(tx, scope.workspaceId, userId);
        if (!target) throw notFound('member');
        if (!canManageMember(actorRole, target.role, role)) {
          throw forbidden('Only an owner can change an owner, or make someone an owner.');
        }
        if (target.role !== role) {
          if (role !== 'owner') await assertNotLastOwner(tx, scope.workspaceId, target.role);
          await repo.updateRole(tx, scope.workspaceId, userId, role, clock.now());
          await emit(tx, {
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
      const [user] = await deps.users.getUsers([userId]);
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
      await removeMembership(scope, userId, userId === actorUserIdOrNull(scope) ? 'left' : 'removed');
    },

    /** The caller leaves the workspace (not the last owner). */
    async leave({ scope }: { scope: Scope }): Promise<void> {
      await removeMembership(scope, actorUserId(scope), 'left');
    },

    /** Makes another member an owner; the calling owner becomes an admin. */
    async transferOwnership({ scope, toUserId }: { scope: Scope; toUserId: string }): Promise<void> {
      const from = actorUserId(scope);
      if (toUserId === from) throw new AppError('bad_request', 'You already own this workspace.');
      await db.tenant(scope.workspaceId, async (tx) => {
        const { actorRole } = await lockForChange(tx, scope);
        if (actorRole !== 'owner') throw forbidden('Only an owner can transfer ownership.');
        const target = await repo.findMembership(tx, scope.workspaceId, toUserId);
        if (!target) throw notFound('member');
        const now = clock.now();
        await repo.updateRole(tx, scope.workspaceId, toUserId, 'owner', now);
        await repo.updateRole(tx, scope.workspaceId, from, 'admin', now);
        await emit(tx, {
          type: 'ownership.transferred',
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          from,
          to: toUserId,
        });
      });
    },

    /**
     * Invites `email` with `role` and emails the link. A new invitation for the same address
     * replaces the open one. The token is returned to in-process callers (CLI, tests) only;
     * the HTTP API never shows it: it lives in the invitee's mailbox and, hashed, here.
     */
    async invite({
      scope,
      email,
      role,
    }: {
      scope: Scope;
      email: string;
      role: Role;
    }): Promise<{ invitation: InvitationView; token: string }> {
      if (role === 'owner') {
        throw new AppError('bad_request', 'Invite as admin, member or viewer; owners are made by a role change.');
      }
      const address = normalizeEmail(email);
      const existingUser = await deps.users.findUserIdByEmail(address);
      const token = randomToken(32);
      const now = clock.now();
      const { invitation, workspaceName } = await db.tenant(scope.workspaceId, async (tx) => {
        const { workspace, actorRole } = await lockForChange(tx, scope);
        if (!canGrant(actorRole, role)) throw forbidden('You cannot invite someone with this role.');
        if (existingUser && (await repo.findMembership(tx, scope.workspaceId, existingUser))) {
          throw new AppError('already_member', 'This person is already a member of the workspace.');
        }
        await repo.revokeOpenInvitationsFor(tx, scope.workspaceId, address, now);
        const row: InvitationRow = {
          id: newId('inv', now),
          workspaceId: scope.workspaceId,
          email: address,
          role,
          tokenHash: sha256Hex(token),
          invitedBy: scope.actor.type === 'user' ? scope.actor.userId : null,
          expiresAt: new Date(now.getTime() + deps.config.BERTH_INVITATION_TTL_DAYS * DAY),
          acceptedAt: null,
          declinedAt: null,
          revokedAt: null,
          createdAt: now,
        };
        await repo.insertInvitation(tx, row);
        await emit(tx, {
          type: 'invitation.created',
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          invitationId: row.id,
          role: row.role,
        });
        return { invitation: row, workspaceName: workspace.name };
      });
      const link = `${deps.config.publicUrl}/invitations/accept?token=${encodeURIComponent(token)}`;
      await deps.mailer.send({
        to: address,
        subject: `You are invited to join ${workspaceName} on Berth`,
        text: [
          `You have been invited to join the workspace "${workspaceName}" on Berth as ${invitation.role}.`,
          '',
          `Accept the invitation: ${link}`,
          '',
          `The link works once and expires on ${invitation.expiresAt.toISOString()}.`,
          'Sign in (or sign up) with this email address to accept it. If you did not expect it, ignore this email.',
        ].join('\n'),
        tag: 'invitation',
      });
      return { invitation: toInvitationView(invitation, now), token };
    },

    async listInvitations({ scope }: { scope: Scope }): Promise<InvitationView[]> {
      const rows = await db.tenant(scope.workspaceId, (tx) => repo.listInvitations(tx, scope.workspaceId));
      const now = clock.now();
      return rows.map((r) => toInvitationView(r, now));
    },

    /** Revokes an open invitation (revoking twice is fine; a used one cannot be revoked). */
    async revokeInvitation({ scope, invitationId }: { scope: Scope; invitationId: string }): Promise<void> {
      await db.tenant(scope.workspaceId, async (tx) => {
        await lockForChange(tx, scope);
        const inv = await repo.lockInvitation(tx, scope.workspaceId, invitationId);
        if (!inv) throw notFound('invitation');
        const status = invitationStatus(inv, clock.now());
        if (status === 'revoked') return;
        if (status === 'accepted' || status === 'declined') {
          throw new AppError('conflict', 'This invitation was already answered.');
        }
        await repo.markInvitation(tx, scope.workspaceId, inv.id, { revokedAt: clock.now() });
        await emit(tx, {
          type: 'invitation.revoked',
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          invitationId: inv.id,
        });
      });
    },

    /**
     * Accepts an invitation as the signed-in user. The user's account email must equal the
     * invited address (case-insensitively); it need not be verified, because holding the
     * single-use token already proves control of that mailbox.
     */
    async acceptInvitation({
      token,
      userId,
    }: {
      token: string;
      userId: string;
    }): Promise<{ workspace: WorkspaceView; role: Role }> {
      const ref = await findByToken(token);
      const { workspaceId } = ref;
      const [user] = await deps.users.getUsers([userId]);
      if (!user) throw new AppError('unauthenticated', 'Sign in to accept the invitation.');
      return db.tenant(workspaceId, async (tx) => {
        const workspace = await repo.lockWorkspace(tx, workspaceId);
        if (!workspace) throw new AppError('invalid_token', 'This invitation link is not valid.');
        const inv = await openInvitation(tx, ref);
        if (normalizeEmail(user.email) !== inv.email) {
          throw forbidden('This invitation was sent to a different email address. Sign in with that address.');
        }
        if (await repo.findMembership(tx, workspaceId, userId)) {
          throw new AppError('already_member', 'You are already a member of this workspace.');
        }
        const now = clock.now();
        await repo.insertMembership(tx, { workspaceId, userId, role: inv.role, createdAt: now, updatedAt: now });
        await repo.markInvitation(tx, workspaceId, inv.id, { acceptedAt: now });
        const actor: Actor = { type: 'user', userId };
        await emit(tx, { type: 'invitation.accepted', workspaceId, actor, invitationId: inv.id, userId });
        await emit(tx, { type: 'member.added', workspaceId, actor, userId, role: inv.role, invitationId: inv.id });
        return { workspace: toWorkspaceView(workspace), role: inv.role };
      });
    },

    /**
     * Retention of invitations (`until_expiry`): deletes every invitation that expired or was
     * accepted, declined or revoked. Runs as a scheduled job.
     */
    async purgeClosedInvitations(): Promise<number> {
      return db.system((tx) => repo.deleteClosedInvitations(tx, clock.now()));
    },

    /** Declines an invitation: whoever holds the link may decline it, signed in or not. */
    async declineInvitation({ token, userId }: { token: string; userId?: string }): Promise<void> {
      const ref = await findByToken(token);
      const { workspaceId } = ref;
      await db.tenant(workspaceId, async (tx) => {
        const inv = await openInvitation(tx, ref);
        await repo.markInvitation(tx, workspaceId, inv.id, { declinedAt: clock.now() });
        const actor: Actor = userId ? { type: 'user', userId } : { type: 'system', name: 'invitation-link' };
        await emit(tx, { type: 'invitation.declined', workspaceId, actor, invitationId: inv.id });
      });
    },
  };
}

function actorUserIdOrNull(scope: Scope): string | null {
  return scope.actor.type === 'user' ? scope.actor.userId : null;
}

export type WorkspacesCore = ReturnType<typeof workspacesService>;
