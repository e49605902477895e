import type { FastifyRequest } from 'fastify';
import { AppError, forbidden, notFound } from '../../platform/errors.ts';
import { type Actor, type Role, requestMeta } from '../../platform/http/context.ts';
import { allowedWithoutMfa, type Permission, roleAllows } from './workspaces.permissions.ts';

/** What a caller may do in one workspace, however they authenticated. */
export type WorkspaceAccess = {
  actor: Actor;
  role: Role;
  /** The workspace requires 2FA of every member. */
  requireMfa: boolean;
  /** The caller satisfies it (a session of a user with 2FA; an API key may say true). */
  mfaSatisfied: boolean;
  /** An extra, narrower check (an API key's scopes); the role must allow the permission too. */
  allows?: (permission: Permission) => boolean;
};

/**
 * Turns a request authenticated some other way than a session (an API key, later) into
 * workspace access; null = not allowed in this workspace (answers 404).
 */
export type AccessResolver = (req: FastifyRequest, workspaceId: string) => Promise<WorkspaceAccess | null>;

/** Reads a user's current role in a workspace and the workspace's 2FA rule (null = not a member). */
export type MembershipLookup = {
  resolveMembership(workspaceId: string, userId: string): Promise<{ role: Role; requireMfa: boolean } | null>;
};

type Deps = MembershipLookup;

/**
 * The one authorisation check of workspace routes.
 *
 * `requirePermission(p)` returns a Fastify hook (use it as `preHandler`) that:
 * 1. needs an authenticated caller (401 `unauthenticated`);
 * 2. finds the caller's access to `:workspaceId`: 404 `not_found` when they are not a
 *    member, exactly as for a workspace that does not exist (existence is never revealed);
 * 3. checks the permission table (403 `forbidden`);
 * 4. when the workspace requires 2FA and the caller has none, refuses everything except
 *    reading and leaving (403 `mfa_required`);
 * 5. sets `req.scope = { workspaceId, actor, role }` for the handler.
 *
 * Other kinds of authentication plug in with `registerResolver(kind, resolver)`.
 *
 * @example
 * app.post('/api/workspaces/:workspaceId/keys', { preHandler: workspaces.requirePermission('keys:manage') },
 *   async (req) => keys.createKey({ scope: requireScope(req), input: req.body }));
 */
export function createAccessControl(deps: Deps) {
  const resolvers = new Map<string, AccessResolver>();

  async function resolve(req: FastifyRequest, workspaceId: string): Promise<WorkspaceAccess | null> {
    const auth = req.auth;
    if (auth.kind === 'session') {
      const m = await deps.resolveMembership(workspaceId, auth.userId);
      if (!m) return null;
      return {
        actor: { type: 'user', userId: auth.userId, sessionId: auth.sessionId, meta: requestMeta(req) },
        role: m.role,
        requireMfa: m.requireMfa,
        mfaSatisfied: auth.mfaEnabled,
      };
    }
    const resolver = resolvers.get(auth.kind);
    if (!resolver) throw new AppError('unauthenticated', 'Sign in first.');
    return resolver(req, workspaceId);
  }

  return {
    registerResolver(kind: string, resolver: AccessResolver): void {
      if (kind === 'session' || kind === 'anonymous') throw new Error(`Cannot replace the ${kind} resolver`);
      resolvers.set(kind, resolver);
    },

    requirePermission(permission: Permission) {
      return async function requirePermissionHook(req: FastifyRequest): Promise<void> {
        const params = req.params as { workspaceId?: unknown } | undefined;
        const workspaceId = params?.workspaceId;
        if (typeof workspaceId !== 'string') {
          // A wiring mistake: fail closed with the answer of a workspace that does not exist.
          req.log.error(
            { reqId: req.id, route: req.routeOptions.url },
            'requirePermission on a route without :workspaceId',
          );
          throw notFound('workspace');
        }
        const access = await resolve(req, workspaceId);
        if (!access) throw notFound('workspace');
        if (!roleAllows(access.role, permission) || (access.allows && !access.allows(permission))) {
          throw forbidden();
        }
        if (access.requireMfa && !access.mfaSatisfied && !allowedWithoutMfa(permission)) {
          throw new AppError(
            'mfa_required',
            'This workspace requires two-factor authentication: turn it on for your account to continue.',
          );
        }
        req.scope = { workspaceId, actor: access.actor, role: access.role };
      };
    },
  };
}

/**
 * The scope `requirePermission` set. A route that forgot the hook fails closed (403
 * `forbidden`, logged as the wiring mistake it is), never open.
 */
export function requireScope(req: FastifyRequest) {
  if (!req.scope) {
    req.log.error({ reqId: req.id, route: req.routeOptions.url }, 'workspace route without a requirePermission hook');
    throw forbidden();
  }
  return req.scope;
}
