-- Payments: top-ups bought through a payment processor (Stripe Checkout). Card data never
-- reaches Berth; a payment keeps only what the processor reports (brand, last 4, postal code).
create table payments (
  id text primary key,
  workspace_id text not null,
  processor text not null check (processor in ('stripe')),
  checkout_id text not null unique,
  amount_micros bigint not null check (amount_micros > 0),
  currency text not null check (currency = 'usd'),
  status text not null check (status in ('pending', 'paid', 'expired')),
  card_brand text check (char_length(card_brand) <= 40),
  card_last4 text check (card_last4 ~ '^[0-9]{4}$'),
  postal_code text check (char_length(postal_code) <= 20),
  transaction_id text,
  created_by text,
  created_at timestamptz not null,
  paid_at timestamptz
);
create index payments_workspace_time_idx on payments (workspace_id, created_at);
select berth_enable_tenant_rls('payments');

-- Every processor event applied, by its id: a redelivered event is recognised and skipped.
-- Written in the same transaction as what the event did.
create table payment_events (
  id text primary key,
  processor text not null,
  type text not null,
  workspace_id text,
  received_at timestamptz not null
);
-- Events of no workspace (types billing does not act on) are noted by system work only.
select berth_enable_tenant_rls('payment_events');
