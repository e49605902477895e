-- Row-level security for the privacy tables that name a workspace on some rows (a
-- workspace's export, a request about a workspace) and none on others (a person's own).
-- Their services work across workspaces (system work); a workspace transaction sees only
-- its own workspace's rows and never a person's own.
alter table privacy_requests enable row level security;
alter table privacy_requests force row level security;
create policy privacy_requests_tenant on privacy_requests using (
  current_setting('berth.bypass_rls', true) = 'on'
  or workspace_id = current_setting('berth.workspace_id', true)
);

alter table privacy_exports enable row level security;
alter table privacy_exports force row level security;
create policy privacy_exports_tenant on privacy_exports using (
  current_setting('berth.bypass_rls', true) = 'on'
  or workspace_id = current_setting('berth.workspace_id', true)
);
