-- Identity and notifications hardening.
--
-- 1. login_failures becomes the table of every throttling counter: failed sign-ins per
--    account and per IP as before, plus sign-ups per IP and email requests (verification,
--    password reset) per address and per IP. Rows hold only keyed hashes.
alter table login_failures drop constraint if exists login_failures_kind_check;
alter table login_failures
  add constraint login_failures_kind_check
  check (kind in ('account', 'ip', 'signup_ip', 'email_address', 'email_ip'));

-- 2. The email outbox keeps message bodies only as vault ciphertext (they carry single-use
--    links), and each row only as long as the link in it lives (expires_at). Rows written
--    before this migration hold bodies in clear: they are deleted, not converted.
delete from email_outbox;
alter table email_outbox drop column body_text;
alter table email_outbox add column body_ciphertext bytea not null;
alter table email_outbox add column user_id text;
alter table email_outbox add column ref text;
alter table email_outbox add column expires_at timestamptz not null;
create index email_outbox_expires_idx on email_outbox (expires_at);
create index email_outbox_ref_idx on email_outbox (ref) where ref is not null;
