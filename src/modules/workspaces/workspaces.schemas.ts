import { z } from 'zod';
import { singleLineText } from '../../platform/http/schemas.ts';
import { ROLES } from './workspaces.permissions.ts';

/** Request and response shapes of the workspaces API (they are also the OpenAPI document). */

export const RoleSchema = z.enum(ROLES).describe('owner > admin > member > viewer');
export const InvitableRole = z.enum(['admin', 'member', 'viewer']);

const WorkspaceName = singleLineText(1, 100);
/** Berth ids are prefixed ULIDs (`usr_01J…`): anything else cannot name a row. */
const Id = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_]+$/, 'an id');

export const WorkspaceParams = z.strictObject({ workspaceId: Id });
export const MemberParams = z.strictObject({ workspaceId: Id, userId: Id });
export const InvitationParams = z.strictObject({ workspaceId: Id, invitationId: Id });

export const Workspace = z.object({
  id: z.string(),
  name: z.string(),
  requireMfa: z.boolean(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export const WorkspaceWithRole = Workspace.extend({ role: RoleSchema });

export const Member = z.object({
  userId: z.string(),
  email: z.string().nullable(),
  displayName: z.string().nullable(),
  role: RoleSchema,
  joinedAt: z.string(),
});

export const Invitation = z.object({
  id: z.string(),
  email: z.string(),
  role: RoleSchema,
  status: z.enum(['pending', 'accepted', 'declined', 'revoked', 'expired']),
  invitedBy: z.string().nullable(),
  emailSentAt: z.string().nullable().describe('When the invitation email left; null while it is queued'),
  expiresAt: z.string(),
  createdAt: z.string(),
});

export const CreateWorkspaceBody = z.strictObject({ name: WorkspaceName });
export const RenameWorkspaceBody = z.strictObject({ name: WorkspaceName });
export const DeleteWorkspaceBody = z.strictObject({
  confirmName: z.string().max(200).describe('The workspace name, exactly'),
});
export const SecurityBody = z.strictObject({
  requireMfa: z.boolean().describe('Require two-factor authentication of every member'),
});
export const ChangeRoleBody = z.strictObject({ role: RoleSchema });
export const TransferOwnershipBody = z.strictObject({ userId: Id.describe('An existing member') });
export const InviteBody = z.strictObject({ email: z.email().max(254), role: InvitableRole });
export const InvitationTokenBody = z.strictObject({ token: z.string().min(1).max(200) });

export const WorkspaceList = z.object({ data: z.array(WorkspaceWithRole) });

export const WorkspaceStatusSchema = z
  .enum(['active', 'restricted', 'suspended'])
  .describe(
    'active; restricted: data kept, nothing new processed (no gateway calls); suspended: paused by an operator',
  );
export const OperatorWorkspaceParams = z.strictObject({ id: Id });
export const SetStatusBody = z.strictObject({ status: WorkspaceStatusSchema });
export const WorkspaceStatusView = z.object({ id: z.string(), status: WorkspaceStatusSchema });
export const MemberList = z.object({ data: z.array(Member) });
export const InvitationList = z.object({ data: z.array(Invitation) });
export const AcceptedInvitation = z.object({ workspace: Workspace, role: RoleSchema });
export const NoContent = z.null().describe('No content');
