-- Audit: one hash chain per workspace (chain = the workspace id) plus the platform chain
-- (chain = 'platform', workspace_id null) for operator actions. Events are append-only:
-- the application role may only INSERT and SELECT them, and a trigger refuses UPDATE,
-- DELETE and TRUNCATE for everyone, the owner included. The only way to remove events is
-- the narrow functions at the end (retention of a chain's oldest events, and dropping the
-- chain of a deleted workspace), which record the new anchor so verification still passes.

create table audit_events (
  id text primary key,
  chain text not null,
  workspace_id text,
  seq bigint not null check (seq >= 1),
  occurred_at timestamptz not null,
  actor_type text not null check (actor_type in ('user', 'api_key', 'system')),
  actor_id text not null,
  actor_user_id text,
  ip text,
  user_agent text,
  request_id text,
  action text not null check (char_length(action) between 1 and 100),
  target_type text not null,
  target_id text not null,
  outcome text not null check (outcome in ('success', 'failure')),
  diff jsonb,
  prev_hash text not null check (prev_hash ~ '^[0-9a-f]{64}$'),
  hash text not null check (hash ~ '^[0-9a-f]{64}$'),
  unique (chain, seq),
  check ((chain = 'platform' and workspace_id is null) or (chain <> 'platform' and workspace_id = chain))
);
create index audit_events_ws_time_idx on audit_events (workspace_id, occurred_at);
create index audit_events_chain_time_idx on audit_events (chain, occurred_at);
comment on table audit_events is 'berth:append-only';

-- The head of each chain: its last seq and hash, and its anchor (the first seq still kept
-- and the hash it chains from: 64 zeros, or the hash of the last event retention removed).
-- Appends lock the head row FOR UPDATE, which serialises concurrent appends per chain.
create table audit_chain_heads (
  chain text primary key,
  workspace_id text,
  seq bigint not null,
  hash text not null,
  anchor_seq bigint not null default 1,
  anchor_hash text not null default repeat('0', 64),
  check ((chain = 'platform' and workspace_id is null) or (chain <> 'platform' and workspace_id = chain))
);

-- Signed checkpoints: Ed25519 over `chain|seq|hash|created_at` with the operator's key.
create table audit_checkpoints (
  id text primary key,
  chain text not null,
  workspace_id text,
  seq bigint not null,
  hash text not null,
  created_at timestamptz not null,
  key_id text not null,
  signature text not null,
  check ((chain = 'platform' and workspace_id is null) or (chain <> 'platform' and workspace_id = chain))
);
create index audit_checkpoints_chain_idx on audit_checkpoints (chain, seq);
comment on table audit_checkpoints is 'berth:append-only';

-- Row-level security, written by hand because platform rows have no workspace. A workspace
-- transaction sees its own chain only; platform rows are visible to system work (bypass).
-- Any transaction may append to the platform chain (a workspace's deletion is recorded
-- there from inside the workspace's own transaction). Deleting needs the retention switch,
-- which only the functions below turn on.
alter table audit_events enable row level security;
alter table audit_events force row level security;
create policy audit_read on audit_events for select using (
  current_setting('berth.bypass_rls', true) = 'on'
  or workspace_id = current_setting('berth.workspace_id', true)
);
create policy audit_append on audit_events for insert with check (
  current_setting('berth.bypass_rls', true) = 'on'
  or workspace_id = current_setting('berth.workspace_id', true)
  or workspace_id is null
);
create policy audit_retention on audit_events for delete using (
  current_setting('berth.audit_retention', true) = 'on'
);

alter table audit_chain_heads enable row level security;
alter table audit_chain_heads force row level security;
create policy audit_heads on audit_chain_heads using (
  current_setting('berth.bypass_rls', true) = 'on'
  or workspace_id = current_setting('berth.workspace_id', true)
  or workspace_id is null
);

alter table audit_checkpoints enable row level security;
alter table audit_checkpoints force row level security;
create policy audit_read on audit_checkpoints for select using (
  current_setting('berth.bypass_rls', true) = 'on'
  or workspace_id = current_setting('berth.workspace_id', true)
);
create policy audit_append on audit_checkpoints for insert with check (
  current_setting('berth.bypass_rls', true) = 'on'
  or workspace_id = current_setting('berth.workspace_id', true)
);
create policy audit_retention on audit_checkpoints for delete using (
  current_setting('berth.audit_retention', true) = 'on'
);

-- Append-only, for every role including the owner: UPDATE is always refused; DELETE only
-- while the retention switch is on (set by the functions below for their own statements).
create or replace function berth_audit_refuse_change() returns trigger
language plpgsql as $$
begin
  if tg_op = 'DELETE' and current_setting('berth.audit_retention', true) = 'on' then
    return old;
  end if;
  raise exception 'audit log is append-only: % on % is not allowed', tg_op, tg_table_name
    using errcode = 'insufficient_privilege';
end $$;

create or replace function berth_audit_refuse_truncate() returns trigger
language plpgsql as $$
begin
  raise exception 'audit log is append-only: TRUNCATE on % is not allowed', tg_table_name
    using errcode = 'insufficient_privilege';
end $$;

create trigger audit_events_append_only before update or delete on audit_events
  for each row execute function berth_audit_refuse_change();
create trigger audit_events_no_truncate before truncate on audit_events
  for each statement execute function berth_audit_refuse_truncate();
create trigger audit_checkpoints_append_only before update or delete on audit_checkpoints
  for each row execute function berth_audit_refuse_change();
create trigger audit_checkpoints_no_truncate before truncate on audit_checkpoints
  for each statement execute function berth_audit_refuse_truncate();

-- The caller may prune only a chain its transaction may see: its own workspace's, or any
-- chain from system work (bypass on).
create or replace function berth_audit_check_chain(p_chain text) returns void
language plpgsql as $$
begin
  if not (coalesce(current_setting('berth.bypass_rls', true), '') = 'on'
          or p_chain = coalesce(current_setting('berth.workspace_id', true), '')) then
    raise exception 'audit chain % is outside this transaction''s scope', p_chain
      using errcode = 'insufficient_privilege';
  end if;
end $$;

-- Retention: removes the events of `p_chain` with seq < `p_seq` (a whole expired prefix)
-- and their checkpoints, and moves the chain's anchor to `p_seq`, chaining from the hash
-- of the last removed event. Returns the number of events removed. Runs as the owner
-- (SECURITY DEFINER): the application role has no DELETE privilege on the audit tables.
create or replace function berth_audit_drop_before(p_chain text, p_seq bigint) returns bigint
language plpgsql security definer set search_path = public as $$
declare
  h audit_chain_heads%rowtype;
  new_anchor text;
  removed bigint;
begin
  perform berth_audit_check_chain(p_chain);
  select * into h from audit_chain_heads where chain = p_chain for update;
  if not found or p_seq <= h.anchor_seq then
    return 0;
  end if;
  if p_seq > h.seq + 1 then
    raise exception 'cannot drop audit events past the head of chain % (seq %)', p_chain, h.seq;
  end if;
  select hash into new_anchor from audit_events where chain = p_chain and seq = p_seq - 1;
  if new_anchor is null then
    raise exception 'audit chain % has no event %: verify it first', p_chain, p_seq - 1;
  end if;
  perform set_config('berth.audit_retention', 'on', true);
  delete from audit_events where chain = p_chain and seq < p_seq;
  get diagnostics removed = row_count;
  delete from audit_checkpoints where chain = p_chain and seq < p_seq;
  perform set_config('berth.audit_retention', '', true);
  update audit_chain_heads set anchor_seq = p_seq, anchor_hash = new_anchor where chain = p_chain;
  return removed;
end $$;

-- Removes a whole chain (its events, checkpoints and head): used only when its workspace
-- is deleted, after the deletion was recorded in the platform chain.
create or replace function berth_audit_drop_chain(p_chain text) returns bigint
language plpgsql security definer set search_path = public as $$
declare
  removed bigint;
begin
  if p_chain = 'platform' then
    raise exception 'the platform audit chain cannot be dropped' using errcode = 'insufficient_privilege';
  end if;
  perform berth_audit_check_chain(p_chain);
  perform set_config('berth.audit_retention', 'on', true);
  delete from audit_events where chain = p_chain;
  get diagnostics removed = row_count;
  delete from audit_checkpoints where chain = p_chain;
  perform set_config('berth.audit_retention', '', true);
  delete from audit_chain_heads where chain = p_chain;
  return removed;
end $$;
