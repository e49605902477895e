import type { Config } from '../../config.ts';
import type { Clock } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError, notFound } from '../../platform/errors.ts';
import type { Actor, Role, Scope } from '../../platform/http/context.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import type { Logger } from '../../platform/logger.ts';
import type { Mailer } from '../notifications/index.ts';
import type { VaultService } from '../vault/index.ts';
import type { WorkspacesRepo } from './workspaces.repo.ts';
import type { InvitationRow, WorkspaceRow } from './workspaces.tables.ts';

/**
 * What the workspaces use cases share: their dependencies, the views they answer with, the
 * events they fire, and the few rules every membership change goes through (lock the
 * workspace, re-read the actor's role, keep one owner). The use cases themselves live in
 * workspaces.service.ts (workspaces), workspaces.members.ts and workspaces.invitations.ts.
 */

/** What this module needs to know about users (the identity module answers it). */
export type UserDirectory = {
  /** The users with these ids that exist (any order); read in the caller's transaction `tx` when given. */
  getUsers(ids: string[], tx?: Database): Promise<Array<{ id: string; email: string; displayName: string | null }>>;
  /** The id of the user with this (lower-case) email, if any. */
  findUserIdByEmail(email: string): Promise<string | null>;
  /** Whether the user has a confirmed second factor now (false for unknown users). */
  hasMfa(userId: string): Promise<boolean>;
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
  /** An operator changed the workspace's standing (the gateway refuses calls unless active). */
  | { type: 'workspace.status_changed'; from: WorkspaceStatus; to: WorkspaceStatus }
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
export type WorkspaceStatus = 'active' | 'restricted' | 'suspended';

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
  /** When the invitation email was handed to the mail server; null while it is queued. */
  emailSentAt: string | null;
  expiresAt: string;
  createdAt: string;
};

export type WorkspacesServiceDeps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: WorkspacesRepo;
  clock: Clock;
  config: Pick<Config, 'publicUrl' | 'BERTH_INVITATION_TTL_DAYS'>;
  mailer: Mailer;
  vault: Pick<VaultService, 'encrypt' | 'decryptString' | 'destroyOwnerKey'>;
  users: UserDirectory;
  jobs: Pick<Jobs, 'send'>;
  logger: Pick<Logger, 'info' | 'warn'>;
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

export function invitationStatus(inv: InvitationRow, now: Date): InvitationStatus {
  if (inv.acceptedAt) return 'accepted';
  if (inv.declinedAt) return 'declined';
  if (inv.revokedAt) return 'revoked';
  if (inv.expiresAt.getTime() <= now.getTime()) return 'expired';
  return 'pending';
}

export function toInvitationView(inv: InvitationRow, now: Date): InvitationView {
  return {
    id: inv.id,
    email: inv.email,
    role: inv.role,
    status: invitationStatus(inv, now),
    invitedBy: inv.invitedBy,
    emailSentAt: inv.emailSentAt ? inv.emailSentAt.toISOString() : null,
    expiresAt: inv.expiresAt.toISOString(),
    createdAt: inv.createdAt.toISOString(),
  };
}

/**
 * A workspace name has 1 to 100 characters once trimmed, none of them a control character
 * (the HTTP schema says so too; in-process callers get the same rule).
 */
export function workspaceName(name: string): string {
  const trimmed = name.trim();
  if (trimmed.length < 1 || trimmed.length > 100 || /\p{Cc}/u.test(trimmed)) {
    throw new AppError(
      'validation_failed',
      'A workspace name has 1 to 100 characters, none of them control characters.',
    );
  }
  return trimmed;
}

/**
 * The shared rules of every use case. Membership changes lock the workspace row first, which
 * serialises them: two owners demoting each other at once cannot leave zero owners.
 */
export function workspacesCore(deps: WorkspacesServiceDeps) {
  const { repo } = deps;
  const handlers: WorkspaceEventHandler[] = [];
  let seatLimit: ((workspaceId: string) => Promise<number | null>) | null = null;

  return {
    deps,

    /** Sets where a workspace's seat limit comes from (billing: its plan). */
    setSeatLimit(fn: (workspaceId: string) => Promise<number | null>): void {
      seatLimit = fn;
    },

    /** How many members (pending invitations included) the workspace may have; null: no limit. */
    seatsOf(workspaceId: string): Promise<number | null> {
      return seatLimit ? seatLimit(workspaceId) : Promise.resolve(null);
    },

    onEvent(handler: WorkspaceEventHandler): void {
      handlers.push(handler);
    },

    async emit(tx: Database, event: WorkspaceEvent): Promise<void> {
      for (const h of handlers) await h(event, tx);
    },

    /**
     * Locks the workspace and re-reads the actor's current role (it may have changed since the
     * check). An API key acts with its creator's role capped at admin: owner actions (making
     * or changing owners, security settings, deletion, transfer) stay with owners' sessions.
     */
    async lockForChange(tx: Database, scope: Scope): Promise<{ workspace: WorkspaceRow; actorRole: Role }> {
      const workspace = await repo.lockWorkspace(tx, scope.workspaceId);
      if (!workspace) throw notFound('workspace');
      if (scope.actor.type === 'system') return { workspace, actorRole: scope.role };
      const me = await repo.findMembership(tx, scope.workspaceId, scope.actor.userId);
      if (!me) throw notFound('workspace');
      const capped = scope.actor.type === 'api_key' && me.role === 'owner' ? 'admin' : me.role;
      return { workspace, actorRole: capped };
    },

    /** The signed-in user of the scope; other actors (API keys, system work) get 400. */
    actorUserId(scope: Scope): string {
      if (scope.actor.type !== 'user') throw new AppError('bad_request', 'Only a signed-in user can do this.');
      return scope.actor.userId;
    },

    async assertNotLastOwner(tx: Database, workspaceId: string, role: Role): Promise<void> {
      if (role === 'owner' && (await repo.countOwners(tx, workspaceId)) <= 1) {
        throw new AppError(
          'last_owner',
          'A workspace always keeps at least one owner: make someone else an owner first.',
        );
      }
    },
  };
}

export type WorkspacesCoreRules = ReturnType<typeof workspacesCore>;
