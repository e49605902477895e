import { createHash, randomBytes } from 'node:crypto';
import { Agent, request } from 'undici';
import { z } from 'zod';
import type { EgressGuard } from '../../platform/http/egress.ts';
import { readLimited } from '../../platform/http/limited-body.ts';

/**
 * The OAuth 2.0 client side Berth speaks to any provider (RFC 6749 authorization code grant
 * with PKCE, RFC 7636; refresh; RFC 7009 revocation). Outbound calls go through the egress
 * guard. Nothing here logs: tokens, codes and client secrets stay in memory, and a
 * provider's error body is reduced to its `error` code.
 */

/** What a provider's token endpoint needs to authenticate Berth's client. */
export type OAuthClient = {
  clientId: string;
  clientSecret: string | null;
  authMethod: 'client_secret_basic' | 'client_secret_post' | 'none';
};

export type TokenSet = {
  accessToken: string;
  refreshToken: string | null;
  /** Seconds the access token lives, when the provider says. */
  expiresIn: number | null;
  /** The granted scopes, when the provider says (else: those asked for). */
  scope: string[] | null;
};

/** The provider answered with an OAuth error (`invalid_grant`, `invalid_client`, ...). */
export class OAuthProtocolError extends Error {
  constructor(
    readonly error: string,
    readonly status: number,
  ) {
    super(`OAuth provider answered ${status} ${error}`);
    this.name = 'OAuthProtocolError';
  }
}

/** The provider could not be reached, timed out, or answered something that is not OAuth. */
export class OAuthTransportError extends Error {
  constructor(readonly reason: string) {
    super(`OAuth provider unreachable or unreadable: ${reason}`);
    this.name = 'OAuthTransportError';
  }
}

const base64url = (b: Buffer) => b.toString('base64url');

/** A PKCE pair (S256): the verifier stays with Berth, the challenge goes in the authorization URL. */
export function pkcePair(): { verifier: string; challenge: string } {
  const verifier = base64url(randomBytes(32));
  return { verifier, challenge: base64url(createHash('sha256').update(verifier).digest()) };
}

/** A fresh `state` (256 random bits) and the hash Berth keeps of it. */
export function newState(): { state: string; hash: string } {
  const state = base64url(randomBytes(32));
  return { state, hash: hashState(state) };
}

export function hashState(state: string): string {
  return createHash('sha256').update(state, 'utf8').digest('hex');
}

/** Parameters Berth sets itself: extra authorize parameters may not override them. */
export const RESERVED_AUTHORIZE_PARAMS = new Set([
  'response_type',
  'client_id',
  'redirect_uri',
  'scope',
  'state',
  'code_challenge',
  'code_challenge_method',
]);

export function authorizationUrl(input: {
  authorizationUrl: string;
  clientId: string;
  redirectUri: string;
  scopes: string[];
  state: string;
  challenge: string;
  extra: Record<string, string>;
}): string {
  const url = new URL(input.authorizationUrl);
  for (const [k, v] of Object.entries(input.extra)) url.searchParams.set(k, v);
  url.searchParams.set('response_type', 'code');
  url.searchParams.set('client_id', input.clientId);
  url.searchParams.set('redirect_uri', input.redirectUri);
  if (input.scopes.length > 0) url.searchParams.set('scope', input.scopes.join(' '));
  url.searchParams.set('state', input.state);
  url.searchParams.set('code_challenge', input.challenge);
  url.searchParams.set('code_challenge_method', 'S256');
  return url.toString();
}

const TokenResponse = z.object({
  access_token: z.string().min(1).max(16_384),
  token_type: z.string().max(100).optional(),
  expires_in: z.union([z.number(), z.string().regex(/^\d{1,10}$/)]).optional(),
  refresh_token: z.string().min(1).max(16_384).optional(),
  scope: z.string().max(4000).optional(),
});

const ErrorResponse = z.object({ error: z.string().regex(/^[\x20-\x7e]{1,100}$/) });

const MAX_RESPONSE_BYTES = 256 * 1024;

/** Form-encoding as RFC 6749 appendix B asks for client credentials in Basic auth. */
const formEncode = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');

export type OAuthHttp = ReturnType<typeof oauthHttp>;

/** The HTTP side: token exchange, refresh and revocation, through the egress guard. */
export function oauthHttp(deps: { egress: EgressGuard; timeoutMs?: number }) {
  const timeoutMs = deps.timeoutMs ?? 15_000;
  const agent = new Agent({
    connect: { lookup: deps.egress.lookup, timeout: timeoutMs },
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
  });

  async function post(
    endpoint: string,
    form: Record<string, string>,
    client: OAuthClient,
  ): Promise<{ status: number; body: unknown }> {
    const url = new URL(endpoint);
    deps.egress.assertUrl(url);
    const params = new URLSearchParams(form);
    const headers: Record<string, string> = {
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
    };
    if (client.authMethod === 'client_secret_basic' && client.clientSecret !== null) {
      const raw = `${formEncode(client.clientId)}:${formEncode(client.clientSecret)}`;
      headers.authorization = `Basic ${Buffer.from(raw, 'utf8').toString('base64')}`;
    } else {
      params.set('client_id', client.clientId);
      if (client.authMethod === 'client_secret_post' && client.clientSecret !== null) {
        params.set('client_secret', client.clientSecret);
      }
    }
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(url, {
        method: 'POST',
        headers,
        body: params.toString(),
        dispatcher: agent,
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw new OAuthTransportError((err as Error).name === 'EgressDenied' ? 'egress denied' : 'connection failed');
    }
    let raw: Buffer | null;
    try {
      raw = await readLimited(res.body, MAX_RESPONSE_BYTES);
    } catch {
      throw new OAuthTransportError('response interrupted');
    }
    if (raw === null) {
      res.body.destroy();
      throw new OAuthTransportError('response too large');
    }
    const text = raw.toString('utf8');
    let body: unknown = null;
    try {
      body = text.length > 0 ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    return { status: res.statusCode, body };
  }

  function tokenSet(status: number, body: unknown): TokenSet {
    if (status >= 200 && status < 300) {
      const ok = TokenResponse.safeParse(body);
      if (!ok.success) throw new OAuthTransportError('not an OAuth token response');
      const d = ok.data;
      if (d.token_type !== undefined && d.token_type.toLowerCase() !== 'bearer') {
        throw new OAuthTransportError('token type is not Bearer');
      }
      const expiresIn = d.expires_in === undefined ? null : Number(d.expires_in);
      return {
        accessToken: d.access_token,
        refreshToken: d.refresh_token ?? null,
        expiresIn: expiresIn !== null && Number.isFinite(expiresIn) && expiresIn > 0 ? expiresIn : null,
        scope: d.scope === undefined ? null : d.scope.split(' ').filter(Boolean),
      };
    }
    const err = ErrorResponse.safeParse(body);
    if (status >= 400 && status < 500 && err.success) throw new OAuthProtocolError(err.data.error, status);
    throw new OAuthTransportError(`status ${status}`);
  }

  return {
    /** Exchanges an authorization code (with its PKCE verifier) for tokens. */
    async exchangeCode(
      tokenUrl: string,
      client: OAuthClient,
      input: { code: string; verifier: string; redirectUri: string },
    ): Promise<TokenSet> {
      const { status, body } = await post(
        tokenUrl,
        {
          grant_type: 'authorization_code',
          code: input.code,
          redirect_uri: input.redirectUri,
          code_verifier: input.verifier,
        },
        client,
      );
      return tokenSet(status, body);
    },

    async refresh(tokenUrl: string, client: OAuthClient, refreshToken: string): Promise<TokenSet> {
      const { status, body } = await post(
        tokenUrl,
        { grant_type: 'refresh_token', refresh_token: refreshToken },
        client,
      );
      return tokenSet(status, body);
    },

    /** RFC 7009: revokes a token; throws when the provider did not answer 200. */
    async revoke(
      revocationUrl: string,
      client: OAuthClient,
      token: string,
      hint: 'refresh_token' | 'access_token',
    ): Promise<void> {
      const { status, body } = await post(revocationUrl, { token, token_type_hint: hint }, client);
      if (status === 200) return;
      const err = ErrorResponse.safeParse(body);
      if (err.success) throw new OAuthProtocolError(err.data.error, status);
      throw new OAuthTransportError(`status ${status}`);
    },

    async close(): Promise<void> {
      await agent.close();
    },
  };
}
