-- Invitation emails leave after the invitation commits, through a durable job, so a mail
-- failure can neither fail the request nor lose the email. The job carries ids only; the
-- token it must put in the link waits here, encrypted by the vault under the workspace's
-- data key (AES-256-GCM, bound to this invitation), and is cleared once the email is sent
-- or the invitation is closed. Deleting the workspace shreds that key with everything else.
alter table invitations add column token_ciphertext bytea;
alter table invitations add column email_sent_at timestamptz;

-- The sweep that re-queues invitations whose email is still waiting.
create index invitations_unsent_idx on invitations (created_at) where token_ciphertext is not null;
