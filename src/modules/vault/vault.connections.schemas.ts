import { z } from 'zod';

/** Request and response shapes of OAuth providers and connections. */

const Id = z.string().min(1).max(64);
const Url = z
  .string()
  .min(8)
  .max(2000)
  .regex(/^https?:\/\/[^\s]+$/, 'an http(s) URL');
const ParamValue = z
  .string()
  .max(1000)
  .regex(/^[^\r\n\0]*$/, 'no line breaks');

export const WorkspaceParams = z.strictObject({ workspaceId: Id });
export const OAuthProviderParams = z.strictObject({ workspaceId: Id, providerId: Id });
export const ConnectProviderParams = z.strictObject({
  workspaceId: Id,
  provider: z.string().min(1).max(64).describe("The OAuth provider's name (or id)"),
});
export const ConnectionParams = z.strictObject({ workspaceId: Id, connectionId: Id });

/** A host name or `*.domain` (its sub-domains), lower case: where a provider's API answers. */
const ApiHost = z
  .string()
  .min(1)
  .max(253)
  .regex(/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/, 'a lower-case host or *.domain');
const ApiHosts = z
  .array(ApiHost)
  .max(50)
  .describe(
    "The provider's API hosts (`api.example.com`, `*.example.com`): agent tools send its access tokens ({{connection.NAME}}) there and nowhere else",
  );

export const CreateOAuthProviderBody = z.strictObject({
  name: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'lower-case letters, digits, - and _, up to 63 characters')
    .describe('Unique in the workspace; agent definitions name connections by it'),
  authorizationUrl: Url.describe("The provider's authorization endpoint"),
  tokenUrl: Url.describe("The provider's token endpoint"),
  revocationUrl: Url.optional().describe("The provider's token revocation endpoint (RFC 7009), called on disconnect"),
  clientId: z
    .string()
    .min(1)
    .max(500)
    .regex(/^[\x20-\x7e]+$/, 'printable ASCII'),
  clientSecret: z
    .string()
    .min(1)
    .max(2000)
    .regex(/^[\x20-\x7e]+$/, 'printable ASCII')
    .optional()
    .describe('Stored encrypted, never returned; absent for a public client (PKCE only)'),
  tokenAuthMethod: z
    .enum(['client_secret_basic', 'client_secret_post', 'none'])
    .optional()
    .describe('How Berth authenticates at the token endpoint; default client_secret_basic with a secret, else none'),
  scopes: z
    .array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]{1,200}$/, 'an OAuth scope token'))
    .max(100)
    .optional()
    .describe('Scopes asked for when a member connects'),
  authorizeParams: z
    .record(z.string().regex(/^[A-Za-z0-9_.-]{1,100}$/), ParamValue)
    .refine((o) => Object.keys(o).length <= 20, 'at most 20 parameters')
    .optional()
    .describe('Extra query parameters of the authorization request, e.g. {"prompt": "consent"}'),
  apiHosts: ApiHosts.optional(),
});
export type CreateOAuthProviderInput = z.infer<typeof CreateOAuthProviderBody>;

export const UpdateOAuthProviderBody = z.strictObject({ apiHosts: ApiHosts });
export type UpdateOAuthProviderInput = z.infer<typeof UpdateOAuthProviderBody>;

export const OAuthProviderView = z.object({
  id: z.string(),
  name: z.string(),
  authorizationUrl: z.string(),
  tokenUrl: z.string(),
  revocationUrl: z.string().nullable(),
  clientId: z.string(),
  hasClientSecret: z.boolean(),
  tokenAuthMethod: z.enum(['client_secret_basic', 'client_secret_post', 'none']),
  scopes: z.array(z.string()),
  authorizeParams: z.record(z.string(), z.string()),
  apiHosts: z.array(z.string()),
  createdBy: z.string().nullable(),
  createdAt: z.string(),
});
export type OAuthProviderView = z.infer<typeof OAuthProviderView>;
export const OAuthProviderList = z.object({ data: z.array(OAuthProviderView) });

const ConnectionName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'lower-case letters, digits, - and _, up to 63 characters');

export const AuthorizeBody = z.strictObject({
  name: ConnectionName.optional().describe(
    'The connection\'s name, which agent definitions use (`connections: ["github"]`); default the provider\'s name. Unique among your active connections in the workspace',
  ),
  redirectTo: z
    .string()
    .max(500)
    .regex(/^\/(?![/\\])[^\s\\]*$/, "a path on Berth's own site, e.g. /settings/connections")
    .optional()
    .describe('Where the callback sends the browser afterwards (with ?connection= or ?error=); absent: JSON'),
});
export type AuthorizeInput = z.infer<typeof AuthorizeBody>;

export const AuthorizeAnswer = z.object({
  authorizationUrl: z.string().describe('Send the user here; the provider returns them to /api/oauth/callback'),
  expiresAt: z.string(),
  name: z.string().describe("The connection's name once made"),
  boundTo: z
    .enum(['browser', 'user'])
    .describe(
      'browser: finish in the browser that got this answer (it set a cookie); user: started with an API key, finish signed in to Berth as the key’s owner',
    ),
});

export const CallbackQuery = z.object({
  code: z.string().max(4096).optional(),
  state: z.string().max(512).optional(),
  error: z.string().max(200).optional(),
  error_description: z.string().max(2000).optional(),
  error_uri: z.string().max(2000).optional(),
  iss: z.string().max(2000).optional(),
  scope: z.string().max(4000).optional(),
});

export const ConnectionView = z.object({
  id: z.string(),
  provider: z.string(),
  providerId: z.string(),
  userId: z.string().describe('Who connected: the account the connection acts as'),
  name: z.string().describe('What agent definitions call it'),
  mine: z.boolean(),
  shared: z.boolean(),
  status: z.enum(['active', 'broken']),
  scopes: z.array(z.string()),
  expiresAt: z.string().nullable().describe('When the current access token expires (it is renewed before)'),
  createdAt: z.string(),
  refreshedAt: z.string().nullable(),
  brokenAt: z.string().nullable(),
});
export type ConnectionView = z.infer<typeof ConnectionView>;
export const ConnectionList = z.object({ data: z.array(ConnectionView) });

export const ShareBody = z.strictObject({
  shared: z.boolean().describe('true: every member’s agent runs may use it; false: only its owner’s'),
});

export const DisconnectAnswer = z.object({
  revoked: z.boolean().describe('Whether the provider confirmed revoking the tokens'),
});
