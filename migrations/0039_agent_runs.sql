-- Agent runs: one row per run of an agent version, its steps (one per model call and per
-- tool call) and its events (what the run's SSE stream replays, numbered per run).
--
-- Runs and their content are task execution logs: kept 90 days, then deleted by retention.
-- Every piece of content (input, output, messages, tool arguments and results, event data)
-- is vault ciphertext under the workspace's data key, bound to the run and the field; the
-- plain columns hold only ids, statuses, counts, times and codes.
--
-- Steps and events are partitioned by month of their run's creation (`run_created_at`), so
-- a run's whole log sits in one partition and expiry drops whole months.

create table agent_runs (
  id text primary key,
  workspace_id text not null references workspaces(id) on delete cascade,
  agent_id text not null references agents(id) on delete cascade,
  agent_version integer not null check (agent_version >= 1),
  -- Who started it: the member (or the member whose API key did); null once erased.
  user_id text,
  key_id text,
  previous_run_id text,
  status text not null check (status in
    ('queued', 'in_progress', 'requires_action', 'completed', 'failed', 'cancelled', 'expired', 'incomplete')),
  stop_reason text check (stop_reason in
    ('end_turn', 'max_steps', 'max_tokens', 'tool_error', 'llm_error', 'insufficient_credits', 'cancelled', 'timeout')),
  last_error_code text,
  last_error_message text,
  -- Content (vault ciphertext): the input, the messages the first model call saw, the final
  -- output, the calls waiting for approval and the decisions taken on them.
  input bytea not null,
  context bytea,
  output bytea,
  pending bytea,
  model_steps integer not null default 0 check (model_steps >= 0),
  tool_steps integer not null default 0 check (tool_steps >= 0),
  tool_failures integer not null default 0 check (tool_failures >= 0),
  input_tokens bigint not null default 0 check (input_tokens >= 0),
  output_tokens bigint not null default 0 check (output_tokens >= 0),
  cost_micros bigint not null default 0 check (cost_micros >= 0),
  -- The sequence number of the run's last event.
  event_seq integer not null default 0 check (event_seq >= 0),
  -- The worker running it and until when its lease holds (renewed by heartbeats).
  lease_owner text,
  lease_until timestamptz,
  attempts integer not null default 0 check (attempts >= 0),
  cancel_requested_at timestamptz,
  -- When a run waiting for approval expires.
  action_expires_at timestamptz,
  -- The wall-clock limit; time spent waiting for approval moves it on.
  deadline_at timestamptz,
  created_at timestamptz not null,
  started_at timestamptz,
  completed_at timestamptz,
  updated_at timestamptz not null
);
create index agent_runs_workspace_idx on agent_runs (workspace_id, created_at desc, id desc);
create index agent_runs_agent_idx on agent_runs (workspace_id, agent_id, created_at desc);
-- The sweeper's work: live runs whose lease ran out, approvals that expired.
create index agent_runs_live_idx on agent_runs (status, lease_until)
  where status in ('queued', 'in_progress', 'requires_action');
create index agent_runs_user_idx on agent_runs (user_id) where user_id is not null;
create index agent_runs_created_idx on agent_runs (created_at);
select berth_enable_tenant_rls('agent_runs');

create table agent_run_steps (
  run_id text not null references agent_runs(id) on delete cascade,
  workspace_id text not null references workspaces(id) on delete cascade,
  run_created_at timestamptz not null,
  seq integer not null check (seq >= 1),
  kind text not null check (kind in ('model', 'tool')),
  -- model: completed, failed; tool: running, completed, failed, denied, interrupted.
  status text not null check (status in ('running', 'completed', 'failed', 'denied', 'interrupted')),
  tool_name text,
  tool_call_id text,
  error_code text,
  -- Content (vault ciphertext): a model step's assistant message; a tool step's arguments and result.
  content bytea,
  input_tokens integer not null default 0 check (input_tokens >= 0),
  output_tokens integer not null default 0 check (output_tokens >= 0),
  cost_micros bigint not null default 0 check (cost_micros >= 0),
  latency_ms integer check (latency_ms >= 0),
  started_at timestamptz not null,
  completed_at timestamptz,
  primary key (run_id, seq, run_created_at)
) partition by range (run_created_at);
create table berth_partitions.agent_run_steps_default partition of agent_run_steps default;
create index agent_run_steps_workspace_idx on agent_run_steps (workspace_id, run_created_at);
select berth_enable_tenant_rls('agent_run_steps');

create table agent_run_events (
  run_id text not null references agent_runs(id) on delete cascade,
  workspace_id text not null references workspaces(id) on delete cascade,
  run_created_at timestamptz not null,
  seq integer not null check (seq >= 1),
  type text not null,
  -- Vault ciphertext of the event's JSON data.
  data bytea not null,
  created_at timestamptz not null,
  primary key (run_id, seq, run_created_at)
) partition by range (run_created_at);
create table berth_partitions.agent_run_events_default partition of agent_run_events default;
create index agent_run_events_workspace_idx on agent_run_events (workspace_id, run_created_at);
select berth_enable_tenant_rls('agent_run_events');

-- Partition management learns the two run tables (keyed by their run's creation).
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
  elsif p_parent in ('agent_run_steps', 'agent_run_events') then
    key := 'run_created_at';
  else
    raise exception 'berth_ensure_month_partition: % is not partitioned by month', p_parent;
  end if;
  if to_regclass('berth_partitions.' || part) is not null then
    return part;
  end if;
  execute format('lock table public.%I in share row exclusive mode', p_parent);
  execute format('create table berth_partitions.%I (like public.%I including defaults including constraints)',
    part, p_parent);
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

-- Drops a whole month of a run table, only one that ended before `p_before` (the 90-day
-- cut-off). Returns the number of rows it held.
create or replace function berth_drop_run_partition(p_parent text, p_part text, p_before timestamptz) returns bigint
language plpgsql security definer set search_path = public as $$
declare
  hi timestamptz;
  dropped bigint;
begin
  if p_parent not in ('agent_run_steps', 'agent_run_events') then
    raise exception 'berth_drop_run_partition: % is not a run table', p_parent;
  end if;
  select p.range_end into hi from berth_month_partitions(p_parent) p where p.name = p_part;
  if hi is null then
    raise exception '% has no monthly partition %', p_parent, p_part;
  end if;
  if hi > p_before then
    raise exception 'partition % ends after the cut-off', p_part;
  end if;
  execute format('lock table berth_partitions.%I in access exclusive mode', p_part);
  execute format('select count(*) from berth_partitions.%I', p_part) into dropped;
  execute format('drop table berth_partitions.%I', p_part);
  return dropped;
end $$;
