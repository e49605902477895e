-- Monthly statements (invoices): one per workspace and calendar month (UTC), closed once by
-- the `billing.statements` job after the month ended, never changed afterwards. Figures are
-- integer micro-units (1 USD = 1,000,000) taken from the ledger when the month was closed:
-- opening + granted + bought - refunded + adjusted - expired - used = closing. The usage
-- breakdown (per model and per API key, from the gateway's usage events, which are kept 13
-- months) is copied in, so a statement reads the same for its 7 years.
--
-- Numbers are `<prefix>-<YYYY>-<MM>-<seq>`, seq counting the month's statements of the whole
-- installation from 1 without gaps (unique per period). Billing records outlive the
-- workspace, so no foreign keys.
create table billing_statements (
  workspace_id text not null,
  period text not null check (period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
  number text not null unique check (char_length(number) <= 40),
  seq integer not null check (seq > 0),
  period_start timestamptz not null,
  period_end timestamptz not null check (period_end > period_start),
  opening_micros bigint not null,
  granted_micros bigint not null check (granted_micros >= 0),
  bought_micros bigint not null check (bought_micros >= 0),
  refunded_micros bigint not null check (refunded_micros >= 0),
  adjusted_micros bigint not null,
  expired_micros bigint not null check (expired_micros >= 0),
  used_micros bigint not null check (used_micros >= 0),
  closing_micros bigint not null,
  settlements integer not null check (settlements >= 0),
  usage_cost_micros bigint not null check (usage_cost_micros >= 0),
  usage_requests integer not null check (usage_requests >= 0),
  -- { "models": [...], "keys": [...] }: requests, tokens and cost per model and per API key.
  breakdown jsonb not null,
  closed_at timestamptz not null,
  primary key (workspace_id, period),
  unique (period, seq)
);
select berth_enable_tenant_rls('billing_statements');
