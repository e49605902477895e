import { and, asc, count, eq, gt, inArray, isNotNull, isNull, lte, or, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import type { Role } from '../../platform/http/context.ts';
import {
  type InvitationRow,
  invitations,
  type MembershipRow,
  memberships,
  type WorkspaceRow,
  workspaces,
} from './workspaces.tables.ts';

/**
 * Every SQL statement on the workspaces module's tables. Each function runs on the
 * transaction it is given (bound to a workspace by `db.tenant`, or `db.system` for the few
 * lookups that span workspaces) and names the workspace in every query on a tenant table.
 */
export const workspacesRepo = {
  async insertWorkspace(tx: Database, row: WorkspaceRow): Promise<void> {
    await tx.insert(workspaces).values(row);
  },

  async findWorkspace(tx: Database, workspaceId: string): Promise<WorkspaceRow | null> {
    const rows = await tx.select().from(workspaces).where(eq(workspaces.id, workspaceId)).limit(1);
    return rows[0] ?? null;
  },

  /** Locks the workspace row until the transaction ends: serialises membership changes. */
  async lockWorkspace(tx: Database, workspaceId: string): Promise<WorkspaceRow | null> {
    const rows = await tx.select().from(workspaces).where(eq(workspaces.id, workspaceId)).for('update');
    return rows[0] ?? null;
  },

  async updateWorkspace(
    tx: Database,
    workspaceId: string,
    patch: Partial<Pick<WorkspaceRow, 'name' | 'requireMfa' | 'status'>> & { updatedAt: Date },
  ): Promise<WorkspaceRow | null> {
    const rows = await tx.update(workspaces).set(patch).where(eq(workspaces.id, workspaceId)).returning();
    return rows[0] ?? null;
  },

  /** Deletes the workspace; memberships, invitations and later modules' rows cascade. */
  async deleteWorkspace(tx: Database, workspaceId: string): Promise<boolean> {
    const rows = await tx.delete(workspaces).where(eq(workspaces.id, workspaceId)).returning({ id: workspaces.id });
    return rows.length > 0;
  },

  /** The workspaces a user belongs to (spans workspaces: run inside `db.system`). */
  async listWorkspacesOfUser(tx: Database, userId: string): Promise<Array<WorkspaceRow & { role: Role }>> {
    const rows = await tx
      .select({ workspace: workspaces, role: memberships.role })
      .from(memberships)
      .innerJoin(workspaces, eq(workspaces.id, memberships.workspaceId))
      .where(eq(memberships.userId, userId))
      .orderBy(asc(workspaces.createdAt), asc(workspaces.id));
    return rows.map((r) => ({ ...r.workspace, role: r.role }));
  },

  /**
   * Owners across workspaces, one row per person (the workspaces they own, by id), ordered
   * by user id after `after` (spans workspaces: run inside `db.system`).
   */
  async listOwners(
    tx: Database,
    after: string | null,
    limit: number,
  ): Promise<Array<{ userId: string; workspaceIds: string[] }>> {
    const rows = await tx
      .select({
        userId: memberships.userId,
        workspaceIds: sql<string[]>`array_agg(${memberships.workspaceId} order by ${memberships.workspaceId})`,
      })
      .from(memberships)
      .where(and(eq(memberships.role, 'owner'), after ? gt(memberships.userId, after) : undefined))
      .groupBy(memberships.userId)
      .orderBy(asc(memberships.userId))
      .limit(limit);
    return rows;
  },

  /** Workspaces where this user is the only owner (spans workspaces: run inside `db.system`). */
  async listSoleOwnedWorkspaceIds(tx: Database, userId: string): Promise<string[]> {
    const owned = await tx
      .select({ workspaceId: memberships.workspaceId })
      .from(memberships)
      .where(and(eq(memberships.userId, userId), eq(memberships.role, 'owner')));
    if (owned.length === 0) return [];
    const counts = await tx
      .select({ workspaceId: memberships.workspaceId, n: count() })
      .from(memberships)
      .where(
        and(
          inArray(
            memberships.workspaceId,
            owned.map((o) => o.workspaceId),
          ),
          eq(memberships.role, 'owner'),
        ),
      )
      .groupBy(memberships.workspaceId);
    return counts
      .filter((c) => Number(c.n) === 1)
      .map((c) => c.workspaceId)
      .sort();
  },

  /** The membership with a share lock: role changes and removals of it wait for the caller's transaction. */
  async lockMembershipShared(tx: Database, workspaceId: string, userId: string): Promise<MembershipRow | null> {
    const rows = await tx
      .select()
      .from(memberships)
      .where(and(eq(memberships.workspaceId, workspaceId), eq(memberships.userId, userId)))
      .for('share');
    return rows[0] ?? null;
  },

  async findMembership(tx: Database, workspaceId: string, userId: string): Promise<MembershipRow | null> {
    const rows = await tx
      .select()
      .from(memberships)
      .where(and(eq(memberships.workspaceId, workspaceId), eq(memberships.userId, userId)))
      .limit(1);
    return rows[0] ?? null;
  },

  async insertMembership(tx: Database, row: MembershipRow): Promise<void> {
    await tx.insert(memberships).values(row);
  },

  async updateRole(tx: Database, workspaceId: string, userId: string, role: Role, at: Date): Promise<void> {
    await tx
      .update(memberships)
      .set({ role, updatedAt: at })
      .where(and(eq(memberships.workspaceId, workspaceId), eq(memberships.userId, userId)));
  },

  async deleteMembership(tx: Database, workspaceId: string, userId: string): Promise<boolean> {
    const rows = await tx
      .delete(memberships)
      .where(and(eq(memberships.workspaceId, workspaceId), eq(memberships.userId, userId)))
      .returning({ userId: memberships.userId });
    return rows.length > 0;
  },

  /** Members, owners first, then by role and join time. */
  async listMembers(tx: Database, workspaceId: string): Promise<MembershipRow[]> {
    return tx
      .select()
      .from(memberships)
      .where(eq(memberships.workspaceId, workspaceId))
      .orderBy(
        sql`case ${memberships.role} when 'owner' then 0 when 'admin' then 1 when 'member' then 2 else 3 end`,
        asc(memberships.createdAt),
        asc(memberships.userId),
      );
  },

  async countOwners(tx: Database, workspaceId: string): Promise<number> {
    const rows = await tx
      .select({ n: count() })
      .from(memberships)
      .where(and(eq(memberships.workspaceId, workspaceId), eq(memberships.role, 'owner')));
    return Number(rows[0]?.n ?? 0);
  },

  async insertInvitation(tx: Database, row: InvitationRow): Promise<void> {
    await tx.insert(invitations).values(row);
  },

  async listInvitations(tx: Database, workspaceId: string): Promise<InvitationRow[]> {
    return tx
      .select()
      .from(invitations)
      .where(eq(invitations.workspaceId, workspaceId))
      .orderBy(asc(invitations.createdAt), asc(invitations.id));
  },

  async findInvitation(tx: Database, workspaceId: string, invitationId: string): Promise<InvitationRow | null> {
    const rows = await tx
      .select()
      .from(invitations)
      .where(and(eq(invitations.workspaceId, workspaceId), eq(invitations.id, invitationId)))
      .limit(1);
    return rows[0] ?? null;
  },

  /** Finds an invitation by its token hash (spans workspaces: run inside `db.system`). */
  async findInvitationByTokenHash(tx: Database, tokenHash: string): Promise<InvitationRow | null> {
    const rows = await tx.select().from(invitations).where(eq(invitations.tokenHash, tokenHash)).limit(1);
    return rows[0] ?? null;
  },

  /** Locks one invitation row: accept, decline and revoke of the same invitation serialise. */
  async lockInvitation(tx: Database, workspaceId: string, invitationId: string): Promise<InvitationRow | null> {
    const rows = await tx
      .select()
      .from(invitations)
      .where(and(eq(invitations.workspaceId, workspaceId), eq(invitations.id, invitationId)))
      .for('update');
    return rows[0] ?? null;
  },

  /** Closes an invitation (accepted, declined or revoked); a token still waiting to be emailed goes too. */
  async markInvitation(
    tx: Database,
    workspaceId: string,
    invitationId: string,
    patch: Partial<Pick<InvitationRow, 'acceptedAt' | 'declinedAt' | 'revokedAt'>>,
  ): Promise<void> {
    await tx
      .update(invitations)
      .set({ ...patch, tokenCiphertext: null })
      .where(and(eq(invitations.workspaceId, workspaceId), eq(invitations.id, invitationId)));
  },

  /** Records that the invitation email left and forgets the encrypted token; false when it already had. */
  async markInvitationSent(tx: Database, workspaceId: string, invitationId: string, at: Date): Promise<boolean> {
    const rows = await tx
      .update(invitations)
      .set({ tokenCiphertext: null, emailSentAt: at })
      .where(
        and(
          eq(invitations.workspaceId, workspaceId),
          eq(invitations.id, invitationId),
          isNotNull(invitations.tokenCiphertext),
        ),
      )
      .returning({ id: invitations.id });
    return rows.length > 0;
  },

  /** Forgets the encrypted token of an invitation that can no longer be used. */
  async clearInvitationToken(tx: Database, workspaceId: string, invitationId: string): Promise<void> {
    await tx
      .update(invitations)
      .set({ tokenCiphertext: null })
      .where(and(eq(invitations.workspaceId, workspaceId), eq(invitations.id, invitationId)));
  },

  /**
   * Open invitations whose email has not left yet and that were created before `createdBefore`
   * (spans workspaces: run inside `db.system`). Oldest first.
   */
  async listUnsentInvitations(
    tx: Database,
    now: Date,
    createdBefore: Date,
    limit: number,
  ): Promise<Array<{ id: string; workspaceId: string }>> {
    return tx
      .select({ id: invitations.id, workspaceId: invitations.workspaceId })
      .from(invitations)
      .where(
        and(
          isNotNull(invitations.tokenCiphertext),
          isNull(invitations.acceptedAt),
          isNull(invitations.declinedAt),
          isNull(invitations.revokedAt),
          gt(invitations.expiresAt, now),
          lte(invitations.createdAt, createdBefore),
        ),
      )
      .orderBy(asc(invitations.createdAt), asc(invitations.id))
      .limit(limit);
  },

  /**
   * Deletes invitations that can no longer be used: expired, or answered/revoked (spans
   * workspaces: run inside `db.system`). Returns how many went.
   */
  async deleteClosedInvitations(tx: Database, now: Date): Promise<number> {
    const rows = await tx
      .delete(invitations)
      .where(
        or(
          lte(invitations.expiresAt, now),
          isNotNull(invitations.acceptedAt),
          isNotNull(invitations.declinedAt),
          isNotNull(invitations.revokedAt),
        ),
      )
      .returning({ id: invitations.id });
    return rows.length;
  },

  /** Members plus invitations still open (not accepted, declined, revoked or expired): the seats taken. */
  async countSeats(tx: Database, workspaceId: string, now: Date): Promise<number> {
    const [members] = await tx.select({ n: count() }).from(memberships).where(eq(memberships.workspaceId, workspaceId));
    const [open] = await tx
      .select({ n: count() })
      .from(invitations)
      .where(
        and(
          eq(invitations.workspaceId, workspaceId),
          isNull(invitations.acceptedAt),
          isNull(invitations.declinedAt),
          isNull(invitations.revokedAt),
          gt(invitations.expiresAt, now),
        ),
      );
    return (members?.n ?? 0) + (open?.n ?? 0);
  },

  /** Revokes every open invitation of this workspace for `email` (a new invitation replaces them). */
  async revokeOpenInvitationsFor(tx: Database, workspaceId: string, email: string, at: Date): Promise<void> {
    await tx
      .update(invitations)
      .set({ revokedAt: at, tokenCiphertext: null })
      .where(
        and(
          eq(invitations.workspaceId, workspaceId),
          eq(invitations.email, email),
          isNull(invitations.acceptedAt),
          isNull(invitations.declinedAt),
          isNull(invitations.revokedAt),
        ),
      );
  },
};

export type WorkspacesRepo = typeof workspacesRepo;
