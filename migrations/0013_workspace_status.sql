-- A workspace's standing: active; restricted (the data subject or operator restricted
-- processing: its data is kept and readable, nothing new is processed, e.g. no gateway
-- calls); suspended (an operator paused it, e.g. for abuse or unpaid use). Billing and
-- privacy set it automatically later; operators set it now.
alter table workspaces add column status text not null default 'active'
  check (status in ('active', 'restricted', 'suspended'));
