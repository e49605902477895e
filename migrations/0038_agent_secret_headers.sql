-- Workspace secrets travel only in the request headers they are declared for (never in a
-- URL or a body, where a service could show them back to whoever wrote the tool). Secrets
-- set before this change keep working where they were meant to: in Authorization.
alter table agent_secrets
  add column allowed_headers text[] not null default '{authorization}'
    check (cardinality(allowed_headers) between 1 and 20);
