-- Platform providers: model providers the operator connects for every workspace (the
-- operator's keys), used after a workspace's own. Not a tenant table: no workspace owns a
-- row; requests read it in system transactions. Their credentials are vault ciphertext
-- under the platform's own data key (owner type 'platform').

alter table vault_data_keys drop constraint vault_data_keys_owner_type_check;
alter table vault_data_keys add constraint vault_data_keys_owner_type_check
  check (owner_type in ('user', 'workspace', 'platform'));

create table platform_providers (
  id text primary key,
  name text not null unique check (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  adapter text not null check (adapter in ('openai-compatible', 'anthropic')),
  base_url text not null check (char_length(base_url) between 8 and 2000),
  credentials_ciphertext bytea,
  models text[] not null default '{}',
  timeout_ms integer not null check (timeout_ms between 1000 and 600000),
  created_by text references users(id) on delete set null,
  created_at timestamptz not null,
  updated_at timestamptz not null
);
