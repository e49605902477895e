-- Agents: a workspace's agent definitions. An agent has one editable draft (the whole
-- definition, `berth.agent/v1`) and the versions published from it, numbered 1, 2, 3...
-- per agent. A version never changes once written (a trigger refuses it; runs pin the
-- version they ran). Definitions are customer content: they go with the workspace.
--
-- Definitions are `json`, not `jsonb`: `json` keeps the text as it was sent, so the order
-- of keys in a tool's JSON Schema (the order a model reads the arguments in) survives and
-- an exported definition is exactly what was imported. Nothing queries inside them.

create table agents (
  id text primary key,
  workspace_id text not null references workspaces(id) on delete cascade,
  name text not null check (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' and name !~ '^agt_'),
  draft json not null,
  -- The number of the latest published version (0: none yet).
  latest_version integer not null default 0 check (latest_version >= 0),
  created_at timestamptz not null,
  updated_at timestamptz not null,
  archived_at timestamptz
);
-- A name names one live agent of the workspace (case-insensitively); an archived agent's
-- name is free again.
create unique index agents_live_name_idx on agents (workspace_id, lower(name)) where archived_at is null;
create index agents_workspace_idx on agents (workspace_id, id);
select berth_enable_tenant_rls('agents');

create table agent_versions (
  id text primary key,
  agent_id text not null references agents(id) on delete cascade,
  workspace_id text not null references workspaces(id) on delete cascade,
  version integer not null check (version >= 1),
  definition json not null,
  -- The member who published it (or whose API key did); null for system actors.
  created_by text,
  created_at timestamptz not null,
  unique (agent_id, version)
);
create index agent_versions_workspace_idx on agent_versions (workspace_id, agent_id, version);
-- Erasure finds the versions a person published.
create index agent_versions_created_by_idx on agent_versions (created_by) where created_by is not null;
select berth_enable_tenant_rls('agent_versions');

-- Published versions are immutable: only `created_by` may change (erasure replaces a
-- person's id by their pseudonym). Deleting (with the agent or the workspace) stays possible.
create or replace function berth_agent_versions_immutable() returns trigger
language plpgsql as $$
begin
  if new.id is distinct from old.id
     or new.agent_id is distinct from old.agent_id
     or new.workspace_id is distinct from old.workspace_id
     or new.version is distinct from old.version
     or new.definition::text is distinct from old.definition::text
     or new.created_at is distinct from old.created_at then
    raise exception 'agent versions are immutable' using errcode = '55000';
  end if;
  return new;
end $$;
create trigger agent_versions_immutable before update on agent_versions
  for each row execute function berth_agent_versions_immutable();
