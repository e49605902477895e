-- Identity: accounts, sessions, email tokens, TOTP factors, recovery codes, login
-- challenges, login throttling and security events. These tables belong to users, not to
-- a workspace, so they carry no workspace_id and no tenant row-level security.

create table users (
  id text primary key,
  email text not null unique,
  display_name text,
  password_hash text not null,
  status text not null default 'active' check (status in ('active', 'disabled')),
  is_operator boolean not null default false,
  email_verified_at timestamptz,
  password_changed_at timestamptz not null,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  check (email = lower(email))
);

create table sessions (
  id text primary key,
  user_id text not null references users (id) on delete cascade,
  token_hash text not null unique,
  created_at timestamptz not null,
  last_seen_at timestamptz not null,
  idle_expires_at timestamptz not null,
  absolute_expires_at timestamptz not null,
  revoked_at timestamptz,
  revoke_reason text,
  ip text,
  user_agent text
);
create index sessions_user_idx on sessions (user_id);
create index sessions_expiry_idx on sessions (absolute_expires_at);

create table email_tokens (
  id text primary key,
  user_id text not null references users (id) on delete cascade,
  purpose text not null check (purpose in ('verify_email', 'reset_password')),
  token_hash text not null unique,
  created_at timestamptz not null,
  expires_at timestamptz not null,
  used_at timestamptz
);
create index email_tokens_user_idx on email_tokens (user_id, purpose);

create table mfa_totp (
  id text primary key,
  user_id text not null unique references users (id) on delete cascade,
  secret_ciphertext bytea not null,
  confirmed_at timestamptz,
  last_used_step bigint not null default 0,
  created_at timestamptz not null
);

create table mfa_recovery_codes (
  id text primary key,
  user_id text not null references users (id) on delete cascade,
  code_hash text not null,
  created_at timestamptz not null,
  used_at timestamptz,
  unique (user_id, code_hash)
);

create table login_challenges (
  id text primary key,
  user_id text not null references users (id) on delete cascade,
  token_hash text not null unique,
  created_at timestamptz not null,
  expires_at timestamptz not null,
  attempts integer not null default 0,
  used_at timestamptz
);
create index login_challenges_user_idx on login_challenges (user_id);

create table login_failures (
  id bigint generated always as identity primary key,
  kind text not null check (kind in ('account', 'ip')),
  key_hash text not null,
  created_at timestamptz not null
);
create index login_failures_key_idx on login_failures (kind, key_hash, created_at);

create table security_events (
  id text primary key,
  user_id text,
  type text not null,
  ip text,
  user_agent text,
  details jsonb not null default '{}'::jsonb,
  created_at timestamptz not null
);
create index security_events_user_idx on security_events (user_id, created_at);
