import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError, forbidden } from '../../platform/errors.ts';
import { requestMeta } from '../../platform/http/context.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import { type MembershipLookup, roleAllows, type WorkspaceAccess } from '../workspaces/index.ts';
import { looksLikeKey } from './keys.format.ts';
import { insufficientScope, scopesCover } from './keys.scopes.ts';
import type { KeysService } from './keys.service.ts';
import type { KeyPrincipal } from './keys.verify.ts';

/** Query parameters that carry credentials in other APIs: refused whatever their value. */
const KEY_PARAMS = new Set(['api_key', 'apikey', 'api-key', 'x-api-key', 'key', 'access_token']);

const principals = new WeakMap<FastifyRequest, KeyPrincipal>();

/**
 * The verified API key of a request (limits the gateway enforces), or null for requests
 * that did not come with one.
 *
 * @example const key = apiKeyOf(req); if (key?.allowedModels && !key.allowedModels.includes(model)) ...
 */
export function apiKeyOf(req: FastifyRequest): KeyPrincipal | null {
  return principals.get(req) ?? null;
}

function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

/** True for the gateway's routes, which accept API keys only. */
export function isGatewayPath(url: string): boolean {
  const p = pathOf(url);
  return p === '/v1' || p.startsWith('/v1/');
}

/**
 * Where under /api a key may go: workspace routes (which check its scopes) and /api/keys/*.
 * Account, sign-in, setup and operator routes need a person's session.
 */
function keyMayReach(url: string): boolean {
  const p = pathOf(url);
  if (!p.startsWith('/api/') && p !== '/api') return true;
  return /^\/api\/workspaces\/[^/]+(\/|$)/.test(p) || p.startsWith('/api/keys/');
}

/** Refuses credentials in the URL: they end up in proxies' logs and browser history. */
function refuseKeysInQuery(url: string) {
  const q = url.indexOf('?');
  if (q < 0) return;
  for (const [name, value] of new URLSearchParams(url.slice(q + 1))) {
    if (KEY_PARAMS.has(name.toLowerCase()) || looksLikeKey(value)) {
      throw new AppError(
        'api_key_in_query',
        'Do not put API keys in the URL: send them in the Authorization header (Bearer) or x-api-key.',
      );
    }
  }
}

function single(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  if (Array.isArray(v)) throw new AppError('bad_request', `Send the ${name} header once.`);
  return v;
}

/** The key the request presents (`Authorization: Bearer` or `x-api-key`), or null. */
function presentedKey(req: FastifyRequest): string | null {
  const authorization = single(req, 'authorization');
  let bearer: string | null = null;
  if (authorization !== undefined) {
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization);
    if (m?.[1]) bearer = m[1];
    else if (/^Bearer\b/i.test(authorization)) bearer = '';
  }
  const header = single(req, 'x-api-key');
  const fromHeader = header === undefined ? null : header.trim();
  if (bearer !== null && fromHeader !== null && bearer !== fromHeader) {
    throw new AppError('bad_request', 'Send the API key once: Authorization and x-api-key differ.');
  }
  return bearer ?? fromHeader;
}

function unauthorized(reply: FastifyReply, err: AppError): AppError {
  if (err.status === 401) reply.header('www-authenticate', 'Bearer realm="berth"');
  return err;
}

/** OpenAI's error object, which /v1 answers (its SDKs read `error.code` and `error.message`). */
export function openAiError(err: AppError) {
  const type = err.status >= 500 ? 'server_error' : err.status === 429 ? 'rate_limit_error' : 'invalid_request_error';
  return { error: { message: err.message, type, param: null, code: err.code } };
}

/**
 * Installs API key authentication on the root server, ahead of the session hook: a request
 * that presents a key is authenticated by it alone (cookies are ignored, so it needs no
 * CSRF token), and a bad key is refused (401), never downgraded to anonymous or to the
 * cookie. Keys in the query string are refused (400). `/v1` needs a key with
 * `gateway:invoke` and answers errors in OpenAI's shape.
 */
export function installKeyAuth(app: HttpServer, service: Pick<KeysService, 'verifyKey'>) {
  app.addErrorRenderer('/v1', (err) => openAiError(err));

  app.addHook('onRequest', async (req, reply) => {
    refuseKeysInQuery(req.url);
    const gateway = isGatewayPath(req.url);
    const presented = presentedKey(req);
    if (presented === null) {
      if (gateway) {
        throw unauthorized(
          reply,
          new AppError('invalid_api_key', 'Send your API key as "Authorization: Bearer brt_..." (or x-api-key).'),
        );
      }
      return;
    }
    let principal: KeyPrincipal;
    try {
      principal = await service.verifyKey(presented, req.ip);
    } catch (err) {
      throw err instanceof AppError ? unauthorized(reply, err) : err;
    }
    principals.set(req, principal);
    Object.defineProperty(req, 'auth', {
      value: {
        kind: 'api_key',
        keyId: principal.keyId,
        workspaceId: principal.workspaceId,
        userId: principal.userId,
        scopes: principal.scopes,
      },
      writable: true,
      enumerable: true,
      configurable: true,
    });
    if (gateway) {
      if (!scopesCover(principal.scopes, 'gateway:invoke')) throw insufficientScope('gateway:invoke');
      if (!roleAllows(principal.role, 'gateway:invoke')) {
        throw forbidden("The key creator's role does not allow calling the gateway.");
      }
    } else if (!keyMayReach(req.url)) {
      throw forbidden('API keys cannot be used here: account, sign-in and operator routes need a signed-in session.');
    }
  });
}

/**
 * Workspace access for a request authenticated by a key: only the key's own workspace
 * (others answer 404 like for any non-member), with its creator's current role (read per
 * request), the creator's 2FA state for the workspace rule, and a scope check that
 * answers 403 `insufficient_scope`.
 */
export function keyAccessResolver(members: MembershipLookup) {
  return async (req: FastifyRequest, workspaceId: string): Promise<WorkspaceAccess | null> => {
    const auth = req.auth;
    if (auth.kind !== 'api_key' || auth.workspaceId !== workspaceId) return null;
    const m = await members.resolveMembership(workspaceId, auth.userId);
    if (!m) return null;
    return {
      actor: { type: 'api_key', keyId: auth.keyId, userId: auth.userId, meta: requestMeta(req) },
      role: m.role,
      requireMfa: m.requireMfa,
      // The workspace 2FA rule follows the key's creator: while they have no second factor,
      // their keys get what members without one get (403 `mfa_required` for the rest).
      mfaSatisfied: apiKeyOf(req)?.creatorMfa ?? false,
      allows(permission) {
        if (!scopesCover(auth.scopes, permission)) throw insufficientScope(permission);
        return true;
      },
    };
  };
}
