-- 1. Audit events written before 0026 name users by their raw id (actor, target, diff) and
-- keep the client IP and user agent inline. The hash chain covers those fields, so
-- pseudonymising such an event changes its hash and every later event's prev_hash and
-- hash: the chain is re-sealed from the first such event to its head. The pseudonym key is
-- the application's, so the application computes the new rows (audit.reseal.ts) and this
-- narrow function writes them, refusing anything but: raw user ids replaced by pseudonyms,
-- IP and user agent removed (they move to audit_event_context), and the chain's links
-- re-chained; and only right after the platform chain recorded `audit.chain_resealed` for
-- the chain (its first re-sealed seq and its head before, so an auditor holding an older
-- signed checkpoint can follow the change). Checkpoints of the re-sealed range no longer
-- match and are removed; the application signs the new head.
-- 2. Indexes for the scans of export and erasure: usage events and audit events by the
-- columns naming a user, and held mail by recipient.

-- Events still in the old shape: what the re-seal job looks for (empty once it has run).
create index audit_events_legacy_idx on audit_events (chain, seq)
  where ip is not null or user_agent is not null
     or actor_id ~ '^usr_[0-9A-HJKMNP-TV-Z]{26}$'
     or actor_user_id ~ '^usr_[0-9A-HJKMNP-TV-Z]{26}$'
     or target_id ~ '^usr_[0-9A-HJKMNP-TV-Z]{26}$'
     or jsonb_path_exists(diff, 'strict $.** ? (@.type() == "string" && @ like_regex "^usr_[0-9A-HJKMNP-TV-Z]{26}$")');

-- True when `p_new` is `p_old` with some raw user ids (whole strings) replaced by pseudonyms,
-- at any depth; keys, numbers and every other string unchanged.
create or replace function berth_audit_pseudonymised(p_old jsonb, p_new jsonb) returns boolean
language plpgsql immutable as $$
declare
  k text;
  i integer;
begin
  if p_old is null or p_new is null then
    return p_old is null and p_new is null;
  end if;
  if jsonb_typeof(p_old) <> jsonb_typeof(p_new) then
    return false;
  end if;
  case jsonb_typeof(p_old)
    when 'string' then
      return p_old = p_new
        or ((p_old #>> '{}') ~ '^usr_[0-9A-HJKMNP-TV-Z]{26}$' and (p_new #>> '{}') ~ '^anon_[0-9a-f]{32}$');
    when 'array' then
      if jsonb_array_length(p_old) <> jsonb_array_length(p_new) then
        return false;
      end if;
      for i in 0 .. jsonb_array_length(p_old) - 1 loop
        if not berth_audit_pseudonymised(p_old -> i, p_new -> i) then
          return false;
        end if;
      end loop;
      return true;
    when 'object' then
      if (select coalesce(array_agg(x order by x), '{}') from jsonb_object_keys(p_old) x)
         is distinct from (select coalesce(array_agg(x order by x), '{}') from jsonb_object_keys(p_new) x) then
        return false;
      end if;
      for k in select jsonb_object_keys(p_old) loop
        if not berth_audit_pseudonymised(p_old -> k, p_new -> k) then
          return false;
        end if;
      end loop;
      return true;
    else
      return p_old = p_new;
  end case;
end $$;

-- Append-only as before; in addition an UPDATE of an audit event is let through for the
-- owning role while its re-seal switch is on (set only inside berth_audit_reseal), and only
-- of the fields a re-seal may change.
create or replace function berth_audit_refuse_change() returns trigger
language plpgsql as $$
declare
  owner_role text := (select pg_get_userbyid(c.relowner) from pg_class c where c.oid = tg_relid);
begin
  if tg_op = 'DELETE'
     and current_setting('berth.audit_retention', true) = 'on'
     and current_user = owner_role then
    return old;
  end if;
  if tg_op = 'UPDATE'
     and tg_table_name <> 'audit_checkpoints'
     and current_setting('berth.audit_reseal', true) = 'on'
     and current_user = owner_role
     and (to_jsonb(new) - array['actor_id', 'actor_user_id', 'ip', 'user_agent', 'target_id', 'diff', 'prev_hash', 'hash'])
         = (to_jsonb(old) - array['actor_id', 'actor_user_id', 'ip', 'user_agent', 'target_id', 'diff', 'prev_hash', 'hash']) then
    return new;
  end if;
  raise exception 'audit log is append-only: % on % is not allowed', tg_op, tg_table_name
    using errcode = 'insufficient_privilege';
end $$;

create policy audit_reseal on audit_events for update
  using (current_setting('berth.audit_reseal', true) = 'on')
  with check (current_setting('berth.audit_reseal', true) = 'on');

-- Re-seals events of `p_chain`: `p_rows` is a JSON array of {seq, actor_id, actor_user_id,
-- target_id, diff, prev_hash, hash}, in seq order, continuing the chain from the event
-- before the first one (called a page at a time, in one transaction). Refused unless the
-- platform chain's latest event is `audit.chain_resealed` for this chain naming `fromSeq`,
-- every row is at or after fromSeq (and the anchor) and at most the head, each changes
-- nothing but raw user ids into pseudonyms (IP and user agent are cleared), and each chains
-- from the (re-sealed) event before it. Removes the chain's checkpoints from fromSeq on and
-- moves the head's hash to the re-sealed head event. Returns the number of rows written.
create or replace function berth_audit_reseal(p_chain text, p_rows jsonb) returns bigint
language plpgsql security definer set search_path = public as $$
declare
  h audit_chain_heads%rowtype;
  e audit_events%rowtype;
  old_row audit_events%rowtype;
  r record;
  from_seq bigint;
  before_hash text;
  written bigint := 0;
  prior text := current_setting('berth.bypass_rls', true);
begin
  perform berth_audit_check_chain(p_chain);
  perform set_config('berth.bypass_rls', 'on', true);
  select * into h from audit_chain_heads where chain = p_chain for update;
  if not found then
    raise exception 'audit chain % has no head', p_chain;
  end if;
  e := berth_audit_platform_head_event();
  if e.id is null or e.action <> 'audit.chain_resealed' or e.target_id <> p_chain
     or (e.diff ->> 'fromSeq') is null or (e.diff ->> 'fromSeq') !~ '^[1-9][0-9]{0,17}$' then
    raise exception 'record audit.chain_resealed for chain % in the platform chain first', p_chain
      using errcode = 'insufficient_privilege';
  end if;
  from_seq := (e.diff ->> 'fromSeq')::bigint;
  if from_seq < h.anchor_seq then
    raise exception 'audit chain % cannot be re-sealed below its anchor', p_chain using errcode = 'insufficient_privilege';
  end if;
  perform set_config('berth.audit_reseal', 'on', true);
  for r in select * from jsonb_to_recordset(p_rows) as x(seq bigint, actor_id text, actor_user_id text,
      target_id text, diff jsonb, prev_hash text, hash text) order by x.seq
  loop
    if r.seq is null or r.seq < from_seq or r.seq > h.seq then
      raise exception 'audit chain % re-seal: seq % is outside the recorded range', p_chain, r.seq
        using errcode = 'insufficient_privilege';
    end if;
    select * into old_row from audit_events where chain = p_chain and seq = r.seq;
    if not found then
      raise exception 'audit chain % has no event %', p_chain, r.seq;
    end if;
    if not (berth_audit_pseudonymised(to_jsonb(old_row.actor_id), to_jsonb(r.actor_id))
            and berth_audit_pseudonymised(to_jsonb(old_row.actor_user_id), to_jsonb(r.actor_user_id))
            and berth_audit_pseudonymised(to_jsonb(old_row.target_id), to_jsonb(r.target_id))
            and berth_audit_pseudonymised(old_row.diff, case when jsonb_typeof(r.diff) = 'null' then null else r.diff end)) then
      raise exception 'audit chain % re-seal: event % changes more than user ids into pseudonyms', p_chain, r.seq
        using errcode = 'insufficient_privilege';
    end if;
    if r.seq = h.anchor_seq then
      before_hash := h.anchor_hash;
    else
      select hash into before_hash from audit_events where chain = p_chain and seq = r.seq - 1;
    end if;
    if r.prev_hash is distinct from before_hash then
      raise exception 'audit chain % re-seal: event % does not chain from the event before it', p_chain, r.seq
        using errcode = 'insufficient_privilege';
    end if;
    update audit_events
       set actor_id = r.actor_id, actor_user_id = r.actor_user_id, target_id = r.target_id,
           diff = case when jsonb_typeof(r.diff) = 'null' then null else r.diff end,
           ip = null, user_agent = null, prev_hash = r.prev_hash, hash = r.hash
     where chain = p_chain and seq = r.seq and occurred_at = old_row.occurred_at;
    written := written + 1;
  end loop;
  perform set_config('berth.audit_reseal', '', true);
  perform set_config('berth.audit_retention', 'on', true);
  delete from audit_checkpoints where chain = p_chain and seq >= from_seq;
  update audit_chain_heads set hash = (select ev.hash from audit_events ev where ev.chain = p_chain and ev.seq = h.seq)
   where chain = p_chain;
  perform set_config('berth.audit_retention', '', true);
  perform set_config('berth.bypass_rls', coalesce(prior, ''), true);
  return written;
end $$;

revoke execute on function berth_audit_reseal(text, jsonb) from public;
comment on function berth_audit_reseal(text, jsonb) is 'berth:app-callable';

-- ---------------------------------------------------------------------------------------
-- Export and erasure find a user's rows by these columns. Indexes on the partitioned tables
-- are created on every partition, and on each partition attached later (the retention
-- job's months ahead).
create index usage_events_user_idx on usage_events (user_id) where user_id is not null;
create index audit_events_actor_idx on audit_events (actor_id);
create index audit_events_actor_user_idx on audit_events (actor_user_id) where actor_user_id is not null;
create index audit_events_target_idx on audit_events (target_id);
create index email_outbox_to_idx on email_outbox (to_address);
create index email_outbox_user_idx on email_outbox (user_id) where user_id is not null;
