-- OAuth connections, review fixes:
-- - a name agent definitions use (`connections: ["github"]`): by default the provider's,
--   unique per user and workspace among active connections, and among the workspace's
--   active shared ones (so a name picks one shared connection);
-- - the browser that started an authorization: the SHA-256 of a random nonce Berth set as
--   a cookie at `authorize` (null: a flow started with an API key, which only the starter
--   signed in can finish);
-- - a refresh lease: who is refreshing the connection's tokens and until when, so the
--   token endpoint is called outside any transaction and still once across workers.

alter table oauth_authorizations
  add column connection_name text check (connection_name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  add column browser_nonce_hash text check (browser_nonce_hash ~ '^[0-9a-f]{64}$');

alter table oauth_connections
  add column name text check (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  add column refresh_lease_id text check (char_length(refresh_lease_id) between 1 and 64),
  add column refresh_lease_until timestamptz,
  add constraint oauth_connections_lease_check check ((refresh_lease_id is null) = (refresh_lease_until is null));

-- Existing connections take their provider's name; a user's second (third...) connection to
-- one provider gets a numbered one.
update oauth_connections c
set name = left(n.provider_name, 56) || case when n.rank = 1 then '' else '-' || n.rank::text end
from (
  select c2.id, p.name as provider_name,
         row_number() over (partition by c2.workspace_id, c2.user_id, c2.provider_id order by c2.created_at, c2.id) as rank
  from oauth_connections c2
  join oauth_providers p on p.id = c2.provider_id
) n
where n.id = c.id;

-- Of several shared connections with one name, only the oldest stays shared.
update oauth_connections c
set shared = false
where c.shared and c.status = 'active' and exists (
  select 1 from oauth_connections o
  where o.workspace_id = c.workspace_id and o.name = c.name and o.shared and o.status = 'active'
    and (o.created_at, o.id) < (c.created_at, c.id)
);

alter table oauth_connections alter column name set not null;

create unique index oauth_connections_name_idx
  on oauth_connections (workspace_id, user_id, name) where status = 'active';
create unique index oauth_connections_shared_name_idx
  on oauth_connections (workspace_id, name) where shared and status = 'active';
