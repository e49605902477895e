import { isNotNull, lte, or, type SQL } from 'drizzle-orm';
import { boolean, jsonb, pgTable, text, unique } from 'drizzle-orm/pg-core';
import { bytea, ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

/** An OAuth 2.0 authorization server a workspace's members may connect to (migrations/0035_oauth_connections.sql). */
export const oauthProviders = pgTable(
  'oauth_providers',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id').notNull(),
    name: text('name').notNull(),
    authorizationUrl: text('authorization_url').notNull(),
    tokenUrl: text('token_url').notNull(),
    revocationUrl: text('revocation_url'),
    clientId: text('client_id').notNull(),
    clientSecretCiphertext: bytea('client_secret_ciphertext'),
    tokenAuthMethod: text('token_auth_method', {
      enum: ['client_secret_basic', 'client_secret_post', 'none'],
    }).notNull(),
    scopes: text('scopes').array().notNull(),
    authorizeParams: jsonb('authorize_params').$type<Record<string, string>>().notNull(),
    /** Where agent tools may send its access tokens (migrations/0041_oauth_provider_api_hosts.sql). */
    apiHosts: text('api_hosts').array().notNull(),
    createdBy: text('created_by'),
    createdAt: ts('created_at').notNull(),
  },
  (t) => [unique().on(t.workspaceId, t.name)],
);

/** An authorization in progress: the state (hashed) and PKCE verifier the callback needs, single use. */
export const oauthAuthorizations = pgTable('oauth_authorizations', {
  id: text('id').primaryKey(),
  workspaceId: text('workspace_id').notNull(),
  providerId: text('provider_id').notNull(),
  userId: text('user_id').notNull(),
  stateHash: text('state_hash').notNull().unique(),
  codeVerifierCiphertext: bytea('code_verifier_ciphertext').notNull(),
  redirectTo: text('redirect_to'),
  connectionName: text('connection_name'),
  browserNonceHash: text('browser_nonce_hash'),
  createdAt: ts('created_at').notNull(),
  expiresAt: ts('expires_at').notNull(),
  usedAt: ts('used_at'),
});

/** A user's connection to a provider: what agent runs act with on the user's behalf. */
export const oauthConnections = pgTable('oauth_connections', {
  id: text('id').primaryKey(),
  workspaceId: text('workspace_id').notNull(),
  providerId: text('provider_id').notNull(),
  userId: text('user_id').notNull(),
  name: text('name').notNull(),
  shared: boolean('shared').notNull(),
  status: text('status', { enum: ['active', 'broken'] }).notNull(),
  scopes: text('scopes').array().notNull(),
  expiresAt: ts('expires_at'),
  createdAt: ts('created_at').notNull(),
  updatedAt: ts('updated_at').notNull(),
  refreshedAt: ts('refreshed_at'),
  brokenAt: ts('broken_at'),
  refreshLeaseId: text('refresh_lease_id'),
  refreshLeaseUntil: ts('refresh_lease_until'),
});

/** A connection's tokens, vault ciphertext bound to the connection; deleted with it. */
export const oauthConnectionTokens = pgTable('oauth_connection_tokens', {
  connectionId: text('connection_id').primaryKey(),
  workspaceId: text('workspace_id').notNull(),
  userId: text('user_id').notNull(),
  accessTokenCiphertext: bytea('access_token_ciphertext').notNull(),
  refreshTokenCiphertext: bytea('refresh_token_ciphertext'),
  updatedAt: ts('updated_at').notNull(),
});

export type OAuthProviderRow = typeof oauthProviders.$inferSelect;
export type OAuthAuthorizationRow = typeof oauthAuthorizations.$inferSelect;
export type OAuthConnectionRow = typeof oauthConnections.$inferSelect;
export type OAuthTokensRow = typeof oauthConnectionTokens.$inferSelect;

/** The data map entries of the connection tables. */
export const connectionsTables = [
  mapTable(oauthProviders, {
    purpose: 'OAuth 2.0 providers a workspace configures so its members can connect third-party accounts',
    basis: 'contract',
    retention: 'workspace_lifetime',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      name: col('tenancy', false, { purpose: 'Name the workspace gave the provider' }),
      authorizationUrl: col('tenancy', false, { purpose: "Where users are sent to grant consent (the provider's)" }),
      tokenUrl: col('tenancy', false, { purpose: 'Where codes and refresh tokens are exchanged for access tokens' }),
      revocationUrl: col('tenancy', false, { purpose: 'Where tokens are revoked on disconnect (RFC 7009)' }),
      clientId: col('tenancy', false, { purpose: "The workspace's OAuth client at the provider" }),
      clientSecretCiphertext: col('credential', false, {
        secret: true,
        purpose: "The OAuth client's secret, vault ciphertext",
      }),
      tokenAuthMethod: col('tenancy', false, { purpose: 'How the client authenticates at the token endpoint' }),
      scopes: col('tenancy', false, { purpose: 'Scopes asked for when a member connects' }),
      authorizeParams: col('tenancy', false, { purpose: 'Extra parameters of the authorization request' }),
      apiHosts: col('tenancy', false, {
        purpose: "The provider's API hosts, the only ones agent tools send its tokens to",
      }),
      createdBy: col('identifier', true, { purpose: 'The member who configured the provider' }),
      createdAt: col('tenancy', false),
    },
  }),
  mapTable(oauthAuthorizations, {
    purpose: 'OAuth authorizations in progress: what checks the callback (state, PKCE), for ten minutes, used once',
    basis: 'contract',
    retention: 'until_expiry',
    expiredWhen: (asOf) => or(lte(oauthAuthorizations.expiresAt, asOf), isNotNull(oauthAuthorizations.usedAt)) as SQL,
    subject: 'user',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      providerId: col('identifier', false),
      userId: col('identifier', true, { purpose: 'The member connecting' }),
      stateHash: col('credential', false, { secret: true, purpose: 'SHA-256 of the state sent to the provider' }),
      codeVerifierCiphertext: col('credential', false, {
        secret: true,
        purpose: 'The PKCE code verifier, vault ciphertext',
      }),
      redirectTo: col('operational', false, { purpose: 'The dashboard page the callback returns the user to' }),
      connectionName: col('tenancy', false, { purpose: 'The name the connection will have' }),
      browserNonceHash: col('credential', false, {
        secret: true,
        purpose: 'SHA-256 of the nonce cookie binding the flow to the browser that started it',
      }),
      createdAt: col('security', false),
      expiresAt: col('security', false),
      usedAt: col('security', false),
    },
  }),
  mapTable(oauthConnections, {
    purpose: "Users' connections to third-party services, which agent runs use to act on their behalf",
    basis: 'contract',
    retention: 'account_lifetime',
    subject: 'user',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      providerId: col('identifier', false),
      userId: col('identifier', true, { purpose: 'The member who connected (whose account it is)' }),
      name: col('tenancy', false, { purpose: 'The name agent definitions use for the connection' }),
      shared: col('tenancy', false, { purpose: 'Whether an admin shared the connection with the workspace' }),
      status: col('operational', false, { purpose: 'Active, or broken when its refresh was refused' }),
      scopes: col('tenancy', false, { purpose: 'Scopes the provider granted' }),
      expiresAt: col('operational', false, { purpose: 'When the access token expires' }),
      createdAt: col('operational', false),
      updatedAt: col('operational', false),
      refreshedAt: col('operational', false),
      brokenAt: col('operational', false),
      refreshLeaseId: col('operational', false, { purpose: 'Which caller is renewing the tokens right now' }),
      refreshLeaseUntil: col('operational', false, { purpose: 'Until when that caller may renew them' }),
    },
  }),
  mapTable(oauthConnectionTokens, {
    purpose: "A connection's access and refresh tokens, encrypted; deleted on disconnect",
    basis: 'contract',
    retention: 'account_lifetime',
    subject: 'user',
    columns: {
      connectionId: col('identifier', false),
      workspaceId: col('identifier', false),
      userId: col('identifier', true, { purpose: 'The member whose tokens these are' }),
      accessTokenCiphertext: col('credential', false, { secret: true, purpose: 'The access token, vault ciphertext' }),
      refreshTokenCiphertext: col('credential', false, {
        secret: true,
        purpose: 'The refresh token, vault ciphertext',
      }),
      updatedAt: col('operational', false),
    },
  }),
];
