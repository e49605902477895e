-- API keys. A key (its settings and history) lives in api_keys; its secrets live in
-- api_key_secrets, stored only as the SHA-256 of the whole key. Rolling a key adds a
-- secret and gives the old one a grace expiry, so the key's id and settings stay the same.

create table api_keys (
  id text primary key,
  workspace_id text not null references workspaces(id) on delete cascade,
  name text not null check (char_length(name) between 1 and 100),
  scopes text[] not null check (cardinality(scopes) >= 1),
  allowed_models text[],
  rate_limit_rpm integer check (rate_limit_rpm > 0),
  rate_limit_tpm integer check (rate_limit_tpm > 0),
  spend_limit_micros bigint check (spend_limit_micros >= 0),
  spend_limit_period text check (spend_limit_period in ('day', 'month')),
  ip_allowlist text[],
  expires_at timestamptz,
  -- A key is its creator's credential: it goes when their account goes.
  created_by text not null references users(id) on delete cascade,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  last_used_at timestamptz,
  revoked_at timestamptz,
  revoked_by text references users(id) on delete set null,
  check ((spend_limit_micros is null) = (spend_limit_period is null))
);
create index api_keys_workspace_idx on api_keys (workspace_id, created_at);
create index api_keys_creator_idx on api_keys (workspace_id, created_by);
select berth_enable_tenant_rls('api_keys');

create table api_key_secrets (
  id text primary key,
  key_id text not null references api_keys(id) on delete cascade,
  workspace_id text not null references workspaces(id) on delete cascade,
  hash text not null unique check (hash ~ '^[0-9a-f]{64}$'),
  display_prefix text not null check (char_length(display_prefix) between 1 and 32),
  last4 text not null check (char_length(last4) = 4),
  created_at timestamptz not null,
  expires_at timestamptz,
  revoked_at timestamptz
);
create index api_key_secrets_key_idx on api_key_secrets (workspace_id, key_id);
select berth_enable_tenant_rls('api_key_secrets');
