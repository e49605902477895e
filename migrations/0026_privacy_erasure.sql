-- Erasure: account deletions with their 30-day grace period, and what keeps the audit log
-- free of personal data while it stays append-only and verifiable.

-- One row per account deletion a user asked for. While `scheduled`, the account is
-- disabled and the erasure job erases it once `erase_after` has passed; the emailed cancel
-- link (stored as SHA-256) re-enables it until then. Erasure replaces `user_id` with the
-- user's pseudonym, so the row stays as the record that the deletion was carried out.
-- Not a tenant row (no row-level security), like the identity tables; no foreign key to
-- users, because the record outlives the account.
create table account_deletions (
  id text primary key,
  user_id text not null,
  -- The privacy request that tracks it (privacy_requests.id), when requests are tracked.
  request_id text,
  status text not null check (status in ('scheduled', 'cancelled', 'erased')),
  requested_at timestamptz not null,
  erase_after timestamptz not null,
  cancel_token_hash text check (cancel_token_hash is null or cancel_token_hash ~ '^[0-9a-f]{64}$'),
  cancelled_at timestamptz,
  erased_at timestamptz,
  check (erase_after > requested_at),
  check ((status = 'cancelled') = (cancelled_at is not null)),
  check ((status = 'erased') = (erased_at is not null)),
  check (status = 'scheduled' or cancel_token_hash is null)
);
-- One scheduled deletion per user: a second request is refused (deletion_pending).
create unique index account_deletions_scheduled_idx on account_deletions (user_id) where status = 'scheduled';
create index account_deletions_due_idx on account_deletions (erase_after) where status = 'scheduled';
create unique index account_deletions_token_idx on account_deletions (cancel_token_hash)
  where cancel_token_hash is not null;

-- Audit events name users only by pseudonym (a keyed hash of the user id): the hash chain
-- covers the pseudonym, so erasing a user changes no event. This table resolves a
-- pseudonym to its user for as long as the account exists; erasure deletes the row, and
-- the pseudonym then names nobody. Not a tenant row: a pseudonym is the same in every
-- workspace's chain.
create table audit_subjects (
  pseudonym text primary key check (pseudonym ~ '^anon_[0-9a-f]{32}$'),
  user_id text not null unique,
  created_at timestamptz not null
);

-- The request facts of an audit event (client IP and user agent) and the user it concerns,
-- kept beside the event instead of in it: the hash chain does not cover them, so erasing
-- the user deletes them without breaking the chain. No foreign key (audit_events is
-- partitioned by month): the rows carry the event's time and expire with the events
-- (retention class audit_13_months), and go with a deleted workspace's rows.
create table audit_event_context (
  event_id text primary key,
  occurred_at timestamptz not null,
  chain text not null,
  workspace_id text,
  user_id text,
  ip text,
  user_agent text,
  check ((chain = 'platform' and workspace_id is null) or (chain <> 'platform' and workspace_id = chain))
);
create index audit_event_context_user_idx on audit_event_context (user_id) where user_id is not null;
create index audit_event_context_time_idx on audit_event_context (occurred_at);
create index audit_event_context_ws_idx on audit_event_context (workspace_id) where workspace_id is not null;

-- Same visibility as the events: a workspace transaction sees its own chain's context and
-- may add context to the platform chain's events. Erasing a user runs as system work
-- (bypass); a workspace's deletion removes its own rows.
alter table audit_event_context enable row level security;
alter table audit_event_context force row level security;
create policy audit_context_read on audit_event_context for select using (
  current_setting('berth.bypass_rls', true) = 'on'
  or workspace_id = current_setting('berth.workspace_id', true)
);
create policy audit_context_append on audit_event_context for insert with check (
  current_setting('berth.bypass_rls', true) = 'on'
  or workspace_id = current_setting('berth.workspace_id', true)
  or workspace_id is null
);
create policy audit_context_erase on audit_event_context for delete using (
  current_setting('berth.bypass_rls', true) = 'on'
  or workspace_id = current_setting('berth.workspace_id', true)
);
