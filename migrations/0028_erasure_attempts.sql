-- Erasure that survives its own failures, and a closed account an operator cannot reopen by mistake.

-- A deletion whose erasure failed is retried with a backoff (1, 2, 4 ... up to 24 hours
-- after its last failure) and goes after the other due deletions, so one account that
-- cannot be erased never holds up the others. The operators are mailed once per failing
-- deletion (claimed through failure_alerted_at before the mail goes).
alter table account_deletions
  add column attempts integer not null default 0 check (attempts >= 0),
  add column last_error_at timestamptz,
  add column failure_alerted_at timestamptz,
  add check ((attempts = 0) = (last_error_at is null));

-- 'closing': closed by its owner's deletion request (no sign-in, erased after the grace
-- period). Only the owner's cancel link reopens it; 'disabled' stays an operator's ban,
-- which cancelling a deletion never lifts.
alter table users drop constraint users_status_check;
alter table users add constraint users_status_check check (status in ('active', 'disabled', 'closing'));
