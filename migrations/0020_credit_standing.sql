-- Credit standing: whether a workspace's credits are `ok`, `low` or `exhausted`, kept by the
-- `billing.credit-standing` job (every minute) from credit_balances, with the owners'
-- notices of each episode and the suspension grace period. A workspace without a row has
-- never been found below the low-balance threshold (it is `ok`).
--
-- An exhaustion episode starts when the job finds the workspace's credits (available plus
-- held) below BERTH_EXHAUSTED_BALANCE_USD and ends when they are back above it. Its fields
-- stay after it ends (the last episode) and are reset when the next one starts.
create table credit_standing (
  workspace_id text primary key,
  state text not null check (state in ('ok', 'low', 'exhausted')),
  -- When the workspace entered its current state.
  since timestamptz not null,
  -- When the owners were warned of the current dip below the low-balance threshold (null once back to ok).
  low_notified_at timestamptz,
  exhausted_at timestamptz,
  exhausted_notified_at timestamptz,
  -- The end of the grace period the owners were told about (null: no deletion was due).
  grace_ends_at timestamptz,
  grace_warned_at timestamptz,
  -- When the grace period ended and billing.grace_expired was emitted (once per episode).
  grace_expired_at timestamptz,
  resumed_at timestamptz,
  -- The workspace was deleted: its standing is no longer kept up to date.
  closed_at timestamptz,
  updated_at timestamptz not null,
  check (state <> 'exhausted' or exhausted_at is not null)
);
create index credit_standing_state_idx on credit_standing (state, since) where closed_at is null;
select berth_enable_tenant_rls('credit_standing');
