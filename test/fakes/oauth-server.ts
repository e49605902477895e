import { generateKeyPairSync } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';

/**
 * A real OAuth 2.0 authorization server for tests: oidc-provider on 127.0.0.1 (random port)
 * with one confidential client, the authorization code grant with PKCE (S256, required),
 * refresh tokens (rotated on every use) and token revocation (RFC 7009). The user's side of
 * the flow (login and consent) is completed programmatically by `authorize`, which follows
 * the redirects as a browser would, so no browser is needed.
 */
export type FakeOAuthServer = {
  issuer: string;
  authorizationUrl: string;
  tokenUrl: string;
  revocationUrl: string;
  clientId: string;
  clientSecret: string;
  /** What reached the token and revocation endpoints (whatever the answer). */
  counts: { codeExchanges: number; refreshes: number; revocations: number };
  /** `token_type_hint` of each revocation request, in order. */
  revokedHints: string[];
  /**
   * Makes the token endpoint answer every request with this OAuth error (`invalid_grant`
   * with 400) or a server failure (`server_error` with 500) until set back to null.
   */
  failTokenEndpoint: 'invalid_grant' | 'server_error' | null;
  /** Makes the revocation endpoint answer 503 while true. */
  failRevocation: boolean;
  /** Delay (ms) before the token endpoint answers a refresh: widens the window for races. */
  refreshDelayMs: number;
  /** Token requests received and not yet answered (waiting out `refreshDelayMs`). */
  readonly tokenRequestsWaiting: number;
  /**
   * Follows an authorization URL as the user's browser would: logs in as `account`, grants
   * every requested scope (or declines with `deny`), and returns the URL the provider sends
   * the browser back to (Berth's callback, with `code` or `error` and `state`).
   */
  authorize(url: string, opts?: { account?: string; deny?: boolean }): Promise<URL>;
  close(): Promise<void>;
};

export async function startFakeOAuthServer(opts: { redirectUri: string }): Promise<FakeOAuthServer> {
  const clientId = 'berth-test-client';
  const clientSecret = `secret-${Math.random().toString(36).slice(2)}-${Date.now()}`;
  let provider: Provider | null = null;
  let pending: { account: string; deny: boolean } = { account: 'alice', deny: false };
  let waiting = 0;

  const state: Pick<
    FakeOAuthServer,
    'counts' | 'revokedHints' | 'failTokenEndpoint' | 'failRevocation' | 'refreshDelayMs'
  > = {
    counts: { codeExchanges: 0, refreshes: 0, revocations: 0 },
    revokedHints: [],
    failTokenEndpoint: null,
    failRevocation: false,
    refreshDelayMs: 0,
  };

  async function interaction(req: IncomingMessage, res: ServerResponse, p: Provider) {
    const details = await p.interactionDetails(req, res);
    if (pending.deny) {
      await p.interactionFinished(
        req,
        res,
        { error: 'access_denied', error_description: 'The user declined' },
        { mergeWithLastSubmission: false },
      );
      return;
    }
    const grant = new p.Grant({ accountId: pending.account, clientId: String(details.params.client_id) });
    grant.addOIDCScope(String(details.params.scope ?? 'openid'));
    const grantId = await grant.save();
    await p.interactionFinished(
      req,
      res,
      { login: { accountId: pending.account }, consent: { grantId } },
      { mergeWithLastSubmission: false },
    );
  }

  const server = createServer((req, res) => {
    const p = provider;
    if (!p) {
      res.statusCode = 503;
      res.end();
      return;
    }
    const path = (req.url ?? '').split('?')[0] ?? '';
    if (path.startsWith('/interaction/')) {
      interaction(req, res, p).catch(() => {
        res.statusCode = 500;
        res.end();
      });
      return;
    }
    if (path === '/token' && req.method === 'POST' && state.failTokenEndpoint) {
      const failure = state.failTokenEndpoint;
      req.resume();
      req.on('end', () => {
        state.counts.refreshes++;
        res.statusCode = failure === 'invalid_grant' ? 400 : 500;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ error: failure, error_description: 'refused by the test' }));
      });
      return;
    }
    if (path === '/token/revocation' && req.method === 'POST' && state.failRevocation) {
      req.resume();
      req.on('end', () => {
        state.counts.revocations++;
        res.statusCode = 503;
        res.end('unavailable');
      });
      return;
    }
    void p.callback()(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  provider = new Provider(issuer, {
    jwks: { keys: [{ ...signingKey, kid: 'test', alg: 'RS256', use: 'sig' }] },
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: [opts.redirectUri],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    async findAccount(_ctx, sub) {
      return { accountId: sub, claims: async () => ({ sub }) };
    },
    features: { devInteractions: { enabled: false }, revocation: { enabled: true } },
    pkce: { required: () => true },
    scopes: ['openid', 'offline_access', 'email'],
    issueRefreshToken: async () => true,
    rotateRefreshToken: () => true,
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      RefreshToken: 14 * 24 * 3600,
      Interaction: 600,
      Grant: 14 * 24 * 3600,
      Session: 3600,
    },
    interactions: { url: (_ctx, i) => `/interaction/${i.uid}` },
    cookies: { keys: ['berth-test-cookie-key'] },
  });
  provider.use(async (ctx, next) => {
    const route = ctx.path;
    if (route === '/token' && ctx.method === 'POST' && state.refreshDelayMs > 0) {
      waiting++;
      try {
        await new Promise((r) => setTimeout(r, state.refreshDelayMs));
      } finally {
        waiting--;
      }
    }
    await next();
    const params = (ctx as { oidc?: { params?: Record<string, unknown> } }).oidc?.params;
    if (route === '/token' && ctx.method === 'POST') {
      if (params?.grant_type === 'refresh_token') state.counts.refreshes++;
      if (params?.grant_type === 'authorization_code') state.counts.codeExchanges++;
    }
    if (route === '/token/revocation' && ctx.method === 'POST') {
      state.counts.revocations++;
      state.revokedHints.push(String(params?.token_type_hint ?? ''));
    }
  });

  async function authorize(url: string, o: { account?: string; deny?: boolean } = {}): Promise<URL> {
    pending = { account: o.account ?? 'alice', deny: o.deny ?? false };
    const cookies = new Map<string, string>();
    let next = new URL(url);
    for (let hop = 0; hop < 10; hop++) {
      if (next.href.startsWith(opts.redirectUri)) return next;
      const res = await fetch(next, {
        redirect: 'manual',
        headers: cookies.size ? { cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') } : {},
      });
      for (const c of res.headers.getSetCookie()) {
        const [pair = ''] = c.split(';');
        const eq = pair.indexOf('=');
        const name = pair.slice(0, eq).trim();
        const value = pair.slice(eq + 1).trim();
        if (value === '' || /expires=thu, 01 jan 1970/i.test(c)) cookies.delete(name);
        else cookies.set(name, value);
      }
      await res.arrayBuffer();
      const location = res.headers.get('location');
      if (res.status < 300 || res.status >= 400 || !location) {
        throw new Error(`the authorization flow stopped at ${next.pathname} with ${res.status}`);
      }
      next = new URL(location, next);
    }
    throw new Error('the authorization flow did not come back to the redirect URI');
  }

  return {
    issuer,
    authorizationUrl: `${issuer}/auth`,
    tokenUrl: `${issuer}/token`,
    revocationUrl: `${issuer}/token/revocation`,
    clientId,
    clientSecret,
    get counts() {
      return state.counts;
    },
    get revokedHints() {
      return state.revokedHints;
    },
    get failTokenEndpoint() {
      return state.failTokenEndpoint;
    },
    set failTokenEndpoint(v) {
      state.failTokenEndpoint = v;
    },
    get failRevocation() {
      return state.failRevocation;
    },
    set failRevocation(v) {
      state.failRevocation = v;
    },
    get tokenRequestsWaiting() {
      return waiting;
    },
    get refreshDelayMs() {
      return state.refreshDelayMs;
    },
    set refreshDelayMs(v) {
      state.refreshDelayMs = v;
    },
    authorize,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
