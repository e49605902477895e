-- Usage events are written on every gateway call, so each row's cost counts. The per-row
-- foreign key check (a locking lookup of the workspace per row) and a second unique index
-- (on request_id) cost about as much as the rest of the insert. Replays are deduplicated
-- on the event id instead (the journal keeps it), and the batch insert locks each
-- workspace it names once (FOR KEY SHARE) and skips rows of workspaces that are gone;
-- deleting a workspace deletes its usage events in the same transaction.
alter table usage_events drop constraint usage_events_workspace_id_fkey;
alter table usage_events drop constraint usage_events_request_id_key;
