-- Billing: a double-entry credit ledger in integer micro-units (1 USD = 1,000,000).
--
-- Every movement is a ledger transaction with an idempotency key unique per workspace, and
-- two or more postings that sum to zero. A workspace has two accounts of its own,
-- `available` (spendable) and `held` (reserved for calls in flight); the other side of each
-- movement is a platform account (`platform:grants`, `platform:payments`, `platform:usage`,
-- `platform:adjustments`). credit_balances keeps each workspace's two balances, updated in
-- the same transaction as the postings: `berth billing verify` recomputes them from the
-- postings. Billing records outlive the workspace (kept 7 years), so no foreign keys.

create table credit_balances (
  workspace_id text primary key,
  available_micros bigint not null check (available_micros >= 0),
  held_micros bigint not null check (held_micros >= 0),
  updated_at timestamptz not null
);
select berth_enable_tenant_rls('credit_balances');

create table ledger_transactions (
  id text primary key,
  workspace_id text not null,
  kind text not null check (kind in ('grant', 'topup', 'refund', 'reserve', 'settle', 'release', 'adjust', 'expire')),
  idempotency_key text not null,
  -- A hash of what the transaction was asked to do: a replayed key with other parameters is refused.
  request_hash text not null,
  amount_micros bigint not null check (amount_micros >= 0),
  reservation_id text,
  -- The balances right after it: what a replay answers, identical to the first reply.
  available_after_micros bigint not null,
  held_after_micros bigint not null,
  actor_type text not null check (actor_type in ('user', 'api_key', 'system')),
  actor_id text not null,
  memo text check (char_length(memo) <= 500),
  created_at timestamptz not null,
  unique (workspace_id, idempotency_key)
);
create index ledger_transactions_workspace_time_idx on ledger_transactions (workspace_id, created_at, id);
select berth_enable_tenant_rls('ledger_transactions');

create table ledger_postings (
  transaction_id text not null references ledger_transactions(id),
  workspace_id text not null,
  account text not null check (account in ('available', 'held') or account like 'platform:%'),
  amount_micros bigint not null check (amount_micros <> 0),
  primary key (transaction_id, account)
);
create index ledger_postings_workspace_account_idx on ledger_postings (workspace_id, account);
select berth_enable_tenant_rls('ledger_postings');

-- The worst-case cost of a call in flight, held until it is settled or released (each at
-- most once), or released by the expiry job once `expires_at` passes.
create table credit_reservations (
  id text primary key,
  workspace_id text not null,
  key_id text,
  request_id text not null,
  amount_micros bigint not null check (amount_micros >= 0),
  status text not null check (status in ('open', 'settled', 'released', 'expired')),
  settled_micros bigint check (settled_micros >= 0),
  expires_at timestamptz not null,
  created_at timestamptz not null,
  resolved_at timestamptz
);
create index credit_reservations_open_idx on credit_reservations (expires_at) where status = 'open';
select berth_enable_tenant_rls('credit_reservations');

-- Plans: one at a time per workspace, with the history of changes.
create table workspace_plans (
  id text primary key,
  workspace_id text not null,
  plan text not null,
  started_at timestamptz not null,
  ended_at timestamptz,
  changed_by text
);
create unique index workspace_plans_current_idx on workspace_plans (workspace_id) where ended_at is null;
select berth_enable_tenant_rls('workspace_plans');
