import cookie from '@fastify/cookie';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../../platform/errors.ts';
import { type Actor, requestMeta, type SessionAuth } from '../../platform/http/context.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { IdentityCore, IssuedSession } from './identity.service.ts';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** `__Host-` pins the cookie to this origin (Secure, Path=/, no Domain); it needs https. */
export function sessionCookieName(publicUrl: string): string {
  return publicUrl.startsWith('https:') ? '__Host-berth_session' : 'berth_session';
}

/** What the request came with that security checks need (never bodies). */
export { requestMeta };

/**
 * The signed-in session of the request, or 401 `unauthenticated`.
 *
 * @example const auth = requireSession(req); await svc.doThing(auth.userId);
 */
export function requireSession(req: FastifyRequest): SessionAuth {
  if (req.auth.kind !== 'session') throw new AppError('unauthenticated', 'Sign in first.');
  return req.auth;
}

/** The session of a platform operator, or 401 / 403 `forbidden`. */
export function requireOperator(req: FastifyRequest): SessionAuth {
  const auth = requireSession(req);
  if (!auth.isOperator) throw new AppError('forbidden', 'Only platform operators may do this.');
  return auth;
}

/** The signed-in operator as the actor of a platform change, with the request's facts for the audit log. */
export function operatorActor(req: FastifyRequest): Actor {
  const auth = requireOperator(req);
  return { type: 'user', userId: auth.userId, sessionId: auth.sessionId, meta: requestMeta(req) };
}

/** Route preHandlers: `{ preHandler: sessionRequired }`. */
export const sessionRequired = async (req: FastifyRequest) => {
  requireSession(req);
};
export const operatorRequired = async (req: FastifyRequest) => {
  requireOperator(req);
};

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Browser-origin check: a state change must come from Berth's own origin. Sec-Fetch-Site
 * other than same-origin/none, or an Origin other than the public URL's, is refused.
 * Clients that send neither (curl, SDKs) are not browsers and rely on the CSRF token.
 */
function assertSameOrigin(req: FastifyRequest, allowedOrigin: string) {
  const site = header(req, 'sec-fetch-site');
  if (site !== undefined && site !== 'same-origin' && site !== 'none') {
    throw new AppError('csrf_failed', 'Cross-site requests may not change anything.');
  }
  const origin = header(req, 'origin');
  if (origin !== undefined && origin !== allowedOrigin) {
    throw new AppError('csrf_failed', 'This request comes from another origin.');
  }
}

export type AuthOptions = { core: IdentityCore; publicUrl: string };

/**
 * Installs cookie parsing and the authentication hook on the root server, so it runs for
 * every route of every module: resolves the session cookie into `req.auth` and enforces CSRF
 * (origin check + HMAC token bound to the session, in `x-csrf-token`) on every
 * cookie-authenticated request that is not GET/HEAD/OPTIONS. Sign-in routes get the origin
 * check even without a session (login CSRF).
 */
export async function installAuth(app: HttpServer, opts: AuthOptions) {
  const name = sessionCookieName(opts.publicUrl);
  const allowedOrigin = new URL(opts.publicUrl).origin;
  await app.register(cookie);

  const authenticate = async (req: FastifyRequest, reply: FastifyReply) => {
    const unsafe = !SAFE_METHODS.has(req.method);
    const token = req.cookies[name];
    const auth = token ? await opts.core.resolveSession(token) : null;
    if (token && !auth) clearSessionCookie(reply, opts.publicUrl);
    if (!auth) {
      if (unsafe && req.url.startsWith('/api/auth/')) assertSameOrigin(req, allowedOrigin);
      return;
    }
    // `auth` is declared read-only on the prototype (anonymous by default); each request gets its own.
    Object.defineProperty(req, 'auth', { value: auth, writable: true, enumerable: true, configurable: true });
    if (unsafe) {
      assertSameOrigin(req, allowedOrigin);
      const csrf = header(req, 'x-csrf-token');
      if (!csrf || !opts.core.verifyCsrfToken(auth.sessionId, csrf)) {
        throw new AppError('csrf_failed', 'Missing or wrong CSRF token: send the x-csrf-token header.');
      }
    }
  };
  // Callback style, so a request that needs no session costs no promise (every gateway call).
  app.addHook('onRequest', (req, reply, done) => {
    // The keys module's hook runs first: a request it authenticated by API key is never a
    // cookie session (the cookie is ignored) and needs no CSRF token.
    if (req.auth.kind === 'api_key') return done();
    authenticate(req, reply).then(() => done(), done);
  });
}

export function setSessionCookie(reply: FastifyReply, publicUrl: string, session: IssuedSession, now: Date) {
  const secure = publicUrl.startsWith('https:');
  reply.setCookie(sessionCookieName(publicUrl), session.token, {
    path: '/',
    httpOnly: true,
    sameSite: 'lax',
    secure,
    maxAge: Math.max(1, Math.floor((session.absoluteExpiresAt.getTime() - now.getTime()) / 1000)),
  });
}

export function clearSessionCookie(reply: FastifyReply, publicUrl: string) {
  reply.clearCookie(sessionCookieName(publicUrl), {
    path: '/',
    httpOnly: true,
    sameSite: 'lax',
    secure: publicUrl.startsWith('https:'),
  });
}
