-- Platform helpers shared by every module's migrations.

-- Turns on row-level security for a tenant table: rows are visible only inside a
-- transaction bound to their workspace (berth.workspace_id), or to system work that
-- explicitly switches the bypass on for its own transaction (berth.bypass_rls).
-- FORCE applies the policy to the table owner as well.
create or replace function berth_enable_tenant_rls(tbl regclass) returns void
language plpgsql as $$
begin
  execute format('alter table %s enable row level security', tbl);
  execute format('alter table %s force row level security', tbl);
  execute format(
    'create policy tenant_isolation on %s using ('
    || 'current_setting(''berth.bypass_rls'', true) = ''on'' '
    || 'or workspace_id = current_setting(''berth.workspace_id'', true))',
    tbl);
end $$;
