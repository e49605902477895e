-- Privacy documents: the sub-processor registry (with the owners' notices and objections),
-- the published privacy policy's version history, and the breach register (Art. 33).
--
-- Sub-processors, policy versions and breaches are platform records: no workspace owns a
-- row, operators and the public pages read them in system transactions. Objections belong
-- to the workspace whose owner made them (tenant table).

create table privacy_subprocessors (
  id text primary key,
  name text not null check (char_length(name) between 1 and 200),
  purpose text not null check (char_length(purpose) between 1 and 1000),
  -- Data map categories the sub-processor receives.
  data_categories text[] not null check (cardinality(data_categories) between 1 and 20),
  region text not null check (char_length(region) between 1 and 200),
  -- When owners were told (registration, on Berth's clock) and when it may start: the
  -- notice period is at least 30 days, checked by the service and again here.
  notice_at timestamptz not null,
  effective_at timestamptz not null check (effective_at >= notice_at + interval '720 hours'),
  -- The sub-processor this one replaces (retired when this one takes effect).
  replaces text references privacy_subprocessors(id),
  -- From when it is no longer used (retired, or replaced by a newer entry).
  retired_at timestamptz,
  -- Set once every workspace owner has been sent the notice; a sweep re-queues the rest.
  notices_done_at timestamptz,
  created_by text references users(id) on delete set null,
  created_at timestamptz not null
);
create index privacy_subprocessors_pending_idx on privacy_subprocessors (created_at) where notices_done_at is null;

-- One notice per sub-processor and owner, claimed before it is sent (a retried or second
-- worker finds the claim and sends nothing); sent_at once the mailer took it.
create table privacy_subprocessor_notices (
  subprocessor_id text not null references privacy_subprocessors(id) on delete cascade,
  user_id text not null references users(id) on delete cascade,
  claimed_at timestamptz not null,
  sent_at timestamptz,
  primary key (subprocessor_id, user_id)
);
create index privacy_subprocessor_notices_user_idx on privacy_subprocessor_notices (user_id);

create table privacy_subprocessor_objections (
  workspace_id text not null references workspaces(id) on delete cascade,
  subprocessor_id text not null references privacy_subprocessors(id) on delete cascade,
  user_id text references users(id) on delete set null,
  reason text check (char_length(reason) <= 2000),
  created_at timestamptz not null,
  primary key (workspace_id, subprocessor_id)
);
create index privacy_subprocessor_objections_sub_idx on privacy_subprocessor_objections (subprocessor_id, created_at);
select berth_enable_tenant_rls('privacy_subprocessor_objections');

-- Each published version of the privacy policy: the document as it was shown, its hash
-- (a new version is stored only when the content changes) and when it took effect.
create table privacy_policy_versions (
  version integer primary key check (version >= 1),
  content_hash text not null check (content_hash ~ '^[0-9a-f]{64}$'),
  content jsonb not null,
  effective_at timestamptz not null
);

create table privacy_breaches (
  id text primary key,
  description text not null check (char_length(description) between 1 and 5000),
  data_categories text[] not null check (cardinality(data_categories) between 1 and 20),
  subjects_count integer check (subjects_count >= 0),
  aware_at timestamptz not null,
  -- Art. 33(1): the supervisory authority is told within 72 hours of becoming aware.
  notify_deadline timestamptz not null check (notify_deadline = aware_at + interval '72 hours'),
  authority_notified_at timestamptz,
  subjects_notified_at timestamptz,
  measures text check (char_length(measures) <= 5000),
  created_by text references users(id) on delete set null,
  created_at timestamptz not null,
  updated_at timestamptz not null
);
create index privacy_breaches_aware_idx on privacy_breaches (aware_at);
