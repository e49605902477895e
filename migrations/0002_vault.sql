-- Vault: per-owner data keys (DEKs), each wrapped (AES-256-GCM) under a versioned
-- key-encryption key (KEK) that never enters the database. Not a tenant table: an owner is
-- a workspace or a user, and the vault reaches it only through system transactions.
-- Crypto-shredding clears wrapped_key and sets destroyed_at; the row stays as a tombstone so
-- ciphertexts naming it fail with "destroyed" rather than "unknown key".
create table vault_data_keys (
  id text primary key,
  owner_type text not null check (owner_type in ('user', 'workspace')),
  owner_id text not null,
  kek_version integer not null check (kek_version > 0),
  wrapped_key bytea,
  created_at timestamptz not null,
  rotated_at timestamptz,
  destroyed_at timestamptz,
  constraint vault_data_keys_material check ((wrapped_key is null) = (destroyed_at is not null))
);

-- One live data key per owner; a lazy first encrypt races on this index (on conflict do nothing).
create unique index vault_data_keys_owner_live on vault_data_keys (owner_type, owner_id) where destroyed_at is null;

-- Rotation walks the live keys still wrapped under an older KEK version.
create index vault_data_keys_kek_version on vault_data_keys (kek_version) where destroyed_at is null;
