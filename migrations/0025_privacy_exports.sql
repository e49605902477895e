-- Exports of personal data (GDPR Art. 15 access and Art. 20 portability): a user's own
-- data, or a workspace's for its owner. A job builds the archive (JSON, gzip-compressed),
-- stores it encrypted by the vault under the requester's data key, and mails a single-use
-- link; the token is kept only as its SHA-256. The row, archive included, is deleted 7 days
-- after the archive was built or the build failed (the `privacy.exports-expire` job). These rows belong to a user, not to a tenant: like the identity
-- tables they carry no row-level security (a workspace export names its workspace).
create table privacy_exports (
  id text primary key,
  kind text not null check (kind in ('user', 'workspace')),
  -- Who asked, and whose data it is (for a workspace export: the owner who asked).
  user_id text not null,
  workspace_id text,
  -- The privacy request that tracks it (privacy_requests.id).
  request_id text,
  status text not null check (status in ('pending', 'building', 'ready', 'downloaded', 'failed')),
  -- SHA-256 (hex) of the download link's token, set when the archive is ready.
  token_hash text unique,
  archive_ciphertext bytea,
  -- Size of the archive's JSON before compression, and how many rows it holds.
  archive_bytes bigint,
  row_count integer,
  created_at timestamptz not null,
  built_at timestamptz,
  -- The link stops working and the row is deleted then (built_at + 7 days).
  expires_at timestamptz,
  -- When the link was mailed (a retry after a failed delivery mails a new one).
  link_sent_at timestamptz,
  downloaded_at timestamptz,
  check ((kind = 'workspace') = (workspace_id is not null)),
  check (status not in ('ready', 'downloaded') or (built_at is not null and expires_at is not null and token_hash is not null)),
  check (status <> 'downloaded' or (downloaded_at is not null and archive_ciphertext is null))
);
-- One export of the same data in preparation at a time: a second request is refused (export_pending).
create unique index privacy_exports_pending_idx
  on privacy_exports (user_id, kind, coalesce(workspace_id, ''))
  where status in ('pending', 'building');
create index privacy_exports_user_idx on privacy_exports (user_id, created_at desc);
create index privacy_exports_expiry_idx on privacy_exports (expires_at) where expires_at is not null;
