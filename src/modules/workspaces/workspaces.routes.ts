import type { FastifyRequest } from 'fastify';
import type { HttpServer } from '../../platform/http/server.ts';
import { operatorActor, operatorRequired, requestMeta, requireSession } from '../identity/index.ts';
import { requireScope } from './workspaces.access.ts';
import type { Permission } from './workspaces.permissions.ts';
import {
  AcceptedInvitation,
  ChangeRoleBody,
  CreateWorkspaceBody,
  DeleteWorkspaceBody,
  Invitation,
  InvitationList,
  InvitationParams,
  InvitationTokenBody,
  InviteBody,
  Member,
  MemberList,
  MemberParams,
  OperatorWorkspaceParams,
  RenameWorkspaceBody,
  SecurityBody,
  SetStatusBody,
  TransferOwnershipBody,
  Workspace,
  WorkspaceList,
  WorkspaceParams,
  WorkspaceStatusView,
  WorkspaceWithRole,
} from './workspaces.schemas.ts';
import type { WorkspacesCore } from './workspaces.service.ts';

type Deps = {
  service: WorkspacesCore;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

const tags = ['workspaces'];
const security = [{ session: [], csrf: [] }];

/** The workspaces HTTP API: thin handlers over the service, one permission per route. */
export function registerWorkspaceRoutes(app: HttpServer, { service, requirePermission }: Deps) {
  const base = '/api/workspaces/:workspaceId';

  app.post(
    '/api/workspaces',
    {
      schema: {
        tags,
        security,
        summary: 'Create a workspace (you become its owner)',
        body: CreateWorkspaceBody,
        response: { 201: Workspace },
      },
    },
    async (req, reply) => {
      const user = requireSession(req);
      const actor = { type: 'user' as const, userId: user.userId, sessionId: user.sessionId, meta: requestMeta(req) };
      return reply
        .status(201)
        .send(await service.createWorkspace({ ownerUserId: user.userId, name: req.body.name, actor }));
    },
  );

  app.post(
    '/api/operator/workspaces/:id/status',
    {
      schema: {
        tags: ['operator'],
        security,
        summary: "Set a workspace's standing: suspend, restrict or reactivate it (operators)",
        params: OperatorWorkspaceParams,
        body: SetStatusBody,
        response: { 200: WorkspaceStatusView },
      },
      preHandler: operatorRequired,
    },
    async (req) => {
      return service.setStatus({ actor: operatorActor(req), workspaceId: req.params.id, status: req.body.status });
    },
  );

  app.get(
    '/api/workspaces',
    { schema: { tags, security, summary: 'List the workspaces you belong to', response: { 200: WorkspaceList } } },
    async (req) => ({ data: await service.listMyWorkspaces(requireSession(req).userId) }),
  );

  app.get(
    base,
    {
      schema: {
        tags,
        security,
        summary: 'Get a workspace',
        params: WorkspaceParams,
        response: { 200: WorkspaceWithRole },
      },
      preHandler: requirePermission('workspace:read'),
    },
    async (req) => service.getWorkspace({ scope: requireScope(req) }),
  );

  app.patch(
    base,
    {
      schema: {
        tags,
        security,
        summary: 'Rename a workspace',
        params: WorkspaceParams,
        body: RenameWorkspaceBody,
        response: { 200: Workspace },
      },
      preHandler: requirePermission('workspace:update'),
    },
    async (req) => service.renameWorkspace({ scope: requireScope(req), name: req.body.name }),
  );

  app.delete(
    base,
    {
      schema: {
        tags,
        security,
        summary: 'Delete a workspace and everything in it (owner; confirm with its exact name)',
        params: WorkspaceParams,
        body: DeleteWorkspaceBody,
      },
      preHandler: requirePermission('workspace:delete'),
    },
    async (req, reply) => {
      await service.deleteWorkspace({ scope: requireScope(req), confirmName: req.body.confirmName });
      return reply.status(204).send();
    },
  );

  app.put(
    `${base}/security`,
    {
      schema: {
        tags,
        security,
        summary: 'Require two-factor authentication of every member (owner)',
        params: WorkspaceParams,
        body: SecurityBody,
        response: { 200: Workspace },
      },
      preHandler: requirePermission('security:manage'),
    },
    async (req) => service.setRequireMfa({ scope: requireScope(req), requireMfa: req.body.requireMfa }),
  );

  app.get(
    `${base}/members`,
    {
      schema: { tags, security, summary: 'List members', params: WorkspaceParams, response: { 200: MemberList } },
      preHandler: requirePermission('members:read'),
    },
    async (req) => ({ data: await service.listMembers({ scope: requireScope(req) }) }),
  );

  app.patch(
    `${base}/members/:userId`,
    {
      schema: {
        tags,
        security,
        summary: "Change a member's role",
        params: MemberParams,
        body: ChangeRoleBody,
        response: { 200: Member },
      },
      preHandler: requirePermission('members:manage'),
    },
    async (req) => service.changeRole({ scope: requireScope(req), userId: req.params.userId, role: req.body.role }),
  );

  app.delete(
    `${base}/members/:userId`,
    {
      schema: { tags, security, summary: 'Remove a member', params: MemberParams },
      preHandler: requirePermission('members:manage'),
    },
    async (req, reply) => {
      await service.removeMember({ scope: requireScope(req), userId: req.params.userId });
      return reply.status(204).send();
    },
  );

  app.post(
    `${base}/leave`,
    {
      schema: { tags, security, summary: 'Leave a workspace', params: WorkspaceParams },
      preHandler: requirePermission('membership:leave'),
    },
    async (req, reply) => {
      await service.leave({ scope: requireScope(req) });
      return reply.status(204).send();
    },
  );

  app.post(
    `${base}/transfer-ownership`,
    {
      schema: {
        tags,
        security,
        summary: 'Make another member the owner; you become an admin',
        params: WorkspaceParams,
        body: TransferOwnershipBody,
      },
      preHandler: requirePermission('ownership:transfer'),
    },
    async (req, reply) => {
      await service.transferOwnership({ scope: requireScope(req), toUserId: req.body.userId });
      return reply.status(204).send();
    },
  );

  app.post(
    `${base}/invitations`,
    {
      schema: {
        tags,
        security,
        summary: 'Invite someone by email (the link is emailed, never returned)',
        params: WorkspaceParams,
        body: InviteBody,
        response: { 201: Invitation },
      },
      preHandler: requirePermission('invitations:manage'),
    },
    async (req, reply) => {
      const { invitation } = await service.invite({
        scope: requireScope(req),
        email: req.body.email,
        role: req.body.role,
      });
      return reply.status(201).send(invitation);
    },
  );

  app.get(
    `${base}/invitations`,
    {
      schema: {
        tags,
        security,
        summary: 'List invitations',
        params: WorkspaceParams,
        response: { 200: InvitationList },
      },
      preHandler: requirePermission('invitations:manage'),
    },
    async (req) => ({ data: await service.listInvitations({ scope: requireScope(req) }) }),
  );

  app.delete(
    `${base}/invitations/:invitationId`,
    {
      schema: { tags, security, summary: 'Revoke an invitation', params: InvitationParams },
      preHandler: requirePermission('invitations:manage'),
    },
    async (req, reply) => {
      await service.revokeInvitation({ scope: requireScope(req), invitationId: req.params.invitationId });
      return reply.status(204).send();
    },
  );

  app.post(
    '/api/invitations/accept',
    {
      schema: {
        tags,
        security,
        summary: 'Accept an invitation (signed in with the invited email address)',
        body: InvitationTokenBody,
        response: { 200: AcceptedInvitation },
      },
    },
    async (req) =>
      service.acceptInvitation({ token: req.body.token, userId: requireSession(req).userId, meta: requestMeta(req) }),
  );

  app.post(
    '/api/invitations/decline',
    { schema: { tags, summary: 'Decline an invitation (whoever holds the link)', body: InvitationTokenBody } },
    async (req, reply) => {
      await service.declineInvitation({
        token: req.body.token,
        meta: requestMeta(req),
        ...(req.auth.kind === 'session' ? { userId: req.auth.userId } : {}),
      });
      return reply.status(204).send();
    },
  );
}
