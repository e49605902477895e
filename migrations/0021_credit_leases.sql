-- Credit leases: a gateway replica reserves credits for many calls at once and settles
-- them in one movement. A lease left open by a replica that died is settled from the
-- usage events recorded under it, so the calls it covered are still charged.
alter table credit_reservations
  add column kind text not null default 'call' check (kind in ('call', 'lease'));

-- No index of its own (it would cost every insert): a lease's events are found by
-- workspace and time, from the lease's start, through usage_events_workspace_time_idx.
alter table usage_events add column credit_lease_id text;
