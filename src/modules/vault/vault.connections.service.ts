import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../../platform/clock.ts';
import { afterCommit, type Database, type Db, isUniqueViolation } from '../../platform/db/db.ts';
import { AppError, forbidden, notFound } from '../../platform/errors.ts';
import type { Actor, RequestMeta, Scope } from '../../platform/http/context.ts';
import { assertEgress, type EgressGuard } from '../../platform/http/egress.ts';
import { isId, newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import type { AuditInput } from '../audit/index.ts';
import type { Mailer } from '../notifications/index.ts';
import type { WorkspaceEvent } from '../workspaces/index.ts';
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
  UpdateOAuthProviderInput,
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
  /** How long a refresh lease lasts: longer than the token endpoint's timeout (default 60 s). */
  refreshLeaseMs?: number;
  /** How often a caller waiting for another's refresh looks again (default 100 ms). */
  refreshPollMs?: number;
};

/** A started authorization: the provider's URL, and how the flow is bound to whoever started it. */
export type AuthorizeResult = {
  authorizationUrl: string;
  expiresAt: string;
  /** The connection's name once made. */
  name: string;
  /**
   * `browser`: the nonce cookie to set on the answer (a session started the flow; the same
   * browser must finish it). `user`: an API key started it; the starter must finish it signed in.
   */
  boundTo: 'browser' | 'user';
  cookie: { name: string; value: string; maxAgeSeconds: number } | null;
};

/** What the browser finishing a flow brings: its flow cookie and who is signed in there. */
export type CallbackBrowser = { nonce: string | null; sessionUserId: string | null };

/** A connection's token, decrypted and held in memory only until revoked at its provider after commit. */
type PendingRevocation = {
  connectionId: string;
  providerId: string;
  url: string;
  client: OAuthClient;
  token: string;
  hint: 'refresh_token' | 'access_token';
};

/** What a run gets: a valid access token, in memory only. */
export type AccessToken = { accessToken: string; expiresAt: Date | null; scopes: string[] };

/** What an agent tool sends: a connection's valid access token and the only hosts it may go to. */
export type RunToken = AccessToken & { connectionId: string; apiHosts: string[] };

/**
 * Of the connections named alike a member may use (`listNamed`'s order), the one a run acting
 * as `userId` uses: their own (an active one first), else the workspace's shared one. A
 * broken connection of their own is not passed over for a shared one: it would act as
 * someone else's account.
 */
function pickNamed(rows: OAuthConnectionRow[], userId: string): OAuthConnectionRow | null {
  return rows.find((r) => r.userId === userId) ?? rows.find((r) => r.shared) ?? null;
}

/** The callback's outcome: the connection made, or an error; `redirectTo` when the flow asked to return to a page. */
export type CallbackResult =
  | { ok: true; connection: ConnectionView; redirectTo: string | null }
  | { ok: false; error: AppError; redirectTo: string | null };

export const CALLBACK_PATH = '/api/oauth/callback';

/**
 * The cookie binding one flow to the browser that started it: one per flow (named after its
 * state's hash), so flows in several tabs do not overwrite each other's.
 */
export function flowCookieName(stateHash: string, https: boolean): string {
  return `${https ? '__Secure-' : ''}berth_oauth_${stateHash.slice(0, 16)}`;
}

function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

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
    apiHosts: row.apiHosts,
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
    name: row.name,
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
 * server-side, single use, bound to the browser and user that started it), named
 * connections, tokens as vault ciphertext bound to their connection, refresh under a
 * per-connection lease (no transaction open while the provider answers), and revocation at
 * the provider after commit whenever a connection is deleted.
 *
 * @example
 * const { accessToken } = await connections.accessToken(connectionId, { workspaceId, userId });
 */
export function connectionsService(deps: ConnectionsDeps) {
  const { db, repo, clock } = deps;
  const margin = deps.refreshMarginMs ?? 60_000;
  const ttl = deps.authorizationTtlMs ?? 10 * 60_000;
  const leaseMs = deps.refreshLeaseMs ?? 60_000;
  const pollMs = deps.refreshPollMs ?? 100;
  const https = deps.publicUrl.startsWith('https:');
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
    assertEgress(deps.egress, url);
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

  /** The provider's name, else the first of `name-2`, `name-3`... the user has no active connection by. */
  async function freeDefaultName(tx: Database, workspaceId: string, userId: string, base: string): Promise<string> {
    for (let i = 1; i < 1000; i++) {
      const candidate = i === 1 ? base : `${base.slice(0, 56)}-${i}`;
      if (!(await repo.nameTaken(tx, workspaceId, candidate, { userId }))) return candidate;
    }
    throw new AppError('conflict', 'Too many connections to this provider: name the new one.');
  }

  function expiryOf(set: TokenSet): Date | null {
    return set.expiresIn === null ? null : new Date(clock.now().getTime() + set.expiresIn * 1000);
  }

  function needsRefresh(row: OAuthConnectionRow): boolean {
    return row.expiresAt !== null && row.expiresAt.getTime() - margin <= clock.now().getTime();
  }

  /**
   * Decrypts what revoking a connection at its provider needs (its refresh token, else its
   * access token), inside the transaction that deletes it; the provider is called only
   * after commit, from memory (`revokeAll`). Null: nothing to revoke there.
   */
  async function takeForRevocation(
    tx: Database,
    provider: OAuthProviderRow,
    connectionId: string,
  ): Promise<PendingRevocation | null> {
    if (!provider.revocationUrl) return null;
    try {
      const tokens = await repo.findTokens(tx, provider.workspaceId, connectionId);
      if (!tokens) return null;
      const hint = tokens.refreshTokenCiphertext ? ('refresh_token' as const) : ('access_token' as const);
      const token = await deps.vault.decryptString(
        tokenCtx(provider.workspaceId, connectionId, hint),
        tokens.refreshTokenCiphertext ?? tokens.accessTokenCiphertext,
        tx,
      );
      return {
        connectionId,
        providerId: provider.id,
        url: provider.revocationUrl,
        client: await clientOf(tx, provider),
        token,
        hint,
      };
    } catch (err) {
      deps.logger.warn(
        { connection: connectionId, provider: provider.id, reason: (err as Error).name },
        'oauth: the tokens to revoke could not be read; the connection is deleted anyway',
      );
      return null;
    }
  }

  /** Revokes at the provider from memory; failures are logged (never a token), never thrown. */
  async function revokeNow(p: PendingRevocation): Promise<boolean> {
    try {
      await deps.http.revoke(p.url, p.client, p.token, p.hint);
      return true;
    } catch (err) {
      const reason =
        err instanceof OAuthProtocolError
          ? err.error
          : err instanceof OAuthTransportError
            ? err.reason
            : (err as Error).name;
      deps.logger.warn(
        { connection: p.connectionId, provider: p.providerId, reason },
        'oauth: revocation at the provider failed; the connection is deleted anyway',
      );
      return false;
    }
  }

  async function revokeAll(list: PendingRevocation[]): Promise<void> {
    for (const p of list) await revokeNow(p);
  }

  /**
   * Deletes connections (tokens first) in `tx`, taking what revoking them needs; the caller
   * revokes after commit. Audited per connection when `actor` is given.
   */
  async function removeConnections(
    tx: Database,
    rows: OAuthConnectionRow[],
    audit: { actor: Actor; reason: string } | null,
  ): Promise<PendingRevocation[]> {
    const providers = new Map<string, OAuthProviderRow | null>();
    const pending: PendingRevocation[] = [];
    for (const row of rows) {
      const key = `${row.workspaceId}/${row.providerId}`;
      if (!providers.has(key)) providers.set(key, await repo.findProvider(tx, row.workspaceId, row.providerId));
      const provider = providers.get(key) ?? null;
      const p = provider ? await takeForRevocation(tx, provider, row.id) : null;
      if (p) pending.push(p);
      await repo.deleteConnection(tx, row.workspaceId, row.id);
      if (audit) {
        await deps.audit.record(tx, {
          workspaceId: row.workspaceId,
          actor: audit.actor,
          action: 'connection.deleted',
          target: { type: 'connection', id: row.id },
          diff: {
            owner: row.userId,
            provider: provider?.name ?? null,
            revokeAtProvider: p !== null,
            reason: audit.reason,
          },
        });
      }
    }
    return pending;
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

  function connectionRequired(name: string): AppError {
    return new AppError(
      'connection_required',
      `This agent acts through the connection ${name}: connect your account (or ask an admin to share one named ${name}) first.`,
      { details: [{ path: '/connections', message: `no usable connection named ${name}` }] },
    );
  }

  function brokenError(): AppError {
    return new AppError(
      'connection_broken',
      'This connection stopped working (its provider refused to renew access); its owner must connect again.',
    );
  }

  /** Marks the connection broken (its refresh was refused for good), audited; its owner is mailed after commit. */
  async function breakConnection(tx: Database, row: OAuthConnectionRow, providerName: string): Promise<void> {
    if (!(await repo.markBroken(tx, row.workspaceId, row.id, clock.now()))) return;
    await deps.audit.record(tx, {
      workspaceId: row.workspaceId,
      actor: { type: 'system', name: 'oauth.refresh' },
      action: 'connection.broken',
      target: { type: 'connection', id: row.id },
      diff: { provider: providerName },
    });
    afterCommit(tx, () => mailBroken(row, providerName));
  }

  async function currentToken(tx: Database, row: OAuthConnectionRow): Promise<AccessToken> {
    const tokens = await repo.findTokens(tx, row.workspaceId, row.id);
    if (!tokens) throw notFound('connection');
    const accessToken = await deps.vault.decryptString(
      tokenCtx(row.workspaceId, row.id, 'access_token'),
      tokens.accessTokenCiphertext,
      tx,
    );
    return { accessToken, expiresAt: row.expiresAt, scopes: row.scopes };
  }

  /**
   * Refreshes under a lease, with no transaction open while the provider is called: a short
   * transaction claims the lease (row lock held for that instant only), the token endpoint is
   * called, another short transaction stores the result and ends the lease. Callers finding
   * the lease held wait and look again (they then see the new token); a lease whose holder
   * vanished is taken over once it expires. One refresh per connection however many workers ask.
   */
  async function refreshWithLease(workspaceId: string, connectionId: string): Promise<AccessToken> {
    const leaseId = randomBytes(16).toString('base64url');
    // However the clock moves, a waiter gives up after about two leases of real time.
    const maxPolls = Math.ceil((2 * leaseMs) / pollMs);
    for (let poll = 0; ; poll++) {
      const step = await db.tenant(workspaceId, async (tx) => {
        const row = await repo.lockConnection(tx, workspaceId, connectionId);
        if (!row) throw notFound('connection');
        if (row.status === 'broken') return { kind: 'broken' as const };
        if (!needsRefresh(row)) return { kind: 'ok' as const, token: await currentToken(tx, row) };
        const now = clock.now();
        if (row.refreshLeaseId && row.refreshLeaseUntil && row.refreshLeaseUntil.getTime() > now.getTime()) {
          return { kind: 'wait' as const };
        }
        const tokens = await repo.findTokens(tx, workspaceId, connectionId);
        const provider = await repo.findProvider(tx, workspaceId, row.providerId);
        if (!tokens || !provider) throw notFound('connection');
        if (!tokens.refreshTokenCiphertext) {
          await breakConnection(tx, row, provider.name);
          return { kind: 'broken' as const };
        }
        await repo.claimLease(tx, workspaceId, row.id, leaseId, new Date(now.getTime() + leaseMs));
        return {
          kind: 'claimed' as const,
          row,
          provider,
          client: await clientOf(tx, provider),
          refreshToken: await deps.vault.decryptString(
            tokenCtx(workspaceId, row.id, 'refresh_token'),
            tokens.refreshTokenCiphertext,
            tx,
          ),
          refreshTokenCiphertext: tokens.refreshTokenCiphertext,
        };
      });
      if (step.kind === 'ok') return step.token;
      if (step.kind === 'broken') throw brokenError();
      if (step.kind === 'wait') {
        if (poll >= maxPolls) {
          throw new AppError('oauth_provider_error', 'The connection is still being renewed; try again shortly.');
        }
        await sleep(pollMs);
        continue;
      }
      return finishRefresh(workspaceId, leaseId, step);
    }
  }

  /** Calls the token endpoint (no transaction open), then stores the outcome if the lease is still ours. */
  async function finishRefresh(
    workspaceId: string,
    leaseId: string,
    claim: {
      row: OAuthConnectionRow;
      provider: OAuthProviderRow;
      client: OAuthClient;
      refreshToken: string;
      refreshTokenCiphertext: Buffer;
    },
  ): Promise<AccessToken> {
    const { row, provider } = claim;
    let set: TokenSet;
    try {
      set = await deps.http.refresh(provider.tokenUrl, claim.client, claim.refreshToken);
    } catch (err) {
      const refused = err instanceof OAuthProtocolError && err.error === 'invalid_grant';
      await db.tenant(workspaceId, async (tx) => {
        const current = await repo.lockConnection(tx, workspaceId, row.id);
        if (current?.refreshLeaseId !== leaseId) return;
        if (refused) await breakConnection(tx, current, provider.name);
        else await repo.releaseLease(tx, workspaceId, row.id, leaseId);
      });
      throw refused ? brokenError() : providerError(err);
    }
    const expiresAt = expiryOf(set);
    const scopes = set.scope ?? row.scopes;
    const stored = await db.tenant(workspaceId, async (tx) => {
      const current = await repo.lockConnection(tx, workspaceId, row.id);
      if (!current) return false;
      // Our lease expired and another caller took it over: its result is the one kept.
      if (current.refreshLeaseId !== leaseId) return true;
      await repo.saveRefreshed(tx, workspaceId, row.id, {
        accessTokenCiphertext: await deps.vault.encrypt(
          tokenCtx(workspaceId, row.id, 'access_token'),
          set.accessToken,
          tx,
        ),
        // A provider that rotates refresh tokens sends a new one; one that does not keeps the old valid.
        refreshTokenCiphertext: set.refreshToken
          ? await deps.vault.encrypt(tokenCtx(workspaceId, row.id, 'refresh_token'), set.refreshToken, tx)
          : claim.refreshTokenCiphertext,
        expiresAt,
        scopes,
        at: clock.now(),
      });
      return true;
    });
    if (!stored) {
      // Disconnected while the provider answered: the tokens just issued are revoked too.
      if (provider.revocationUrl) {
        await revokeNow({
          connectionId: row.id,
          providerId: provider.id,
          url: provider.revocationUrl,
          client: claim.client,
          token: set.refreshToken ?? set.accessToken,
          hint: set.refreshToken ? 'refresh_token' : 'access_token',
        });
      }
      throw notFound('connection');
    }
    return { accessToken: set.accessToken, expiresAt, scopes };
  }

  /**
   * A valid access token for an agent run acting as `userId`: the user's own connection or
   * one shared with the workspace. Refreshed when within the margin of its expiry, under the
   * connection's refresh lease (one refresh however many workers ask at once). Throws
   * `connection_broken` once a refresh was refused for good, `not_found` for a connection
   * the user may not use.
   */
  async function accessToken(connectionId: string, who: { workspaceId: string; userId: string }): Promise<AccessToken> {
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
    return quick ?? refreshWithLease(who.workspaceId, connectionId);
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
        apiHosts: [...new Set(input.apiHosts ?? [])],
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
            apiHosts: row.apiHosts,
            hasClientSecret: row.clientSecretCiphertext !== null,
          },
        });
        return providerView(row);
      });
    },

    /**
     * Declares where the provider's API answers: the only hosts agent tools send its access
     * tokens to (audited). Connections keep working; tools reaching a host no longer listed
     * fail from their next call.
     */
    async updateProvider({
      scope,
      providerId,
      input,
    }: {
      scope: Scope;
      providerId: string;
      input: UpdateOAuthProviderInput;
    }): Promise<OAuthProviderView> {
      return db.tenant(scope.workspaceId, async (tx) => {
        const row = await providerByRef(tx, scope.workspaceId, providerId);
        const apiHosts = [...new Set(input.apiHosts)];
        await repo.setProviderApiHosts(tx, scope.workspaceId, row.id, apiHosts);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'oauth_provider.updated',
          target: { type: 'oauth_provider', id: row.id },
          diff: { name: row.name, apiHosts: { from: row.apiHosts, to: apiHosts } },
        });
        return providerView({ ...row, apiHosts });
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
        const pending = await removeConnections(tx, connections, null);
        afterCommit(tx, () => revokeAll(pending));
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
     * A flow started by a signed-in session is bound to its browser: the answer carries a
     * nonce cookie (only its hash is kept) the callback must bring back. One started with an
     * API key has no browser to bind: the starter must finish it signed in to Berth.
     */
    async authorize({
      scope,
      provider,
      input,
    }: {
      scope: Scope;
      provider: string;
      input: AuthorizeInput;
    }): Promise<AuthorizeResult> {
      const userId = actorUser(scope.actor);
      const now = clock.now();
      const expiresAt = new Date(now.getTime() + ttl);
      const nonce = scope.actor.type === 'user' ? newState() : null;
      return db.tenant(scope.workspaceId, async (tx) => {
        const row = await providerByRef(tx, scope.workspaceId, provider);
        const name = input.name ?? (await freeDefaultName(tx, scope.workspaceId, userId, row.name));
        if (input.name && (await repo.nameTaken(tx, scope.workspaceId, name, { userId }))) {
          throw new AppError(
            'conflict',
            `You already have a connection named ${name} here: pick another name, or disconnect it first.`,
          );
        }
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
          // Null: the default, chosen again when the connection is stored.
          connectionName: input.name ?? null,
          browserNonceHash: nonce?.hash ?? null,
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
          name,
          boundTo: nonce ? 'browser' : 'user',
          cookie: nonce
            ? { name: flowCookieName(hash, https), value: nonce.state, maxAgeSeconds: Math.ceil(ttl / 1000) }
            : null,
        };
      });
    },

    /** The name of the cookie the callback with this state looks for. */
    flowCookieFor(state: string): string {
      return flowCookieName(hashState(state), https);
    },

    /**
     * The provider sent the user back: checks the state (known, unexpired, unused; used up
     * now whatever follows), exchanges the code with the PKCE verifier and stores the tokens.
     * On any error nothing is stored.
     */
    async callback(
      query: { code?: string; state?: string; error?: string },
      browser: CallbackBrowser,
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
        name: string | null;
      };
      try {
        pending = await db.system(async (tx) => {
          const az = await repo.lockAuthorization(tx, stateHash);
          if (!az) throw new AppError('oauth_state_invalid', 'This authorization is unknown; start connecting again.');
          if (az.usedAt) throw new AppError('oauth_state_used', 'This authorization was already used.');
          if (az.expiresAt.getTime() <= now.getTime()) {
            throw new AppError('oauth_state_expired', 'This authorization expired; start connecting again.');
          }
          // Only whoever started the flow may finish it: the same browser (its nonce cookie),
          // and, when someone is signed in here, the same user. A flow started with an API key
          // has no browser binding: its starter must be signed in.
          if (az.browserNonceHash) {
            if (!browser.nonce || !sameHash(hashState(browser.nonce), az.browserNonceHash)) {
              throw new AppError(
                'oauth_browser_mismatch',
                'This authorization was started in another browser; finish it where you started it.',
              );
            }
          } else if (!browser.sessionUserId) {
            throw new AppError(
              'oauth_browser_mismatch',
              'This authorization was started with an API key: sign in to Berth as its starter, then open the link again.',
            );
          }
          if (browser.sessionUserId && browser.sessionUserId !== az.userId) {
            throw new AppError(
              'oauth_user_mismatch',
              'Someone else started this authorization: only they can finish it.',
            );
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
            name: az.connectionName,
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
        name: pending.name ?? provider.name,
        shared: false,
        status: 'active',
        scopes: set.scope ?? provider.scopes,
        expiresAt: expiryOf(set),
        createdAt: at,
        updatedAt: at,
        refreshedAt: null,
        brokenAt: null,
        refreshLeaseId: null,
        refreshLeaseUntil: null,
      };
      const nameTaken = () =>
        new AppError('conflict', `You already have a connection named ${row.name} here; nothing was connected.`);
      try {
        await db.tenant(workspaceId, async (tx) => {
          if (!(await repo.findProvider(tx, workspaceId, provider.id))) {
            throw new AppError('oauth_state_invalid', 'The OAuth provider was removed meanwhile.');
          }
          if (pending.name === null) row.name = await freeDefaultName(tx, workspaceId, userId, provider.name);
          else if (await repo.nameTaken(tx, workspaceId, row.name, { userId })) throw nameTaken();
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
        const error = err instanceof AppError ? err : isUniqueViolation(err) ? nameTaken() : null;
        if (!error) throw err;
        // Nothing was stored: the tokens just issued are given back to the provider.
        if (provider.revocationUrl) {
          await revokeNow({
            connectionId: id,
            providerId: provider.id,
            url: provider.revocationUrl,
            client: pending.client,
            token: set.refreshToken ?? set.accessToken,
            hint: set.refreshToken ? 'refresh_token' : 'access_token',
          });
        }
        return fail(error);
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
        if (
          shared &&
          !row.shared &&
          row.status === 'active' &&
          (await repo.nameTaken(tx, scope.workspaceId, row.name, { shared: true }, row.id))
        ) {
          throw new AppError(
            'conflict',
            `The workspace already shares a connection named ${row.name}: agent definitions could not tell them apart.`,
          );
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
     * Disconnects: deletes the connection and its token ciphertext in one audited
     * transaction, then (after commit, from memory) revokes the refresh token at the provider
     * when it has a revocation endpoint (a failure is logged; the connection is gone anyway). Its owner may always disconnect;
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
      const pending = await db.tenant(scope.workspaceId, async (tx) => {
        const locked = await repo.lockConnection(tx, scope.workspaceId, row.id);
        if (!locked) throw notFound('connection');
        const [p] = await removeConnections(tx, [locked], { actor: scope.actor, reason: 'disconnected' });
        return p ?? null;
      });
      return { revoked: pending ? await revokeNow(pending) : false };
    },

    /**
     * The connection an agent definition's `connections: ["name"]` means for a run acting as
     * `userId`: the user's own connection of that name (an active one first), else the
     * workspace's shared one. Null when there is none. Pass its id to `accessToken`.
     */
    async connectionFor(
      workspaceId: string,
      userId: string,
      name: string,
    ): Promise<{ connectionId: string; ownerId: string; shared: boolean; status: 'active' | 'broken' } | null> {
      const rows = await db.tenant(workspaceId, (tx) => repo.listNamed(tx, workspaceId, userId, name));
      const row = pickNamed(rows, userId);
      return row ? { connectionId: row.id, ownerId: row.userId, shared: row.shared, status: row.status } : null;
    },

    /**
     * The workspaces module's event handler, in the event's transaction: a member who leaves
     * or is removed loses every connection they made there (shared ones too) and their
     * authorizations in progress; a deleted workspace's connections go before its data key.
     * Tokens are decrypted and deleted in the transaction, and revoked at the providers
     * after it commits.
     */
    onWorkspaceEvent: async (e: WorkspaceEvent, tx: Database): Promise<void> => {
      if (e.type === 'member.removed') {
        await repo.deleteAuthorizationsOf(tx, e.workspaceId, e.userId);
        const rows = await repo.listByUser(tx, e.workspaceId, e.userId);
        const pending = await removeConnections(tx, rows, { actor: e.actor, reason: 'member_removed' });
        if (pending.length > 0) afterCommit(tx, () => revokeAll(pending));
      } else if (e.type === 'workspace.deleting') {
        const pending = await removeConnections(tx, await repo.listByWorkspace(tx, e.workspaceId), null);
        if (pending.length > 0) afterCommit(tx, () => revokeAll(pending));
      }
    },

    /**
     * Account erasure's hook, in its transaction (`db.system`): the user's connections in
     * every workspace are deleted with their tokens and revoked at the providers after commit.
     */
    forgetUser: async (tx: Database, userId: string): Promise<void> => {
      const rows = await repo.listByUserEverywhere(tx, userId);
      const pending = await removeConnections(tx, rows, null);
      if (pending.length > 0) afterCommit(tx, () => revokeAll(pending));
    },

    /** A valid access token of a connection for a run acting as `userId` (see `accessToken` above). */
    accessToken,

    /**
     * What an agent tool sends for `{{connection.NAME}}` in a run acting as `userId` (null: no
     * user, shared connections only): the access token of the connection `name` picks
     * (`connectionFor`), renewed when needed, with its provider's API hosts. Throws
     * `connection_required` when there is none, `connection_broken`, `oauth_provider_error`
     * (the renewal failed for now) or `not_found` (disconnected meanwhile).
     *
     * @example const { accessToken, apiHosts } = await connections.runToken(workspaceId, userId, 'github');
     */
    async runToken(workspaceId: string, userId: string | null, name: string): Promise<RunToken> {
      const who = { workspaceId, userId: userId ?? '' };
      const found = await db.tenant(workspaceId, async (tx) => {
        const row = pickNamed(await repo.listNamed(tx, workspaceId, who.userId, name), who.userId);
        if (!row) return null;
        const provider = await repo.findProvider(tx, workspaceId, row.providerId);
        return { id: row.id, apiHosts: provider?.apiHosts ?? [] };
      });
      if (!found) throw connectionRequired(name);
      const token = await accessToken(found.id, who);
      return { ...token, connectionId: found.id, apiHosts: found.apiHosts };
    },

    /** The redirect URI to register at providers. */
    redirectUri,

    async close(): Promise<void> {
      await deps.http.close();
    },
  };
}

export type ConnectionsService = ReturnType<typeof connectionsService>;
