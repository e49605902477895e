import { DAY, MINUTE } from '../../platform/clock.ts';
import { randomToken, sha256Hex } from '../../platform/crypto.ts';
import type { Database } from '../../platform/db/db.ts';
import { AppError, forbidden, notFound } from '../../platform/errors.ts';
import type { Actor, RequestMeta, Role, Scope } from '../../platform/http/context.ts';
import { isId, newId } from '../../platform/ids.ts';
import { normalizeEmail } from '../identity/index.ts';
import {
  type InvitationView,
  invitationStatus,
  toInvitationView,
  toWorkspaceView,
  type WorkspacesCoreRules,
  type WorkspaceView,
} from './workspaces.core.ts';
import { canGrant } from './workspaces.permissions.ts';
import type { InvitationRow } from './workspaces.tables.ts';

/** The job that emails one invitation: `{ workspaceId, invitationId }` (ids only, never the token). */
export const SEND_INVITATION_JOB = 'workspaces.send-invitation';
/** The scheduled sweep that re-queues invitations whose email is still waiting. */
export const RESEND_INVITATIONS_JOB = 'workspaces.resend-invitations';
/** An invitation whose email has not left this long after it was made is queued again by the sweep. */
export const RESEND_AFTER_MS = 10 * MINUTE;

export type SendInvitationJob = { workspaceId: string; invitationId: string };

/** The vault context of an invitation's token: bound to its workspace's data key and to this row. */
function tokenContext(workspaceId: string, invitationId: string) {
  return { owner: { type: 'workspace' as const, id: workspaceId }, record: invitationId, field: 'invitation_token' };
}

/**
 * Invitations: invite by email, list, revoke, accept, decline, purge, and the email itself.
 *
 * The email leaves after the invitation commits, through a durable job, so a mail server
 * that is down can neither fail the request nor lose the email (the job retries, and a
 * sweep re-queues what is still waiting). Job data holds ids only; the token the link needs
 * waits on the invitation row encrypted by the vault under the workspace's data key, and is
 * cleared as soon as the email is sent or the invitation is closed. The token's SHA-256
 * stays, for the lookup when the link is used.
 */
export function invitationsUseCases(core: WorkspacesCoreRules) {
  const { db, repo, clock, users, vault, jobs, mailer, logger, config } = core.deps;

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

  /**
   * Queues the email after the invitation committed. Never fails the caller: if even the
   * queue is unreachable, the invitation waits with its encrypted token and the sweep queues it.
   */
  async function queueEmail(ref: SendInvitationJob): Promise<void> {
    try {
      await jobs.send<SendInvitationJob>(SEND_INVITATION_JOB, ref, { singletonKey: ref.invitationId });
    } catch (err) {
      logger.warn(
        { invitationId: ref.invitationId, err: { name: err instanceof Error ? err.name : typeof err } },
        'invitation email not queued yet; the resend sweep will queue it',
      );
    }
  }

  function invitationEmail(inv: InvitationRow, workspaceName: string, token: string) {
    const link = `${config.publicUrl}/invitations/accept?token=${encodeURIComponent(token)}`;
    return {
      to: inv.email,
      subject: `You are invited to join ${workspaceName} on Berth`,
      text: [
        `You have been invited to join the workspace "${workspaceName}" on Berth as ${inv.role}.`,
        '',
        `Accept the invitation: ${link}`,
        '',
        `The link works once and expires on ${inv.expiresAt.toISOString()}.`,
        'Sign in (or sign up) with this email address to accept it. If you did not expect it, ignore this email.',
      ].join('\n'),
      tag: 'invitation',
    };
  }

  return {
    /**
     * Invites `email` with `role`; the email with the link leaves through the
     * `workspaces.send-invitation` job once this returns. A new invitation for the same
     * address replaces the open one. The token is returned to in-process callers (CLI,
     * tests) only; the HTTP API never shows it: it lives in the invitee's mailbox and,
     * hashed, here.
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
      if (address.length < 3 || address.length > 254 || !address.includes('@')) {
        throw new AppError('validation_failed', 'This is not an email address.');
      }
      const existingUser = await users.findUserIdByEmail(address);
      // Read before the workspace's transaction: the plan is another module's.
      const seats = await core.seatsOf(scope.workspaceId);
      const token = randomToken(32);
      const now = clock.now();
      const id = newId('inv', now);
      const invitation = await db.tenant(scope.workspaceId, async (tx) => {
        const { actorRole } = await core.lockForChange(tx, scope);
        if (!canGrant(actorRole, role)) throw forbidden('You cannot invite someone with this role.');
        if (existingUser && (await repo.findMembership(tx, scope.workspaceId, existingUser))) {
          throw new AppError('already_member', 'This person is already a member of the workspace.');
        }
        await repo.revokeOpenInvitationsFor(tx, scope.workspaceId, address, now);
        if (seats !== null && (await repo.countSeats(tx, scope.workspaceId, now)) >= seats) {
          throw new AppError(
            'seat_limit_reached',
            `The workspace's plan allows ${seats} members, pending invitations included; remove someone or change the plan.`,
          );
        }
        const row: InvitationRow = {
          id,
          workspaceId: scope.workspaceId,
          email: address,
          role,
          tokenHash: sha256Hex(token),
          tokenCiphertext: await vault.encrypt(tokenContext(scope.workspaceId, id), token, tx),
          emailSentAt: null,
          invitedBy: scope.actor.type === 'user' ? scope.actor.userId : null,
          expiresAt: new Date(now.getTime() + config.BERTH_INVITATION_TTL_DAYS * DAY),
          acceptedAt: null,
          declinedAt: null,
          revokedAt: null,
          createdAt: now,
        };
        await repo.insertInvitation(tx, row);
        await core.emit(tx, {
          type: 'invitation.created',
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          invitationId: row.id,
          role: row.role,
        });
        return row;
      });
      // After commit: on the embedded engine a send inside the transaction would wait for it forever.
      await queueEmail({ workspaceId: scope.workspaceId, invitationId: id });
      return { invitation: toInvitationView(invitation, now), token };
    },

    /**
     * The `workspaces.send-invitation` job: decrypts the waiting token, sends the email, then
     * records it sent and forgets the token. Idempotent: an invitation already sent, closed,
     * expired or gone is skipped. A mail failure throws (`unavailable`) so the job is retried;
     * an email that left just before a crash may go out twice, with the same link.
     */
    async sendInvitationEmail({ workspaceId, invitationId }: SendInvitationJob): Promise<'sent' | 'skipped'> {
      if (!isId(workspaceId, 'ws') || !isId(invitationId, 'inv')) return 'skipped';
      const loaded = await db.tenant(workspaceId, async (tx) => {
        const inv = await repo.findInvitation(tx, workspaceId, invitationId);
        if (!inv?.tokenCiphertext) return null;
        if (invitationStatus(inv, clock.now()) !== 'pending') {
          await repo.clearInvitationToken(tx, workspaceId, invitationId);
          return null;
        }
        const workspace = await repo.findWorkspace(tx, workspaceId);
        if (!workspace) return null;
        const token = await vault.decryptString(tokenContext(workspaceId, invitationId), inv.tokenCiphertext, tx);
        return { inv, workspaceName: workspace.name, token };
      });
      if (!loaded) return 'skipped';
      try {
        await mailer.send(invitationEmail(loaded.inv, loaded.workspaceName, loaded.token));
      } catch {
        // The mail server's message may quote the address: it stays out of logs and job output.
        throw new AppError('unavailable', 'The invitation email could not be sent; it will be retried.');
      }
      await db.tenant(workspaceId, (tx) => repo.markInvitationSent(tx, workspaceId, invitationId, clock.now()));
      return 'sent';
    },

    /**
     * The `workspaces.resend-invitations` sweep: queues the email of every open invitation
     * still waiting `RESEND_AFTER_MS` after it was made (its job failed for good, or was never
     * queued). Returns how many it queued.
     */
    async resendUnsentInvitations(): Promise<number> {
      const now = clock.now();
      const due = await db.system((tx) =>
        repo.listUnsentInvitations(tx, now, new Date(now.getTime() - RESEND_AFTER_MS), 500),
      );
      for (const ref of due) {
        await jobs.send<SendInvitationJob>(
          SEND_INVITATION_JOB,
          { workspaceId: ref.workspaceId, invitationId: ref.id },
          { singletonKey: ref.id },
        );
      }
      return due.length;
    },

    async listInvitations({ scope }: { scope: Scope }): Promise<InvitationView[]> {
      const rows = await db.tenant(scope.workspaceId, (tx) => repo.listInvitations(tx, scope.workspaceId));
      const now = clock.now();
      return rows.map((r) => toInvitationView(r, now));
    },

    /** Revokes an open invitation (revoking twice is fine; a used one cannot be revoked). */
    async revokeInvitation({ scope, invitationId }: { scope: Scope; invitationId: string }): Promise<void> {
      await db.tenant(scope.workspaceId, async (tx) => {
        await core.lockForChange(tx, scope);
        const inv = await repo.lockInvitation(tx, scope.workspaceId, invitationId);
        if (!inv) throw notFound('invitation');
        const status = invitationStatus(inv, clock.now());
        if (status === 'revoked') return;
        if (status === 'accepted' || status === 'declined') {
          throw new AppError('conflict', 'This invitation was already answered.');
        }
        await repo.markInvitation(tx, scope.workspaceId, inv.id, { revokedAt: clock.now() });
        await core.emit(tx, {
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
      meta,
    }: {
      token: string;
      userId: string;
      meta?: RequestMeta;
    }): Promise<{ workspace: WorkspaceView; role: Role }> {
      const ref = await findByToken(token);
      const { workspaceId } = ref;
      const [user] = await users.getUsers([userId]);
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
        const actor: Actor = { type: 'user', userId, ...(meta ? { meta } : {}) };
        await core.emit(tx, { type: 'invitation.accepted', workspaceId, actor, invitationId: inv.id, userId });
        await core.emit(tx, { type: 'member.added', workspaceId, actor, userId, role: inv.role, invitationId: inv.id });
        return { workspace: toWorkspaceView(workspace), role: inv.role };
      });
    },

    /** Declines an invitation: whoever holds the link may decline it, signed in or not. */
    async declineInvitation({
      token,
      userId,
      meta,
    }: {
      token: string;
      userId?: string;
      meta?: RequestMeta;
    }): Promise<void> {
      const ref = await findByToken(token);
      const { workspaceId } = ref;
      await db.tenant(workspaceId, async (tx) => {
        const inv = await openInvitation(tx, ref);
        await repo.markInvitation(tx, workspaceId, inv.id, { declinedAt: clock.now() });
        const who = meta ? { meta } : {};
        const actor: Actor = userId
          ? { type: 'user', userId, ...who }
          : { type: 'system', name: 'invitation-link', ...who };
        await core.emit(tx, { type: 'invitation.declined', workspaceId, actor, invitationId: inv.id });
      });
    },

    /**
     * Retention of invitations (`until_expiry`): deletes every invitation that expired or was
     * accepted, declined or revoked. Runs as a scheduled job.
     */
    async purgeClosedInvitations(): Promise<number> {
      return db.system((tx) => repo.deleteClosedInvitations(tx, clock.now()));
    },
  };
}
