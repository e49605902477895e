-- Auto top-up (opt-in per workspace) and promotional credits that expire.
--
-- Auto top-up: a workspace's settings and the card saved at the processor for off-session
-- charges. Berth keeps only the processor's customer and payment-method ids and, as the
-- processor reports them, the card's brand and last 4: never a number, an expiry or a
-- fingerprint. Billing records outlive the workspace (kept 7 years), so no foreign keys.
create table auto_topup_settings (
  workspace_id text primary key,
  enabled boolean not null,
  -- Null until the settings are first saved (a card may be saved before).
  threshold_micros bigint check (threshold_micros > 0),
  amount_micros bigint check (amount_micros > 0),
  -- A monthly cap on the count of charges, on their total, or both (null: that cap is off).
  monthly_max_count integer check (monthly_max_count > 0),
  monthly_max_micros bigint check (monthly_max_micros > 0),
  processor_customer_id text check (char_length(processor_customer_id) <= 255),
  processor_payment_method_id text check (char_length(processor_payment_method_id) <= 255),
  card_brand text check (char_length(card_brand) <= 40),
  card_last4 text check (card_last4 ~ '^[0-9]{4}$'),
  -- Declines in a row; the third turns auto top-up off (disabled_reason says why).
  consecutive_failures integer not null default 0 check (consecutive_failures >= 0),
  disabled_reason text check (char_length(disabled_reason) <= 100),
  -- After a decline, the next charge waits until then.
  next_attempt_at timestamptz,
  updated_by text,
  updated_at timestamptz not null,
  -- Enabled only with what a charge needs.
  check (not enabled or (threshold_micros is not null and amount_micros is not null
    and processor_customer_id is not null and processor_payment_method_id is not null
    and (monthly_max_count is not null or monthly_max_micros is not null)))
);
select berth_enable_tenant_rls('auto_topup_settings');

-- Each off-session charge: at most one in flight (pending) per workspace.
create table auto_topups (
  id text primary key,
  workspace_id text not null,
  payment_intent_id text unique check (char_length(payment_intent_id) <= 255),
  -- The saved card charged (a retried request must name the same one).
  processor_customer_id text not null check (char_length(processor_customer_id) <= 255),
  processor_payment_method_id text not null check (char_length(processor_payment_method_id) <= 255),
  amount_micros bigint not null check (amount_micros > 0),
  currency text not null check (currency = 'usd'),
  status text not null check (status in ('pending', 'succeeded', 'failed')),
  failure_code text check (char_length(failure_code) <= 100),
  transaction_id text,
  created_at timestamptz not null,
  resolved_at timestamptz
);
create unique index auto_topups_in_flight_idx on auto_topups (workspace_id) where status = 'pending';
create index auto_topups_workspace_time_idx on auto_topups (workspace_id, created_at);
select berth_enable_tenant_rls('auto_topups');

-- Promotional credits: an operator grant with an expiry. The hourly job takes back what is
-- left of each at its expiry with an `expire` ledger transaction (key expire:<grant id>).
create table promotional_credits (
  grant_transaction_id text primary key,
  workspace_id text not null,
  amount_micros bigint not null check (amount_micros > 0),
  expires_at timestamptz not null,
  -- Set once the expiry was handled: what was taken back (0 when nothing was left) and by which transaction.
  expired_micros bigint check (expired_micros >= 0),
  expired_transaction_id text,
  processed_at timestamptz,
  created_at timestamptz not null
);
create index promotional_credits_due_idx on promotional_credits (expires_at) where processed_at is null;
create index promotional_credits_workspace_idx on promotional_credits (workspace_id, expires_at);
select berth_enable_tenant_rls('promotional_credits');
