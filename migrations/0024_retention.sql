-- Retention (privacy): the large time-series tables become partitioned by month, so expiry
-- drops whole months instead of deleting rows; per-call usage events older than 90 days are
-- rolled up into daily aggregates that name no key and no user; every retention run is
-- recorded.
--
-- Partitions live in their own schema, `berth_partitions`, on which the application role
-- has no privilege: it reaches their rows only through the parent tables, whose row-level
-- security and grants apply. Each table has a default partition that catches rows of a
-- month without a partition yet (a clock far off, a replayed journal); the retention job
-- creates the coming months ahead and moves such rows into their month's partition.

create schema if not exists berth_partitions;
revoke all on schema berth_partitions from public;

-- ---------------------------------------------------------------------------------------
-- usage_events, partitioned by created_at. A partitioned table's unique keys must contain
-- the partition key: the primary key is (id, created_at). Journal replays insert the same
-- id with the same created_at (the journal line carries both), so `on conflict (id,
-- created_at) do nothing` still skips them.
alter table usage_events rename to usage_events_unpartitioned;

create table usage_events (
  id text not null,
  workspace_id text not null,
  key_id text,
  user_id text,
  request_id text not null,
  endpoint text not null,
  provider text,
  model text not null,
  status integer not null,
  error_code text,
  stream boolean not null,
  latency_ms integer not null check (latency_ms >= 0),
  ttft_ms integer check (ttft_ms >= 0),
  input_tokens integer not null check (input_tokens >= 0),
  output_tokens integer not null check (output_tokens >= 0),
  cached_tokens integer not null check (cached_tokens >= 0),
  reasoning_tokens integer not null check (reasoning_tokens >= 0),
  estimated boolean not null,
  cost_micros bigint not null check (cost_micros >= 0),
  attempts integer not null check (attempts >= 0),
  created_at timestamptz not null,
  credit_lease_id text
) partition by range (created_at);

create table berth_partitions.usage_events_default partition of usage_events default;

insert into usage_events (id, workspace_id, key_id, user_id, request_id, endpoint, provider, model, status,
  error_code, stream, latency_ms, ttft_ms, input_tokens, output_tokens, cached_tokens, reasoning_tokens,
  estimated, cost_micros, attempts, created_at, credit_lease_id)
select id, workspace_id, key_id, user_id, request_id, endpoint, provider, model, status,
  error_code, stream, latency_ms, ttft_ms, input_tokens, output_tokens, cached_tokens, reasoning_tokens,
  estimated, cost_micros, attempts, created_at, credit_lease_id
from usage_events_unpartitioned;

drop table usage_events_unpartitioned;

alter table usage_events add constraint usage_events_pkey primary key (id, created_at);
create index usage_events_workspace_time_idx on usage_events (workspace_id, created_at, id);
select berth_enable_tenant_rls('usage_events');

-- Daily aggregates of usage events older than 90 days: per workspace, UTC day, endpoint,
-- provider ('' = none), model and HTTP status, with counts, tokens and cost. They name no
-- API key and no user. Usage reports and statements read them together with the raw rows.
create table usage_daily (
  workspace_id text not null references workspaces(id) on delete cascade,
  day date not null,
  endpoint text not null,
  provider text not null,
  model text not null,
  status integer not null,
  requests bigint not null check (requests >= 0),
  input_tokens bigint not null check (input_tokens >= 0),
  output_tokens bigint not null check (output_tokens >= 0),
  cached_tokens bigint not null check (cached_tokens >= 0),
  reasoning_tokens bigint not null check (reasoning_tokens >= 0),
  cost_micros bigint not null check (cost_micros >= 0),
  primary key (workspace_id, day, endpoint, provider, model, status)
);
create index usage_daily_day_idx on usage_daily (day);
select berth_enable_tenant_rls('usage_daily');

-- ---------------------------------------------------------------------------------------
-- audit_events, partitioned by occurred_at. (chain, seq) stays unique through a trigger
-- (a unique index would have to contain occurred_at); appends are serialised per chain by
-- the chain head's row lock anyway.
alter table audit_events rename to audit_events_unpartitioned;
drop trigger audit_events_append_only on audit_events_unpartitioned;
drop trigger audit_events_no_truncate on audit_events_unpartitioned;

create table audit_events (
  id text not null,
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
  check ((chain = 'platform' and workspace_id is null) or (chain <> 'platform' and workspace_id = chain))
) partition by range (occurred_at);
comment on table audit_events is 'berth:append-only';

create table berth_partitions.audit_events_default partition of audit_events default;

insert into audit_events select id, chain, workspace_id, seq, occurred_at, actor_type, actor_id, actor_user_id, ip,
  user_agent, request_id, action, target_type, target_id, outcome, diff, prev_hash, hash
from audit_events_unpartitioned;

-- The head-event reader returns the table's row type: rebuild it on the new table.
drop function berth_audit_platform_head_event();
drop table audit_events_unpartitioned;

create or replace function berth_audit_platform_head_event() returns audit_events
language plpgsql stable as $$
declare
  e audit_events%rowtype;
begin
  select ev.* into e from audit_events ev
    join audit_chain_heads h on h.chain = 'platform' and ev.chain = 'platform' and ev.seq = h.seq;
  return e;
end $$;

alter table audit_events add constraint audit_events_pkey primary key (id, occurred_at);
create index audit_events_chain_seq_idx on audit_events (chain, seq);
create index audit_events_ws_time_idx on audit_events (workspace_id, occurred_at);
create index audit_events_chain_time_idx on audit_events (chain, occurred_at);

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

-- Row triggers on a partitioned table are cloned onto every partition, present and future.
create trigger audit_events_append_only before update or delete on audit_events
  for each row execute function berth_audit_refuse_change();
create trigger audit_events_no_truncate before truncate on audit_events
  for each statement execute function berth_audit_refuse_truncate();

-- One event per (chain, seq), read past row-level security (a workspace transaction appends
-- to the platform chain without seeing it).
create or replace function berth_audit_unique_seq() returns trigger
language plpgsql security definer set search_path = public as $$
declare
  prior text := current_setting('berth.bypass_rls', true);
  taken boolean;
begin
  perform set_config('berth.bypass_rls', 'on', true);
  select exists (select 1 from audit_events where chain = new.chain and seq = new.seq) into taken;
  perform set_config('berth.bypass_rls', coalesce(prior, ''), true);
  if taken then
    raise exception 'audit chain % already has event %', new.chain, new.seq using errcode = 'unique_violation';
  end if;
  return new;
end $$;
revoke execute on function berth_audit_unique_seq() from public;

create trigger audit_events_unique_seq before insert on audit_events
  for each row execute function berth_audit_unique_seq();

-- ---------------------------------------------------------------------------------------
-- Partition management, for the two partitioned tables only.

-- The partition of `p_parent` for the UTC month containing `p_at`, created when missing.
-- Rows of that month waiting in the default partition move into it (in this transaction).
-- Returns the partition's name.
create or replace function berth_ensure_month_partition(p_parent text, p_at timestamptz) returns text
language plpgsql security definer set search_path = public as $$
declare
  month_start timestamp := date_trunc('month', p_at at time zone 'UTC');
  lo timestamptz := month_start at time zone 'UTC';
  hi timestamptz := (month_start + interval '1 month') at time zone 'UTC';
  part text := p_parent || '_p' || to_char(month_start, 'YYYYMM');
  key text;
  prior_bypass text := current_setting('berth.bypass_rls', true);
begin
  if p_parent = 'usage_events' then
    key := 'created_at';
  elsif p_parent = 'audit_events' then
    key := 'occurred_at';
  else
    raise exception 'berth_ensure_month_partition: % is not partitioned by month', p_parent;
  end if;
  if to_regclass('berth_partitions.' || part) is not null then
    return part;
  end if;
  execute format('lock table public.%I in share row exclusive mode', p_parent);
  execute format('create table berth_partitions.%I (like public.%I including defaults including constraints)',
    part, p_parent);
  -- Moving audit rows out of the default partition is a delete there: the append-only
  -- trigger allows it to the owner with the retention switch on (this function only).
  perform set_config('berth.audit_retention', 'on', true);
  perform set_config('berth.bypass_rls', 'on', true);
  execute format(
    'with moved as (delete from berth_partitions.%I where %I >= $1 and %I < $2 returning *) '
    || 'insert into berth_partitions.%I select * from moved',
    p_parent || '_default', key, key, part) using lo, hi;
  perform set_config('berth.audit_retention', '', true);
  perform set_config('berth.bypass_rls', coalesce(prior_bypass, ''), true);
  execute format('alter table public.%I attach partition berth_partitions.%I for values from (%L) to (%L)',
    p_parent, part, lo, hi);
  return part;
end $$;

-- The monthly partitions of a table with their bounds and row counts (the default
-- partition excluded), oldest first.
create or replace function berth_month_partitions(p_parent text)
returns table (name text, range_start timestamptz, range_end timestamptz)
language sql stable security definer set search_path = public as $$
  select c.relname::text,
         (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz,
         (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz
    from pg_inherits i
    join pg_class c on c.oid = i.inhrelid
    join pg_namespace n on n.oid = c.relnamespace
   where i.inhparent = ('public.' || p_parent)::regclass
     and n.nspname = 'berth_partitions'
     and pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
   order by 2
$$;

-- Rolls a whole month of usage events up into usage_daily and drops its partition, in one
-- step under an exclusive lock (no insert slips in between). Only a month that ended
-- before `p_before` (the 90-day cut-off). Returns the number of events rolled up.
create or replace function berth_usage_rollup_partition(p_part text, p_before timestamptz) returns bigint
language plpgsql security definer set search_path = public as $$
declare
  hi timestamptz;
  moved bigint;
  prior_bypass text := current_setting('berth.bypass_rls', true);
begin
  select p.range_end into hi from berth_month_partitions('usage_events') p where p.name = p_part;
  if hi is null then
    raise exception 'usage_events has no monthly partition %', p_part;
  end if;
  if hi > p_before then
    raise exception 'usage partition % ends after the roll-up cut-off', p_part;
  end if;
  execute format('lock table berth_partitions.%I in access exclusive mode', p_part);
  perform set_config('berth.bypass_rls', 'on', true);
  execute format(
    'insert into usage_daily as d (workspace_id, day, endpoint, provider, model, status, requests, input_tokens, '
    || 'output_tokens, cached_tokens, reasoning_tokens, cost_micros) '
    || 'select u.workspace_id, (u.created_at at time zone ''UTC'')::date, u.endpoint, coalesce(u.provider, ''''), '
    || 'u.model, u.status, count(*), sum(u.input_tokens), sum(u.output_tokens), sum(u.cached_tokens), '
    || 'sum(u.reasoning_tokens), sum(u.cost_micros) '
    || 'from berth_partitions.%I u where exists (select 1 from workspaces w where w.id = u.workspace_id) '
    || 'group by 1, 2, 3, 4, 5, 6 '
    || 'on conflict (workspace_id, day, endpoint, provider, model, status) do update set '
    || 'requests = d.requests + excluded.requests, input_tokens = d.input_tokens + excluded.input_tokens, '
    || 'output_tokens = d.output_tokens + excluded.output_tokens, cached_tokens = d.cached_tokens + excluded.cached_tokens, '
    || 'reasoning_tokens = d.reasoning_tokens + excluded.reasoning_tokens, cost_micros = d.cost_micros + excluded.cost_micros',
    p_part);
  execute format('select count(*) from berth_partitions.%I', p_part) into moved;
  execute format('drop table berth_partitions.%I', p_part);
  perform set_config('berth.bypass_rls', coalesce(prior_bypass, ''), true);
  return moved;
end $$;

-- Drops a whole month of audit events. Refused unless: the retention is at least 30 days
-- and the month ended before it by the database's clock; for every chain with events in
-- the month, those events are the chain's whole oldest kept prefix and its head event is
-- newer; and the platform chain's latest event is `audit.partition_dropped` naming this
-- partition and its event count (record it first, in the same transaction). Each chain's
-- anchor moves past the month (chaining from its last dropped event), and checkpoints
-- before the new anchor go, except the one signing it. Returns the number of events.
create or replace function berth_audit_drop_partition(p_part text, p_retention interval) returns bigint
language plpgsql security definer set search_path = public as $$
declare
  hi timestamptz;
  e audit_events%rowtype;
  c record;
  total bigint;
  prior_bypass text := current_setting('berth.bypass_rls', true);
begin
  if p_retention is null or p_retention < interval '30 days' then
    raise exception 'audit retention must be at least 30 days' using errcode = 'insufficient_privilege';
  end if;
  select p.range_end into hi from berth_month_partitions('audit_events') p where p.name = p_part;
  if hi is null then
    raise exception 'audit_events has no monthly partition %', p_part;
  end if;
  if hi >= now() - p_retention then
    raise exception 'audit partition % is not older than the retention', p_part using errcode = 'insufficient_privilege';
  end if;
  execute format('lock table berth_partitions.%I in access exclusive mode', p_part);
  perform set_config('berth.bypass_rls', 'on', true);
  execute format('select count(*) from berth_partitions.%I', p_part) into total;
  e := berth_audit_platform_head_event();
  if e.id is null or e.action <> 'audit.partition_dropped' or e.target_id <> p_part
     or (e.diff ->> 'events') is distinct from total::text then
    raise exception 'record audit.partition_dropped for % in the platform chain first', p_part
      using errcode = 'insufficient_privilege';
  end if;
  for c in execute format(
    'select chain, max(seq) as last_seq, count(*) as n from berth_partitions.%I group by chain', p_part)
  loop
    if exists (select 1 from audit_chain_heads h where h.chain = c.chain and h.seq <= c.last_seq) then
      raise exception 'audit partition % holds the head of chain %', p_part, c.chain using errcode = 'insufficient_privilege';
    end if;
    if exists (select 1 from audit_events ev where ev.chain = c.chain and ev.seq <= c.last_seq
                 and ev.tableoid <> ('berth_partitions.' || p_part)::regclass) then
      raise exception 'audit partition % is not a prefix of chain %', p_part, c.chain using errcode = 'insufficient_privilege';
    end if;
    perform set_config('berth.audit_retention', 'on', true);
    update audit_chain_heads
       set anchor_seq = c.last_seq + 1,
           anchor_hash = (select ev.hash from audit_events ev where ev.chain = c.chain and ev.seq = c.last_seq)
     where chain = c.chain and anchor_seq <= c.last_seq;
    delete from audit_checkpoints where chain = c.chain and seq < c.last_seq;
    perform set_config('berth.audit_retention', '', true);
  end loop;
  execute format('drop table berth_partitions.%I', p_part);
  perform set_config('berth.bypass_rls', coalesce(prior_bypass, ''), true);
  return total;
end $$;

revoke execute on function berth_ensure_month_partition(text, timestamptz) from public;
revoke execute on function berth_month_partitions(text) from public;
revoke execute on function berth_usage_rollup_partition(text, timestamptz) from public;
revoke execute on function berth_audit_drop_partition(text, interval) from public;
comment on function berth_ensure_month_partition(text, timestamptz) is 'berth:app-callable';
comment on function berth_month_partitions(text) is 'berth:app-callable';
comment on function berth_usage_rollup_partition(text, timestamptz) is 'berth:app-callable';
comment on function berth_audit_drop_partition(text, interval) is 'berth:app-callable';

-- The current month and the next three, for both tables (the retention job keeps three
-- months ahead from then on), and every month that already has rows.
do $$
declare
  m timestamptz;
begin
  for m in
    select generate_series(date_trunc('month', now()), date_trunc('month', now()) + interval '3 months', interval '1 month')
    union select distinct date_trunc('month', created_at) from usage_events
  loop
    perform berth_ensure_month_partition('usage_events', m);
  end loop;
  for m in
    select generate_series(date_trunc('month', now()), date_trunc('month', now()) + interval '3 months', interval '1 month')
    union select distinct date_trunc('month', occurred_at) from audit_events
  loop
    perform berth_ensure_month_partition('audit_events', m);
  end loop;
end $$;

-- ---------------------------------------------------------------------------------------
-- Retention runs: one row per run (scheduled or started by an operator, dry or not), and
-- one result per data class and table: what was (or, in a dry run, would be) removed.
create table retention_runs (
  id text primary key,
  as_of timestamptz not null,
  dry_run boolean not null,
  trigger text not null check (trigger in ('schedule', 'operator')),
  -- The operator who started it (null for the schedule).
  started_by text,
  started_at timestamptz not null,
  finished_at timestamptz,
  status text not null check (status in ('running', 'completed', 'failed')),
  -- A stable error code when it failed; never a message with data in it.
  error_code text
);
create index retention_runs_started_idx on retention_runs (started_at desc);
-- One removing run at a time (dry runs change nothing and may overlap). A run left
-- 'running' by a stopped process is marked failed by the next one after an hour.
create unique index retention_runs_one_running on retention_runs ((true)) where status = 'running' and not dry_run;

create table retention_run_results (
  run_id text not null references retention_runs(id) on delete cascade,
  retention_class text not null,
  table_name text not null,
  -- How the class applied to the table: expired rows, rows older than a window, the usage
  -- roll-up, audit months and chain prefixes, or kept (no time rule declared).
  rule text not null check (rule in ('expired', 'older_than', 'rollup', 'audit', 'with_events', 'kept')),
  -- Rows deleted; rows rolled up into aggregates; partitions dropped.
  rows_deleted bigint not null default 0 check (rows_deleted >= 0),
  rows_rolled_up bigint not null default 0 check (rows_rolled_up >= 0),
  partitions_dropped integer not null default 0 check (partitions_dropped >= 0),
  -- Where the cut-off fell (rows before it expired), null for expiry-based classes.
  cutoff timestamptz,
  primary key (run_id, retention_class, table_name)
);
