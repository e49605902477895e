-- Notifications: the email outbox, used when no SMTP server is configured. Operators read
-- it with `berth mail outbox`; rows are deleted after 30 days.

create table email_outbox (
  id text primary key,
  to_address text not null,
  subject text not null,
  body_text text not null,
  tag text not null,
  created_at timestamptz not null
);
create index email_outbox_created_idx on email_outbox (created_at);
