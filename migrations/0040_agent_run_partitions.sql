-- Agent run logs' monthly partitions, as retention manages them (see 0039 and 0024).
--
-- `berth_drop_run_partition` runs as the owner (SECURITY DEFINER): like the other partition
-- functions, only the application role may call it, not PUBLIC.
revoke execute on function berth_drop_run_partition(text, text, timestamptz) from public;
comment on function berth_drop_run_partition(text, text, timestamptz) is 'berth:app-callable';

-- The current month and the next three, for both run tables (the retention job keeps three
-- months ahead from then on), and every month that already has rows (months in UTC, as the
-- function finds them).
do $$
declare
  m timestamptz;
begin
  for m in
    select generate_series(now(), now() + interval '3 months', interval '1 month')
    union select distinct date_trunc('month', run_created_at at time zone 'UTC') at time zone 'UTC' from agent_run_steps
  loop
    perform berth_ensure_month_partition('agent_run_steps', m);
  end loop;
  for m in
    select generate_series(now(), now() + interval '3 months', interval '1 month')
    union select distinct date_trunc('month', run_created_at at time zone 'UTC') at time zone 'UTC' from agent_run_events
  loop
    perform berth_ensure_month_partition('agent_run_events', m);
  end loop;
end $$;
