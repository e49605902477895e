-- Budgets: spend limits per workspace or per API key, per UTC day or calendar month,
-- enforced when a call reserves its worst-case cost (reserved + spent + the new
-- reservation may not exceed the limit). budget_periods keeps, per budget and period,
-- what is spent (settled) and held (reserved, not yet settled), moved in the same
-- transaction as the ledger's reservations and settlements, and which alert thresholds
-- (50/80/100 %) the owners and admins were already told about.
--
-- credit_balances.budget_count says whether a workspace has budgets at all: the ledger
-- reads the balance row in every movement anyway, so workspaces without budgets pay
-- nothing for them.

alter table credit_balances add column budget_count integer not null default 0 check (budget_count >= 0);

create table budgets (
  id text primary key,
  workspace_id text not null,
  -- null: the whole workspace; otherwise one API key's calls.
  key_id text,
  period text not null check (period in ('day', 'month')),
  limit_micros bigint not null check (limit_micros > 0),
  created_by text,
  created_at timestamptz not null,
  updated_at timestamptz not null
);
create unique index budgets_scope_idx on budgets (workspace_id, coalesce(key_id, ''), period);
select berth_enable_tenant_rls('budgets');

create table budget_periods (
  budget_id text not null,
  workspace_id text not null,
  period_start timestamptz not null,
  spent_micros bigint not null default 0 check (spent_micros >= 0),
  held_micros bigint not null default 0 check (held_micros >= 0),
  -- The highest threshold crossed (0, 50, 80, 100) and the highest one notified.
  reached_pct integer not null default 0,
  notified_pct integer not null default 0,
  primary key (budget_id, period_start)
);
create index budget_periods_unnotified_idx on budget_periods (workspace_id) where reached_pct > notified_pct;
select berth_enable_tenant_rls('budget_periods');

-- The budgets a reservation counted against, so its settlement or release moves exactly
-- those (a budget created or removed meanwhile changes nothing for calls in flight).
alter table credit_reservations add column budget_ids text[];
