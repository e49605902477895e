-- Product analytics (legitimate interest, objection honoured): how often each account used
-- each feature on each UTC day. A feature is a stable name derived from the matched route
-- (`keys.create`, `gateway.chat`), never content and never an id. Rows of a user who
-- objects to `product_analytics` are deleted when they object; rows go after 13 months and
-- with the account (erasure deletes them; the foreign key also refuses counts written for an
-- account already erased).
create table feature_uses (
  user_id text not null references users(id) on delete cascade,
  day date not null,
  feature text not null check (feature ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$' and length(feature) <= 100),
  uses bigint not null check (uses > 0),
  primary key (user_id, day, feature)
);
-- Operators' totals read by day; retention deletes by day.
create index feature_uses_day_idx on feature_uses (day, feature);
