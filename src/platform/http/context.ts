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
    };

export type SessionAuth = Extract<Auth, { kind: 'session' }>;

/** Who acts: recorded with every change (audit, security events). */
export type Actor = { type: 'user'; userId: string; sessionId?: string } | { type: 'system'; name: string };

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
