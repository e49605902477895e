-- OAuth connections: a workspace's OAuth 2.0 providers (client credentials through the
-- vault), authorizations in progress (hashed state, PKCE verifier as vault ciphertext, ten
-- minutes, single use), the connections users made and their tokens. Tokens are vault
-- ciphertext under the workspace's data key, bound to the connection; disconnecting deletes
-- them with the connection in one transaction.

create table oauth_providers (
  id text primary key,
  workspace_id text not null references workspaces(id) on delete cascade,
  name text not null check (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  authorization_url text not null check (char_length(authorization_url) between 8 and 2000),
  token_url text not null check (char_length(token_url) between 8 and 2000),
  revocation_url text check (char_length(revocation_url) between 8 and 2000),
  client_id text not null check (char_length(client_id) between 1 and 500),
  -- The client secret as vault ciphertext (null: a public client, PKCE only).
  client_secret_ciphertext bytea,
  token_auth_method text not null
    check (token_auth_method in ('client_secret_basic', 'client_secret_post', 'none')),
  scopes text[] not null default '{}',
  -- Extra query parameters of the authorization request ({"prompt": "consent"}).
  authorize_params jsonb not null default '{}' check (jsonb_typeof(authorize_params) = 'object'),
  created_by text references users(id) on delete set null,
  created_at timestamptz not null,
  unique (workspace_id, name)
);
select berth_enable_tenant_rls('oauth_providers');

create table oauth_authorizations (
  id text primary key,
  workspace_id text not null references workspaces(id) on delete cascade,
  provider_id text not null references oauth_providers(id) on delete cascade,
  user_id text not null references users(id) on delete cascade,
  -- SHA-256 of the state sent to the provider; the state itself is never stored.
  state_hash text not null unique check (state_hash ~ '^[0-9a-f]{64}$'),
  code_verifier_ciphertext bytea not null,
  redirect_to text check (char_length(redirect_to) between 1 and 500),
  created_at timestamptz not null,
  expires_at timestamptz not null,
  used_at timestamptz
);
select berth_enable_tenant_rls('oauth_authorizations');
create index oauth_authorizations_expiry_idx on oauth_authorizations (expires_at);

create table oauth_connections (
  id text primary key,
  workspace_id text not null references workspaces(id) on delete cascade,
  provider_id text not null references oauth_providers(id) on delete cascade,
  user_id text not null references users(id) on delete cascade,
  shared boolean not null default false,
  status text not null check (status in ('active', 'broken')),
  scopes text[] not null default '{}',
  -- When the access token expires (null: the provider did not say).
  expires_at timestamptz,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  refreshed_at timestamptz,
  broken_at timestamptz,
  check ((status = 'broken') = (broken_at is not null))
);
select berth_enable_tenant_rls('oauth_connections');
create index oauth_connections_user_idx on oauth_connections (workspace_id, user_id);

create table oauth_connection_tokens (
  connection_id text primary key references oauth_connections(id) on delete cascade,
  workspace_id text not null references workspaces(id) on delete cascade,
  user_id text not null references users(id) on delete cascade,
  access_token_ciphertext bytea not null,
  refresh_token_ciphertext bytea,
  updated_at timestamptz not null
);
select berth_enable_tenant_rls('oauth_connection_tokens');
