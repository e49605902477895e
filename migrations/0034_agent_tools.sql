-- Agent tools: workspace secrets that custom HTTP tools and MCP server headers reference by
-- name (`{{secret.NAME}}`), and the MCP servers a workspace connects. Secret values and MCP
-- headers are vault ciphertext under the workspace's data key, bound to their row; a secret
-- is only ever sent to the hosts listed with it.

create table agent_secrets (
  id text primary key,
  workspace_id text not null references workspaces(id) on delete cascade,
  name text not null check (name ~ '^[A-Za-z_][A-Za-z0-9_]{0,63}$'),
  value_ciphertext bytea not null,
  -- Host names (or *.domain) the value may be sent to; never empty.
  allowed_hosts text[] not null check (cardinality(allowed_hosts) between 1 and 100),
  created_by text references users(id) on delete set null,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  unique (workspace_id, name)
);
select berth_enable_tenant_rls('agent_secrets');

create table agent_mcp_servers (
  id text primary key,
  workspace_id text not null references workspaces(id) on delete cascade,
  name text not null check (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  transport text not null check (transport in ('http', 'stdio')),
  -- http: the streamable HTTP endpoint.
  url text check (url is null or char_length(url) between 8 and 2048),
  -- stdio (only when the operator enables it): the program and its arguments.
  command text check (command is null or char_length(command) between 1 and 1024),
  args text[] not null default '{}',
  -- Names of the extra headers (shown in lists); names and values together are in the ciphertext.
  header_names text[] not null default '{}',
  headers_ciphertext bytea,
  enabled boolean not null default true,
  created_by text references users(id) on delete set null,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  unique (workspace_id, name),
  check ((transport = 'http' and url is not null and command is null)
      or (transport = 'stdio' and command is not null and url is null))
);
select berth_enable_tenant_rls('agent_mcp_servers');
