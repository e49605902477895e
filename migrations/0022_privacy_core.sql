-- Privacy core: the requests data subjects make (and their one-month deadline), restriction
-- of processing, objections to legitimate-interest purposes and consents, each with its
-- history. These rows are about one user each (not tenant rows): they carry no row-level
-- security, like the identity tables, and no foreign key to users, because the record of
-- a request must outlive the account it concerns (erasure anonymises it instead).

-- Every request of a data subject (GDPR Art. 15-21): what was asked, by whom, when it is
-- due (one calendar month after receipt, Art. 12(3)) and how it ended.
create table privacy_requests (
  id text primary key,
  type text not null check (type in ('access', 'portability', 'erasure', 'rectification', 'restriction', 'objection')),
  user_id text not null,
  -- The workspace the request is about, when it is about one (a workspace export or deletion).
  workspace_id text,
  status text not null check (status in ('received', 'in_progress', 'completed', 'rejected', 'cancelled')),
  -- What the subject asked for, in their words (rectification); never secrets.
  details text check (details is null or length(details) <= 4000),
  -- How it ended (an operator's note, or what Berth did).
  outcome text check (outcome is null or length(outcome) <= 4000),
  received_at timestamptz not null,
  due_at timestamptz not null,
  completed_at timestamptz,
  -- When the operators were told it is overdue (claimed before the mail goes: once per request).
  overdue_alerted_at timestamptz,
  updated_at timestamptz not null,
  check (due_at > received_at),
  check ((status in ('received', 'in_progress')) = (completed_at is null))
);
-- One open request of a type per subject (and workspace): a second one is refused (request_pending).
create unique index privacy_requests_open_idx
  on privacy_requests (user_id, type, coalesce(workspace_id, ''))
  where status in ('received', 'in_progress');
create index privacy_requests_user_idx on privacy_requests (user_id, received_at desc);
create index privacy_requests_due_idx on privacy_requests (due_at) where status in ('received', 'in_progress');
create index privacy_requests_status_idx on privacy_requests (status, received_at desc);

-- Restriction of processing (Art. 18): while a row has no lifted_at, the gateway refuses
-- the user's API keys and agents do not run for them. Lifted rows are the history.
create table privacy_restrictions (
  id text primary key,
  user_id text not null,
  restricted_at timestamptz not null,
  lifted_at timestamptz,
  check (lifted_at is null or lifted_at >= restricted_at)
);
create unique index privacy_restrictions_active_idx on privacy_restrictions (user_id) where lifted_at is null;
create index privacy_restrictions_user_idx on privacy_restrictions (user_id, restricted_at desc);

-- Objections (Art. 21) to processing based on legitimate interest, per named purpose: each
-- row is one change (objected, or the objection withdrawn); the latest row is the state.
create table privacy_objections (
  id text primary key,
  user_id text not null,
  purpose text not null check (purpose ~ '^[a-z][a-z0-9_]{0,63}$'),
  objected boolean not null,
  at timestamptz not null
);
create index privacy_objections_user_idx on privacy_objections (user_id, purpose, at desc, id desc);

-- Consents (Art. 7), per purpose: each row is one change (given with the version of the
-- text the user saw, or withdrawn); the latest row is the state.
create table privacy_consents (
  id text primary key,
  user_id text not null,
  purpose text not null check (purpose ~ '^[a-z][a-z0-9_]{0,63}$'),
  given boolean not null,
  text_version text check (text_version is null or length(text_version) between 1 and 64),
  at timestamptz not null,
  check (not given or text_version is not null)
);
create index privacy_consents_user_idx on privacy_consents (user_id, purpose, at desc, id desc);
