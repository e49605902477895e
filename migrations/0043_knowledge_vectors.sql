-- Knowledge: vector search, document metadata and reranking.
--
-- Each chunk of a knowledge base with an embeddings model carries its embedding (unit
-- length, so cosine similarity is the dot product) and its dimension count. Where the
-- pgvector extension is available (PGlite ships it; on server Postgres it is detected here)
-- the column is `vector`, with one partial HNSW index per common dimension count (an
-- expression index on the typed cast, the layout pgvector documents for mixed dimensions);
-- other dimension counts are searched exactly by pgvector's operators. Without pgvector the
-- column is `bytea` (little-endian float32) and Berth searches it exactly in process.
-- Either way the embedding lives in the chunk's row: deleting a document or a knowledge base
-- removes its vectors with its chunks.

alter table knowledge_bases
  add column embedding_dims integer check (embedding_dims is null or embedding_dims between 1 and 16000),
  -- A chat model that reorders the best results when a search asks for it; null = no reranking.
  add column rerank_model text check (rerank_model is null or char_length(rerank_model) between 1 and 200),
  -- Bumped whenever the knowledge base's embeddings change: what in-process exact search caches against.
  add column vector_generation bigint not null default 0;

-- Metadata given at upload (a flat JSON object), for search filters.
alter table knowledge_documents
  add column metadata jsonb not null default '{}'::jsonb check (jsonb_typeof(metadata) = 'object');
create index knowledge_documents_metadata on knowledge_documents using gin (metadata jsonb_path_ops);

alter table knowledge_chunks add column embedding_dims integer check (embedding_dims is null or embedding_dims between 1 and 16000);

do $$
declare
  d integer;
begin
  if exists (select 1 from pg_available_extensions where name = 'vector') then
    begin
      create extension if not exists vector;
    exception when insufficient_privilege then
      raise notice 'pgvector is installed but this role may not create the extension: exact search is used';
    end;
  end if;
  if exists (select 1 from pg_extension where extname = 'vector') then
    alter table knowledge_chunks add column embedding vector;
    foreach d in array array[256, 384, 512, 768, 1024, 1536] loop
      execute format(
        'create index knowledge_chunks_hnsw_%s on knowledge_chunks using hnsw ((embedding::vector(%s)) vector_cosine_ops) where embedding_dims = %s',
        d, d, d);
    end loop;
    -- Larger embeddings are indexed at half precision (HNSW indexes vector up to 2,000 dimensions).
    foreach d in array array[3072] loop
      execute format(
        'create index knowledge_chunks_hnsw_%s on knowledge_chunks using hnsw ((embedding::halfvec(%s)) halfvec_cosine_ops) where embedding_dims = %s',
        d, d, d);
    end loop;
  else
    alter table knowledge_chunks add column embedding bytea;
  end if;
end $$;

alter table knowledge_chunks
  add constraint knowledge_chunks_embedding_dims check ((embedding is null) = (embedding_dims is null));
