-- Audit hardening. The removal paths no longer trust session settings (any session can set
-- them): every removal needs a record of itself at the head of the platform chain, naming
-- what it removes, and retention removes only events older than a retention of at least 30
-- days by the database's own clock. Chain heads only advance one appended event at a time;
-- their anchors move only inside the removal functions. Deletions of audit rows are allowed
-- only to the tables' owner (the role the removal functions run as) with the switch on.

-- Append-only for every role: DELETE only by the owning role (inside the SECURITY DEFINER
-- removal functions) while its retention switch is on. Setting the switch is not enough.
create or replace function berth_audit_refuse_change() returns trigger
language plpgsql as $$
begin
  if tg_op = 'DELETE'
     and current_setting('berth.audit_retention', true) = 'on'
     and current_user = (select pg_get_userbyid(c.relowner) from pg_class c where c.oid = tg_relid) then
    return old;
  end if;
  raise exception 'audit log is append-only: % on % is not allowed', tg_op, tg_table_name
    using errcode = 'insufficient_privilege';
end $$;

-- True when event (chain, seq) exists with this hash; reads past row-level security (a
-- workspace transaction appends to the platform chain without seeing it). Reveals nothing
-- but whether a hash the caller already holds is the one stored.
create or replace function berth_audit_event_has_hash(p_chain text, p_seq bigint, p_hash text) returns boolean
language plpgsql stable security definer set search_path = public as $$
declare
  prior text := current_setting('berth.bypass_rls', true);
  found_it boolean;
begin
  perform set_config('berth.bypass_rls', 'on', true);
  select exists (select 1 from audit_events where chain = p_chain and seq = p_seq and hash = p_hash) into found_it;
  perform set_config('berth.bypass_rls', coalesce(prior, ''), true);
  return found_it;
end $$;

-- Chain heads: created at genesis, then advanced by exactly one event whose hash they take.
-- The anchor moves, and a head is removed, only inside the removal functions (owner with
-- the retention switch on).
create or replace function berth_audit_guard_head() returns trigger
language plpgsql as $$
begin
  if current_setting('berth.audit_retention', true) = 'on'
     and current_user = (select pg_get_userbyid(c.relowner) from pg_class c where c.oid = tg_relid) then
    if tg_op = 'DELETE' then
      return old;
    end if;
    return new;
  end if;
  if tg_op = 'INSERT' then
    if new.seq = 0 and new.hash = repeat('0', 64) and new.anchor_seq = 1 and new.anchor_hash = repeat('0', 64) then
      return new;
    end if;
  elsif tg_op = 'UPDATE' then
    if new.chain = old.chain and new.workspace_id is not distinct from old.workspace_id
       and new.anchor_seq = old.anchor_seq and new.anchor_hash = old.anchor_hash
       and new.seq = old.seq + 1 and berth_audit_event_has_hash(new.chain, new.seq, new.hash) then
      return new;
    end if;
  end if;
  raise exception 'audit chain heads only advance by one appended event: % on % is not allowed', tg_op, tg_table_name
    using errcode = 'insufficient_privilege';
end $$;

create trigger audit_chain_heads_guard before insert or update or delete on audit_chain_heads
  for each row execute function berth_audit_guard_head();
create trigger audit_chain_heads_no_truncate before truncate on audit_chain_heads
  for each statement execute function berth_audit_refuse_truncate();

-- The latest event of the platform chain (read past row-level security), which a removal
-- must be: the record of that very removal.
create or replace function berth_audit_platform_head_event() returns audit_events
language plpgsql stable as $$
declare
  e audit_events%rowtype;
begin
  select ev.* into e from audit_events ev
    join audit_chain_heads h on h.chain = 'platform' and ev.chain = 'platform' and ev.seq = h.seq;
  return e;
end $$;

drop function if exists berth_audit_drop_before(text, bigint);

-- Retention: removes the events of `p_chain` with seq < `p_seq` and their checkpoints
-- (except one at seq p_seq - 1, which signs the new anchor), and moves the anchor. Refused
-- unless: the retention is at least 30 days and every removed event is older than it (by
-- the database's clock); at least the head event stays; and the platform chain's latest
-- event is `audit.retention_applied` for this chain naming `beforeSeq` = p_seq and
-- `anchorHash` = the hash of event p_seq - 1 (record it first, in the same transaction).
create or replace function berth_audit_drop_before(p_chain text, p_seq bigint, p_retention interval) returns bigint
language plpgsql security definer set search_path = public as $$
declare
  h audit_chain_heads%rowtype;
  e audit_events%rowtype;
  prior text := current_setting('berth.bypass_rls', true);
  new_anchor text;
  newest timestamptz;
  removed bigint;
begin
  perform berth_audit_check_chain(p_chain);
  if p_retention is null or p_retention < interval '30 days' then
    raise exception 'audit retention must be at least 30 days' using errcode = 'insufficient_privilege';
  end if;
  perform set_config('berth.bypass_rls', 'on', true);
  select * into h from audit_chain_heads where chain = p_chain for update;
  if not found or p_seq <= h.anchor_seq then
    perform set_config('berth.bypass_rls', coalesce(prior, ''), true);
    return 0;
  end if;
  if p_seq > h.seq then
    raise exception 'retention keeps at least the head of audit chain % (seq %)', p_chain, h.seq
      using errcode = 'insufficient_privilege';
  end if;
  select hash into new_anchor from audit_events where chain = p_chain and seq = p_seq - 1;
  if new_anchor is null then
    raise exception 'audit chain % has no event %: verify it first', p_chain, p_seq - 1;
  end if;
  select max(occurred_at) into newest from audit_events where chain = p_chain and seq < p_seq;
  if newest >= now() - p_retention then
    raise exception 'audit events of chain % before seq % are not older than the retention', p_chain, p_seq
      using errcode = 'insufficient_privilege';
  end if;
  e := berth_audit_platform_head_event();
  if e.id is null or e.action <> 'audit.retention_applied' or e.target_id <> p_chain
     or (e.diff ->> 'beforeSeq') is distinct from p_seq::text
     or (e.diff ->> 'anchorHash') is distinct from new_anchor then
    raise exception 'record audit.retention_applied for chain % in the platform chain first', p_chain
      using errcode = 'insufficient_privilege';
  end if;
  perform set_config('berth.audit_retention', 'on', true);
  delete from audit_events where chain = p_chain and seq < p_seq;
  get diagnostics removed = row_count;
  delete from audit_checkpoints where chain = p_chain and seq < p_seq - 1;
  update audit_chain_heads set anchor_seq = p_seq, anchor_hash = new_anchor where chain = p_chain;
  perform set_config('berth.audit_retention', '', true);
  perform set_config('berth.bypass_rls', coalesce(prior, ''), true);
  return removed;
end $$;

-- Removes a deleted workspace's whole chain. Refused unless the platform chain's latest
-- event is `workspace.deleted` for it naming the chain's final head (chainSeq, chainHash),
-- and (checked at commit) the workspace itself is gone by then.
create or replace function berth_audit_drop_chain(p_chain text) returns bigint
language plpgsql security definer set search_path = public as $$
declare
  h audit_chain_heads%rowtype;
  e audit_events%rowtype;
  prior text := current_setting('berth.bypass_rls', true);
  removed bigint;
begin
  if p_chain = 'platform' then
    raise exception 'the platform audit chain cannot be dropped' using errcode = 'insufficient_privilege';
  end if;
  perform berth_audit_check_chain(p_chain);
  perform set_config('berth.bypass_rls', 'on', true);
  select * into h from audit_chain_heads where chain = p_chain for update;
  e := berth_audit_platform_head_event();
  if e.id is null or e.action <> 'workspace.deleted' or e.target_id <> p_chain
     or (e.diff ->> 'chainSeq') is distinct from coalesce(h.seq, 0)::text
     or (e.diff ->> 'chainHash') is distinct from coalesce(h.hash, repeat('0', 64)) then
    raise exception 'record workspace.deleted for chain % (with its head) in the platform chain first', p_chain
      using errcode = 'insufficient_privilege';
  end if;
  perform set_config('berth.audit_retention', 'on', true);
  delete from audit_events where chain = p_chain;
  get diagnostics removed = row_count;
  delete from audit_checkpoints where chain = p_chain;
  delete from audit_chain_heads where chain = p_chain;
  perform set_config('berth.audit_retention', '', true);
  perform set_config('berth.bypass_rls', coalesce(prior, ''), true);
  return removed;
end $$;

-- A chain's head may disappear only in a transaction that also deletes its workspace.
create or replace function berth_audit_head_dropped() returns trigger
language plpgsql security definer set search_path = public as $$
declare
  prior text := current_setting('berth.bypass_rls', true);
  still boolean;
begin
  perform set_config('berth.bypass_rls', 'on', true);
  select exists (select 1 from workspaces where id = old.chain) into still;
  perform set_config('berth.bypass_rls', coalesce(prior, ''), true);
  if still then
    raise exception 'the audit chain of workspace % was dropped but the workspace still exists', old.chain
      using errcode = 'insufficient_privilege';
  end if;
  return null;
end $$;

create constraint trigger audit_chain_heads_dropped after delete on audit_chain_heads
  deferrable initially deferred for each row execute function berth_audit_head_dropped();

-- Only the application role may call the removal paths (granted by `berth migrate` to
-- functions commented 'berth:app-callable'); no other role of the cluster may.
revoke execute on function berth_audit_drop_before(text, bigint, interval) from public;
revoke execute on function berth_audit_drop_chain(text) from public;
revoke execute on function berth_audit_head_dropped() from public;
comment on function berth_audit_drop_before(text, bigint, interval) is 'berth:app-callable';
comment on function berth_audit_drop_chain(text) is 'berth:app-callable';
