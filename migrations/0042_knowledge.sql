-- Knowledge: knowledge bases of a workspace, the documents uploaded to them (the original
-- file as vault ciphertext under the workspace's data key) and the chunks their text is cut
-- into, each with a stored tsvector for lexical search. Deleting a workspace, a knowledge
-- base or a document removes everything under it (foreign keys cascade).

create table knowledge_bases (
  id text primary key,
  workspace_id text not null references workspaces(id) on delete cascade,
  name text not null check (char_length(name) between 1 and 100),
  -- A gateway embeddings model for vector search; null = lexical search only.
  embedding_model text check (embedding_model is null or char_length(embedding_model) between 1 and 200),
  chunk_target_tokens integer not null check (chunk_target_tokens between 64 and 8192),
  chunk_overlap_tokens integer not null check (chunk_overlap_tokens >= 0 and chunk_overlap_tokens * 2 <= chunk_target_tokens),
  -- 'cjk' (character bigrams under the simple configuration) or a text search configuration name.
  text_search text not null check (text_search ~ '^[a-z_]{1,63}$'),
  created_by text references users(id) on delete set null,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  unique (workspace_id, id)
);
create unique index knowledge_bases_name on knowledge_bases (workspace_id, lower(name));
select berth_enable_tenant_rls('knowledge_bases');

create table knowledge_documents (
  id text primary key,
  workspace_id text not null references workspaces(id) on delete cascade,
  knowledge_base_id text not null,
  title text not null check (char_length(title) between 1 and 500),
  filename text not null check (char_length(filename) between 1 and 255),
  -- The MIME type the uploader declared (the real type is found from the content).
  content_type text check (content_type is null or char_length(content_type) <= 255),
  -- The kind the parser found (text, markdown, html, pdf, docx, csv, json, code), once parsed.
  kind text,
  size_bytes integer not null check (size_bytes >= 0),
  -- SHA-256 of the original bytes: the same content uploaded twice to one knowledge base is skipped.
  sha256 bytea not null check (octet_length(sha256) = 32),
  status text not null check (status in ('queued', 'processing', 'ready', 'failed')),
  progress smallint not null default 0 check (progress between 0 and 100),
  failure_code text,
  failure_reason text check (failure_reason is null or char_length(failure_reason) <= 500),
  chunk_count integer not null default 0,
  original_ciphertext bytea not null,
  created_by text references users(id) on delete set null,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  unique (knowledge_base_id, sha256),
  unique (workspace_id, id),
  foreign key (workspace_id, knowledge_base_id) references knowledge_bases(workspace_id, id) on delete cascade,
  check ((status = 'failed') = (failure_code is not null))
);
create index knowledge_documents_kb on knowledge_documents (knowledge_base_id, created_at);
-- Erasing an account sets its uploads' created_by to null: found through this index.
create index knowledge_documents_created_by on knowledge_documents (created_by) where created_by is not null;
select berth_enable_tenant_rls('knowledge_documents');

create table knowledge_chunks (
  id text primary key,
  workspace_id text not null references workspaces(id) on delete cascade,
  knowledge_base_id text not null,
  document_id text not null,
  chunk_index integer not null check (chunk_index >= 0),
  text text not null,
  heading_path text[] not null default '{}',
  -- Offsets into the document's parsed text: text = parsed.slice(start_offset, end_offset).
  start_offset integer not null check (start_offset >= 0),
  end_offset integer not null check (end_offset > start_offset),
  token_count integer not null check (token_count >= 0),
  -- What the tsvector is built from: the configuration, and the text when it differs from
  -- `text` (CJK runs written as overlapping character bigrams); null = `text` itself.
  search_config regconfig not null,
  search_text text,
  tsv tsvector generated always as (to_tsvector(search_config, coalesce(search_text, text))) stored,
  unique (document_id, chunk_index),
  foreign key (workspace_id, knowledge_base_id) references knowledge_bases(workspace_id, id) on delete cascade,
  foreign key (workspace_id, document_id) references knowledge_documents(workspace_id, id) on delete cascade
);
create index knowledge_chunks_tsv on knowledge_chunks using gin (tsv);
create index knowledge_chunks_kb on knowledge_chunks (knowledge_base_id);
select berth_enable_tenant_rls('knowledge_chunks');
