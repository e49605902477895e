-- Export and erasure find the rows naming a person by email address ignoring case
-- (`lower(column) = lower(address)`), so both reach the same rows whatever casing a message
-- or an older row was written with. Held mail is found through an index on the lowered
-- recipient, which replaces the exact-match index of 0030 (nothing else reads it). The
-- outbox is small (mail goes when its link expires), so the build holds its writes only
-- briefly. Invitations get no such index: they are a tenant table under row-level
-- security, where Postgres uses an index on `lower(email)` only for roles that bypass the
-- policies (`lower` is not leakproof), and the table stays small (rows go when answered or
-- expired), so a scan serves.
create index email_outbox_to_lower_idx on email_outbox (lower(to_address));
drop index if exists email_outbox_to_idx;
