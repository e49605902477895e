import type { Clock } from '../../platform/clock.ts';
import { afterCommit, type Database, type Db } from '../../platform/db/db.ts';
import { AppError, forbidden, notFound } from '../../platform/errors.ts';
import type { Actor, RequestMeta, Scope } from '../../platform/http/context.ts';
import { EgressDenied, type EgressGuard } from '../../platform/http/egress.ts';
import { isId, newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import type { AuditInput } from '../audit/index.ts';
import type { Mailer } from '../notifications/index.ts';
import {
  authorizationUrl,
  hashState,
  newState,
  type OAuthClient,
  type OAuthHttp,
  OAuthProtocolError,
  OAuthTransportError,
  pkcePair,
  RESERVED_AUTHORIZE_PARAMS,
  type TokenSet,
} from './vault.connections.oauth.ts';
import type { ConnectionsRepo } from './vault.connections.repo.ts';
import type {
  AuthorizeInput,
  ConnectionView,
  CreateOAuthProviderInput,
  OAuthProviderView,
} from './vault.connections.schemas.ts';
import type { OAuthConnectionRow, OAuthProviderRow } from './vault.connections.tables.ts';
import type { VaultService } from './vault.service.ts';

export type ConnectionsDeps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: ConnectionsRepo;
  clock: Clock;
  logger: Pick<Logger, 'info' | 'warn'>;
  vault: Pick<VaultService, 'encrypt' | 'decryptString'>;
  audit: { record(tx: Database, input: AuditInput): Promise<unknown> };
  http: OAuthHttp;
  egress: EgressGuard;
  /** Berth's public URL: the callback is `<publicUrl>/api/oauth/callback`. */
  publicUrl: string;
  mailer: Mailer;
  /** The connection owner's address, for the "connection broken" email (identity's). */
  findUser(userId: string): Promise<{ email: string } | null>;
  /** How long before expiry an access token is refreshed (default 60 s). */
  refreshMarginMs?: number;
  /** How long an authorization may take at the provider (default 10 minutes). */
  authorizationTtlMs?: number;
};

/** What a run gets: a valid access token, in memory only. */
export type AccessToken = { accessToken: string; expiresAt: Date | null; scopes: string[] };

/** The callback's outcome: the connection made, or an error; `redirectTo` when the flow asked to return to a page. */
export type CallbackResult =
  | { ok: true; connection: ConnectionView; redirectTo: string | null }
  | { ok: false; error: AppError; redirectTo: string | null };

export const CALLBACK_PATH = '/api/oauth/callback';

const ws = (workspaceId: string) => ({ type: 'workspace', id: workspaceId }) as const;
const secretCtx = (workspaceId: string, providerId: string) =>
  ({ owner: ws(workspaceId), record: providerId, field: 'oauth_client_secret' }) as const;
const verifierCtx = (workspaceId: string, authorizationId: string) =>
  ({ owner: ws(workspaceId), record: authorizationId, field: 'pkce_verifier' }) as const;
const tokenCtx = (workspaceId: string, connectionId: string, field: 'access_token' | 'refresh_token') =>
  ({ owner: ws(workspaceId), record: connectionId, field }) as const;

function actorUser(actor: Actor): string {
  if (actor.type === 'system') throw forbidden('Connections belong to people: sign in or use a member’s API key.');
  return actor.userId;
}

function providerView(row: OAuthProviderRow): OAuthProviderView {
  return {
    id: row.id,
    name: row.name,
    authorizationUrl: row.authorizationUrl,
    tokenUrl: row.tokenUrl,
    revocationUrl: row.revocationUrl,
    clientId: row.clientId,
    hasClientSecret: row.clientSecretCiphertext !== null,
    tokenAuthMethod: row.tokenAuthMethod,
    scopes: row.scopes,
    authorizeParams: row.authorizeParams,
    createdBy: row.createdBy,
    createdAt: row.createdAt.toISOString(),
  };
}

function connectionView(row: OAuthConnectionRow, providerName: string, userId: string | null): ConnectionView {
  return {
    id: row.id,
    provider: providerName,
    providerId: row.providerId,
    userId: row.userId,
    mine: row.userId === userId,
    shared: row.shared,
    status: row.status,
    scopes: row.scopes,
    expiresAt: row.expiresAt?.toISOString() ?? null,
    createdAt: row.createdAt.toISOString(),
    refreshedAt: row.refreshedAt?.toISOString() ?? null,
    brokenAt: row.brokenAt?.toISOString() ?? null,
  };
}

/**
 * OAuth connections: workspaces' providers, the authorization flow (state and PKCE kept
 * server-side, single use), tokens as vault ciphertext bound to their connection, refresh
 * under a per-connection row lock, and disconnect with revocation at the provider.
 *
 * @example
 * const { accessToken } = await connections.accessToken(connectionId, { workspaceId, userId });
 */
export function connectionsService(deps: ConnectionsDeps) {
  const { db, repo, clock } = deps;
  const margin = deps.refreshMarginMs ?? 60_000;
  const ttl = deps.authorizationTtlMs ?? 10 * 60_000;
  const redirectUri = `${deps.publicUrl.replace(/\/+$/, '')}${CALLBACK_PATH}`;

  function checkUrl(raw: string, field: string): string {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new AppError('validation_failed', `${field} is not a valid URL.`, {
        details: [{ path: `/${field}`, message: 'not a URL' }],
      });
    }
    if (url.username || url.password || url.hash) {
      throw new AppError('validation_failed', `${field} may not carry credentials or a fragment.`, {
        details: [{ path: `/${field}`, message: 'credentials or fragment in the URL' }],
      });
    }
    try {
      deps.egress.assertUrl(url);
    } catch (err) {
      if (err instanceof EgressDenied) throw new AppError('egress_denied', err.message);
      throw err;
    }
    return url.toString();
  }

  async function clientOf(tx: Database, row: OAuthProviderRow): Promise<OAuthClient> {
    return {
      clientId: row.clientId,
      clientSecret: row.clientSecretCiphertext
        ? await deps.vault.decryptString(secretCtx(row.workspaceId, row.id), row.clientSecretCiphertext, tx)
        : null,
      authMethod: row.tokenAuthMethod,
    };
  }

  async function providerByRef(tx: Database, workspaceId: string, ref: string): Promise<OAuthProviderRow> {
    const row = isId(ref, 'oap')
      ? await repo.findProvider(tx, workspaceId, ref)
      : await repo.findProviderByName(tx, workspaceId, ref);
    if (!row) throw notFound('OAuth provider');
    return row;
  }

  function expiryOf(set: TokenSet): Date | null {
    return set.expiresIn === null ? null : new Date(clock.now().getTime() + set.expiresIn * 1000);
  }

  function needsRefresh(row: OAuthConnectionRow): boolean {
    return row.expiresAt !== null && row.expiresAt.getTime() - margin <= clock.now().getTime();
  }

  /** Revokes a connection's refresh token (else its access token) at the provider; failures are logged, never thrown. */
  async function revokeAtProvider(tx: Database, provider: OAuthProviderRow, connectionId: string): Promise<boolean> {
    if (!provider.revocationUrl) return false;
    try {
      const tokens = await repo.findTokens(tx, provider.workspaceId, connectionId);
      if (!tokens) return false;
      const [token, hint] = tokens.refreshTokenCiphertext
        ? [
            await deps.vault.decryptString(
              tokenCtx(provider.workspaceId, connectionId, 'refresh_token'),
              tokens.refreshTokenCiphertext,
              tx,
            ),
            'refresh_token' as const,
          ]
        : [
            await deps.vault.decryptString(
              tokenCtx(provider.workspaceId, connectionId, 'access_token'),
              tokens.accessTokenCiphertext,
              tx,
            ),
            'access_token' as const,
          ];
      await deps.http.revoke(provider.revocationUrl, await clientOf(tx, provider), token, hint);
      return true;
    } catch (err) {
      const reason =
        err instanceof OAuthProtocolError
          ? err.error
          : err instanceof OAuthTransportError
            ? err.reason
            : (err as Error).name;
      deps.logger.warn(
        { connection: connectionId, provider: provider.id, reason },
        'oauth: revocation at the provider failed; the connection is deleted anyway',
      );
      return false;
    }
  }

  async function mailBroken(row: OAuthConnectionRow, providerName: string): Promise<void> {
    try {
      const user = await deps.findUser(row.userId);
      if (!user) return;
      await deps.mailer.send({
        to: user.email,
        userId: row.userId,
        tag: 'connections.broken',
        subject: `Your ${providerName} connection stopped working`,
        text:
          `${providerName} refused to renew Berth's access to your account (connection ${row.id}).\n\n` +
          'Agents cannot act with this connection until you connect again: open Berth, remove the ' +
          'broken connection and connect the account again.\n',
      });
    } catch (err) {
      deps.logger.warn(
        { connection: row.id, err: (err as Error).name },
        'oauth: the broken-connection email was not sent',
      );
    }
  }

  function brokenError(): AppError {
    return new AppError(
      'connection_broken',
      'This connection stopped working (its provider refused to renew access); its owner must connect again.',
    );
  }

  /** Refreshes under the connection's row lock: of all callers, only the first to hold it calls the provider. */
  async function refreshLocked(workspaceId: string, connectionId: string): Promise<AccessToken> {
    const outcome = await db.tenant(workspaceId, async (tx) => {
      const row = await repo.lockConnection(tx, workspaceId, connectionId);
      if (!row) throw notFound('connection');
      if (row.status === 'broken') return { kind: 'broken' as const };
      const tokens = await repo.findTokens(tx, workspaceId, connectionId);
      if (!tokens) throw notFound('connection');
      if (!needsRefresh(row)) {
        const accessToken = await deps.vault.decryptString(
          tokenCtx(workspaceId, row.id, 'access_token'),
          tokens.accessTokenCiphertext,
          tx,
        );
        return { kind: 'ok' as const, token: { accessToken, expiresAt: row.expiresAt, scopes: row.scopes } };
      }
      const provider = await repo.findProvider(tx, workspaceId, row.providerId);
      if (!provider) throw notFound('connection');
      const breakIt = async () => {
        await repo.markBroken(tx, workspaceId, row.id, clock.now());
        await deps.audit.record(tx, {
          workspaceId,
          actor: { type: 'system', name: 'oauth.refresh' },
          action: 'connection.broken',
          target: { type: 'connection', id: row.id },
          diff: { provider: provider.name },
        });
        afterCommit(tx, () => mailBroken(row, provider.name));
        return { kind: 'broke' as const };
      };
      if (!tokens.refreshTokenCiphertext) return breakIt();
      const refreshToken = await deps.vault.decryptString(
        tokenCtx(workspaceId, row.id, 'refresh_token'),
        tokens.refreshTokenCiphertext,
        tx,
      );
      let set: TokenSet;
      try {
        set = await deps.http.refresh(provider.tokenUrl, await clientOf(tx, provider), refreshToken);
      } catch (err) {
        if (err instanceof OAuthProtocolError && err.error === 'invalid_grant') return breakIt();
        throw providerError(err);
      }
      const now = clock.now();
      const expiresAt = expiryOf(set);
      await repo.saveRefreshed(tx, workspaceId, row.id, {
        accessTokenCiphertext: await deps.vault.encrypt(
          tokenCtx(workspaceId, row.id, 'access_token'),
          set.accessToken,
          tx,
        ),
        // A provider that rotates refresh tokens sends a new one; one that does not keeps the old valid.
        refreshTokenCiphertext: set.refreshToken
          ? await deps.vault.encrypt(tokenCtx(workspaceId, row.id, 'refresh_token'), set.refreshToken, tx)
          : tokens.refreshTokenCiphertext,
        expiresAt,
        scopes: set.scope ?? row.scopes,
        at: now,
      });
      return {
        kind: 'ok' as const,
        token: { accessToken: set.accessToken, expiresAt, scopes: set.scope ?? row.scopes },
      };
    });
    if (outcome.kind === 'ok') return outcome.token;
    throw brokenError();
  }

  function providerError(err: unknown): AppError {
    if (err instanceof AppError) return err;
    if (err instanceof OAuthProtocolError) {
      return new AppError('oauth_provider_error', `The OAuth provider refused the request (${err.error}).`);
    }
    if (err instanceof OAuthTransportError) {
      return new AppError('oauth_provider_error', `The OAuth provider could not be used (${err.reason}).`);
    }
    return new AppError('oauth_provider_error', 'The OAuth provider could not be used.');
  }

  return {
    /** Configures an OAuth provider for the workspace (audited; the client secret is stored encrypted, never returned). */
    async createProvider({
      scope,
      input,
    }: {
      scope: Scope;
      input: CreateOAuthProviderInput;
    }): Promise<OAuthProviderView> {
      const reserved = Object.keys(input.authorizeParams ?? {}).filter((k) => RESERVED_AUTHORIZE_PARAMS.has(k));
      if (reserved.length > 0) {
        throw new AppError('validation_failed', 'Berth sets these authorization parameters itself.', {
          details: reserved.map((k) => ({ path: `/authorizeParams/${k}`, message: 'reserved' })),
        });
      }
      const method = input.tokenAuthMethod ?? (input.clientSecret ? 'client_secret_basic' : 'none');
      if ((method === 'none') !== !input.clientSecret) {
        throw new AppError(
          'validation_failed',
          method === 'none'
            ? 'A public client (tokenAuthMethod none) has no client secret.'
            : `tokenAuthMethod ${method} needs a clientSecret.`,
          { details: [{ path: '/clientSecret', message: method === 'none' ? 'not allowed' : 'required' }] },
        );
      }
      const now = clock.now();
      const row: OAuthProviderRow = {
        id: newId('oap', now),
        workspaceId: scope.workspaceId,
        name: input.name,
        authorizationUrl: checkUrl(input.authorizationUrl, 'authorizationUrl'),
        tokenUrl: checkUrl(input.tokenUrl, 'tokenUrl'),
        revocationUrl: input.revocationUrl ? checkUrl(input.revocationUrl, 'revocationUrl') : null,
        clientId: input.clientId,
        clientSecretCiphertext: null,
        tokenAuthMethod: method,
        scopes: [...new Set(input.scopes ?? [])],
        authorizeParams: input.authorizeParams ?? {},
        createdBy: scope.actor.type === 'system' ? null : scope.actor.userId,
        createdAt: now,
      };
      return db.tenant(scope.workspaceId, async (tx) => {
        if (await repo.findProviderByName(tx, scope.workspaceId, row.name)) {
          throw new AppError('conflict', `An OAuth provider named ${row.name} exists in this workspace.`);
        }
        if (input.clientSecret) {
          row.clientSecretCiphertext = await deps.vault.encrypt(
            secretCtx(scope.workspaceId, row.id),
            input.clientSecret,
            tx,
          );
        }
        await repo.insertProvider(tx, row);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'oauth_provider.created',
          target: { type: 'oauth_provider', id: row.id },
          diff: {
            name: row.name,
            authorizationUrl: row.authorizationUrl,
            tokenUrl: row.tokenUrl,
            revocationUrl: row.revocationUrl,
            scopes: row.scopes,
            hasClientSecret: row.clientSecretCiphertext !== null,
          },
        });
        return providerView(row);
      });
    },

    async listProviders({ scope }: { scope: Scope }): Promise<OAuthProviderView[]> {
      return db.tenant(scope.workspaceId, async (tx) =>
        (await repo.listProviders(tx, scope.workspaceId)).map(providerView),
      );
    },

    /**
     * Removes a provider: every connection to it is revoked at the provider (best effort)
     * and deleted with its tokens in the same transaction, audited once.
     */
    async deleteProvider({ scope, providerId }: { scope: Scope; providerId: string }): Promise<void> {
      await db.tenant(scope.workspaceId, async (tx) => {
        const provider = await providerByRef(tx, scope.workspaceId, providerId);
        const connections = await repo.listByProvider(tx, scope.workspaceId, provider.id);
        for (const c of connections) {
          await revokeAtProvider(tx, provider, c.id);
          await repo.deleteConnection(tx, scope.workspaceId, c.id);
        }
        await repo.deleteProvider(tx, scope.workspaceId, provider.id);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'oauth_provider.deleted',
          target: { type: 'oauth_provider', id: provider.id },
          diff: { name: provider.name, connectionsDeleted: connections.length },
        });
      });
    },

    /**
     * Starts connecting the caller's account: returns the provider's authorization URL.
     * The state and PKCE verifier stay with Berth (the state only as a hash) for ten minutes.
     */
    async authorize({
      scope,
      provider,
      input,
    }: {
      scope: Scope;
      provider: string;
      input: AuthorizeInput;
    }): Promise<{ authorizationUrl: string; expiresAt: string }> {
      const userId = actorUser(scope.actor);
      const now = clock.now();
      const expiresAt = new Date(now.getTime() + ttl);
      return db.tenant(scope.workspaceId, async (tx) => {
        const row = await providerByRef(tx, scope.workspaceId, provider);
        const id = newId('oaz', now);
        const { state, hash } = newState();
        const { verifier, challenge } = pkcePair();
        await repo.insertAuthorization(tx, {
          id,
          workspaceId: scope.workspaceId,
          providerId: row.id,
          userId,
          stateHash: hash,
          codeVerifierCiphertext: await deps.vault.encrypt(verifierCtx(scope.workspaceId, id), verifier, tx),
          redirectTo: input.redirectTo ?? null,
          createdAt: now,
          expiresAt,
          usedAt: null,
        });
        return {
          authorizationUrl: authorizationUrl({
            authorizationUrl: row.authorizationUrl,
            clientId: row.clientId,
            redirectUri,
            scopes: row.scopes,
            state,
            challenge,
            extra: row.authorizeParams,
          }),
          expiresAt: expiresAt.toISOString(),
        };
      });
    },

    /**
     * The provider sent the user back: checks the state (known, unexpired, unused; used up
     * now whatever follows), exchanges the code with the PKCE verifier and stores the tokens.
     * On any error nothing is stored.
     */
    async callback(
      query: { code?: string; state?: string; error?: string },
      meta?: RequestMeta,
    ): Promise<CallbackResult> {
      if (!query.state) {
        return {
          ok: false,
          error: new AppError('oauth_state_invalid', 'The callback has no state.'),
          redirectTo: null,
        };
      }
      const stateHash = hashState(query.state);
      const now = clock.now();
      let pending: {
        workspaceId: string;
        userId: string;
        provider: OAuthProviderRow;
        client: OAuthClient;
        verifier: string;
        redirectTo: string | null;
      };
      try {
        pending = await db.system(async (tx) => {
          const az = await repo.lockAuthorization(tx, stateHash);
          if (!az) throw new AppError('oauth_state_invalid', 'This authorization is unknown; start connecting again.');
          if (az.usedAt) throw new AppError('oauth_state_used', 'This authorization was already used.');
          if (az.expiresAt.getTime() <= now.getTime()) {
            throw new AppError('oauth_state_expired', 'This authorization expired; start connecting again.');
          }
          await repo.markAuthorizationUsed(tx, az.id, now);
          const provider = await repo.findProvider(tx, az.workspaceId, az.providerId);
          if (!provider) throw new AppError('oauth_state_invalid', 'The OAuth provider was removed meanwhile.');
          return {
            workspaceId: az.workspaceId,
            userId: az.userId,
            provider,
            client: await clientOf(tx, provider),
            verifier: await deps.vault.decryptString(verifierCtx(az.workspaceId, az.id), az.codeVerifierCiphertext, tx),
            redirectTo: az.redirectTo,
          };
        });
      } catch (err) {
        if (err instanceof AppError) return { ok: false, error: err, redirectTo: null };
        throw err;
      }
      const fail = (error: AppError): CallbackResult => ({ ok: false, error, redirectTo: pending.redirectTo });
      if (query.error) {
        const code = /^[\x20-\x7e]{1,100}$/.test(query.error) ? query.error : 'error';
        return fail(
          new AppError(
            'oauth_denied',
            code === 'access_denied'
              ? 'Consent was declined at the provider; nothing was connected.'
              : `The provider refused the authorization (${code}); nothing was connected.`,
          ),
        );
      }
      if (!query.code) return fail(new AppError('bad_request', 'The callback carries no authorization code.'));
      let set: TokenSet;
      try {
        set = await deps.http.exchangeCode(pending.provider.tokenUrl, pending.client, {
          code: query.code,
          verifier: pending.verifier,
          redirectUri,
        });
      } catch (err) {
        return fail(providerError(err));
      }
      const { workspaceId, userId, provider } = pending;
      const at = clock.now();
      const id = newId('con', at);
      const row: OAuthConnectionRow = {
        id,
        workspaceId,
        providerId: provider.id,
        userId,
        shared: false,
        status: 'active',
        scopes: set.scope ?? provider.scopes,
        expiresAt: expiryOf(set),
        createdAt: at,
        updatedAt: at,
        refreshedAt: null,
        brokenAt: null,
      };
      try {
        await db.tenant(workspaceId, async (tx) => {
          if (!(await repo.findProvider(tx, workspaceId, provider.id))) {
            throw new AppError('oauth_state_invalid', 'The OAuth provider was removed meanwhile.');
          }
          await repo.insertConnection(tx, row, {
            connectionId: id,
            workspaceId,
            userId,
            accessTokenCiphertext: await deps.vault.encrypt(
              tokenCtx(workspaceId, id, 'access_token'),
              set.accessToken,
              tx,
            ),
            refreshTokenCiphertext: set.refreshToken
              ? await deps.vault.encrypt(tokenCtx(workspaceId, id, 'refresh_token'), set.refreshToken, tx)
              : null,
            updatedAt: at,
          });
          await deps.audit.record(tx, {
            workspaceId,
            actor: { type: 'user', userId, ...(meta ? { meta } : {}) },
            action: 'connection.created',
            target: { type: 'connection', id },
            diff: { provider: provider.name, scopes: row.scopes, hasRefreshToken: set.refreshToken !== null },
          });
        });
      } catch (err) {
        if (err instanceof AppError) return fail(err);
        throw err;
      }
      return { ok: true, connection: connectionView(row, provider.name, userId), redirectTo: pending.redirectTo };
    },

    /** The caller's connections and the workspace's shared ones; never tokens. */
    async listConnections({ scope }: { scope: Scope }): Promise<ConnectionView[]> {
      const userId = scope.actor.type === 'system' ? '' : scope.actor.userId;
      return db.tenant(scope.workspaceId, async (tx) =>
        (await repo.listUsable(tx, scope.workspaceId, userId)).map((r) => connectionView(r, r.providerName, userId)),
      );
    },

    /**
     * Shares the caller's own connection with the workspace (agent runs of every member may
     * then use it), or stops sharing any connection. Audited.
     */
    async setShared({
      scope,
      connectionId,
      shared,
    }: {
      scope: Scope;
      connectionId: string;
      shared: boolean;
    }): Promise<ConnectionView> {
      const userId = actorUser(scope.actor);
      return db.tenant(scope.workspaceId, async (tx) => {
        const row = isId(connectionId, 'con') ? await repo.lockConnection(tx, scope.workspaceId, connectionId) : null;
        // The route asks for connections:manage: such a member sees every connection of the workspace.
        if (!row) throw notFound('connection');
        if (shared && row.userId !== userId) {
          throw forbidden('Only its owner can share a connection: it acts as their account.');
        }
        const provider = await repo.findProvider(tx, scope.workspaceId, row.providerId);
        const at = clock.now();
        if (row.shared !== shared) {
          await repo.setShared(tx, scope.workspaceId, row.id, shared, at);
        }
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: shared ? 'connection.shared' : 'connection.unshared',
          target: { type: 'connection', id: row.id },
          diff: { owner: row.userId, provider: provider?.name ?? null },
        });
        return connectionView({ ...row, shared, updatedAt: at }, provider?.name ?? '', userId);
      });
    },

    /**
     * Disconnects: revokes the refresh token at the provider when it has a revocation
     * endpoint (a failure is logged and the disconnect goes on), then deletes the connection
     * and its token ciphertext in one audited transaction. Its owner may always disconnect;
     * anyone else needs `authorizeOthers` to pass (the connections:manage permission).
     */
    async disconnect({
      scope,
      connectionId,
      authorizeOthers,
    }: {
      scope: Scope;
      connectionId: string;
      authorizeOthers: () => Promise<void>;
    }): Promise<{ revoked: boolean }> {
      const userId = scope.actor.type === 'system' ? null : scope.actor.userId;
      const row = isId(connectionId, 'con')
        ? await db.tenant(scope.workspaceId, (tx) => repo.findConnection(tx, scope.workspaceId, connectionId))
        : null;
      if (!row) throw notFound('connection');
      if (row.userId !== userId) {
        try {
          await authorizeOthers();
        } catch (err) {
          // Someone else's personal connection does not exist for those who may not manage it.
          if (!row.shared) throw notFound('connection');
          throw err;
        }
      }
      return db.tenant(scope.workspaceId, async (tx) => {
        const locked = await repo.lockConnection(tx, scope.workspaceId, row.id);
        if (!locked) throw notFound('connection');
        const provider = await repo.findProvider(tx, scope.workspaceId, locked.providerId);
        const revoked = provider ? await revokeAtProvider(tx, provider, locked.id) : false;
        await repo.deleteConnection(tx, scope.workspaceId, locked.id);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'connection.deleted',
          target: { type: 'connection', id: locked.id },
          diff: { owner: locked.userId, provider: provider?.name ?? null, revoked },
        });
        return { revoked };
      });
    },

    /**
     * A valid access token for an agent run acting as `userId`: the user's own connection or
     * one shared with the workspace. Refreshed when within the margin of its expiry, under the
     * connection's row lock (one refresh however many workers ask at once). Throws
     * `connection_broken` once a refresh was refused for good, `not_found` for a connection
     * the user may not use.
     */
    async accessToken(connectionId: string, who: { workspaceId: string; userId: string }): Promise<AccessToken> {
      if (!isId(connectionId, 'con')) throw notFound('connection');
      const quick = await db.tenant(who.workspaceId, async (tx) => {
        const row = await repo.findConnection(tx, who.workspaceId, connectionId);
        if (!row || (row.userId !== who.userId && !row.shared)) throw notFound('connection');
        if (row.status === 'broken') throw brokenError();
        if (needsRefresh(row)) return null;
        const tokens = await repo.findTokens(tx, who.workspaceId, row.id);
        if (!tokens) throw notFound('connection');
        return {
          accessToken: await deps.vault.decryptString(
            tokenCtx(who.workspaceId, row.id, 'access_token'),
            tokens.accessTokenCiphertext,
            tx,
          ),
          expiresAt: row.expiresAt,
          scopes: row.scopes,
        };
      });
      return quick ?? refreshLocked(who.workspaceId, connectionId);
    },

    /** The redirect URI to register at providers. */
    redirectUri,

    async close(): Promise<void> {
      await deps.http.close();
    },
  };
}

export type ConnectionsService = ReturnType<typeof connectionsService>;
