-- Workspaces: the tenant boundary. Memberships give users roles in a workspace;
-- invitations bring new members in by email (single use, expiring, stored as a hash).

-- The workspaces table is protected by its own id: a transaction bound to workspace A
-- (berth.workspace_id) sees and writes only A's row; work that spans workspaces (listing
-- a user's workspaces, accepting an invitation by token) switches the bypass on for its
-- own transaction. Same rule as berth_enable_tenant_rls, keyed on `id`.
create table workspaces (
  id text primary key,
  name text not null check (char_length(name) between 1 and 100),
  require_mfa boolean not null default false,
  created_by text references users(id) on delete set null,
  created_at timestamptz not null,
  updated_at timestamptz not null
);
alter table workspaces enable row level security;
alter table workspaces force row level security;
create policy tenant_isolation on workspaces using (
  current_setting('berth.bypass_rls', true) = 'on'
  or id = current_setting('berth.workspace_id', true)
);

create table memberships (
  workspace_id text not null references workspaces(id) on delete cascade,
  user_id text not null references users(id) on delete cascade,
  role text not null check (role in ('owner', 'admin', 'member', 'viewer')),
  created_at timestamptz not null,
  updated_at timestamptz not null,
  primary key (workspace_id, user_id)
);
create index memberships_user_idx on memberships (user_id);
select berth_enable_tenant_rls('memberships');

create table invitations (
  id text primary key,
  workspace_id text not null references workspaces(id) on delete cascade,
  email text not null check (char_length(email) between 3 and 254),
  role text not null check (role in ('admin', 'member', 'viewer')),
  token_hash text not null unique,
  invited_by text references users(id) on delete set null,
  expires_at timestamptz not null,
  accepted_at timestamptz,
  declined_at timestamptz,
  revoked_at timestamptz,
  created_at timestamptz not null
);
create index invitations_workspace_idx on invitations (workspace_id, created_at);
select berth_enable_tenant_rls('invitations');
