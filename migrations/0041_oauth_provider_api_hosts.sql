-- The API hosts of an OAuth provider: where agent tools may send its access tokens
-- (`{{connection.NAME}}` in a custom HTTP tool's headers). A host name, or `*.domain` for
-- its sub-domains. Providers configured before this change have none: their tokens go
-- nowhere until an admin declares the provider's API hosts.
alter table oauth_providers
  add column api_hosts text[] not null default '{}'
    check (cardinality(api_hosts) <= 50);
