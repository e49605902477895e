import type { FastifyRequest } from 'fastify';

/**
 * Who is calling, as every route sees it. The identity module fills `req.auth` for each
 * request; the workspaces module turns it into a `Scope` for workspace routes.
 */
export type Auth =
  | { kind: 'anonymous' }
  | {
      kind: 'session';
      userId: string;
      sessionId: string;
      /** The user has a confirmed second factor. */
      mfaEnabled: boolean;
      isOperator: boolean;
    }
  | {
      kind: 'api_key';
      keyId: string;
      /** A key belongs to exactly one workspace. */
      workspaceId: string;
      /** The member who created the key. */
      userId: string;
      scopes: readonly string[];
    };

export type SessionAuth = Extract<Auth, { kind: 'session' }>;

/**
 * Who acts: recorded with every change (audit, security events). `meta` carries the
 * request's IP, user agent and id when the change came over HTTP.
 */
export type Actor =
  | { type: 'user'; userId: string; sessionId?: string; meta?: RequestMeta }
  | { type: 'api_key'; keyId: string; userId: string; meta?: RequestMeta }
  | { type: 'system'; name: string; meta?: RequestMeta };

export type Role = 'owner' | 'admin' | 'member' | 'viewer';

/** Every workspace service call says whose it is. */
export type Scope = { workspaceId: string; actor: Actor; role: Role };

/** What the request came with that security checks need (never bodies). */
export type RequestMeta = { ip: string; userAgent: string | null; requestId: string };

declare module 'fastify' {
  interface FastifyRequest {
    auth: Auth;
    scope?: Scope;
  }
}

export const anonymous: Auth = { kind: 'anonymous' };

/** The request facts recorded with a change: client IP, user agent, request id. Never bodies. */
export function requestMeta(req: FastifyRequest): RequestMeta {
  const ua = req.headers['user-agent'];
  return { ip: req.ip, userAgent: typeof ua === 'string' ? ua.slice(0, 512) : null, requestId: req.id };
}

/**
 * How a state-changing route relates to the audit log. Every POST/PUT/PATCH/DELETE route
 * writes exactly one audit event when it succeeds (test/audit-coverage.db.test.ts proves it
 * route by route), unless it declares `config: { audit: { exempt: 'why' } }`.
 */
export type AuditRouteConfig = { exempt: string };

declare module 'fastify' {
  interface FastifyContextConfig {
    audit?: AuditRouteConfig;
  }
}
