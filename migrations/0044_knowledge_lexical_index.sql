-- Lexical knowledge search under row-level security.
--
-- Postgres uses a condition of a query as an index condition on a table with row-level
-- security only when its function is leakproof (it could otherwise see rows the policy
-- hides). The full-text match `tsvector @@ tsquery` (ts_match_vq) is not marked leakproof,
-- so as the application role every lexical search scanned all the chunks of its knowledge
-- base instead of using the GIN index. The match reads its two arguments and answers true or
-- false: it raises no error that depends on the row, so it is marked leakproof here. That
-- needs a superuser; a migrating role that is not one leaves it as it is (searches stay
-- correct, only slower) and the operator can run the statement once as a superuser
-- (docs/operations/postgres.md).

do $$
begin
  alter function pg_catalog.ts_match_vq(tsvector, tsquery) leakproof;
exception when insufficient_privilege then
  raise notice 'ts_match_vq could not be marked leakproof (not a superuser): lexical search will not use its index under row-level security';
end $$;

-- How many chunks of each knowledge base contain each lexeme (kept by ingestion and by the
-- deletion of a document, in their transactions): lexical search drops the words of a
-- question that are in so many chunks that they would only make it slow (like stop words a
-- language configuration does not know), and never looks across workspaces to decide it.
create table knowledge_lexemes (
  workspace_id text not null references workspaces(id) on delete cascade,
  knowledge_base_id text not null,
  lexeme text not null,
  chunks integer not null check (chunks > 0),
  primary key (knowledge_base_id, lexeme),
  foreign key (workspace_id, knowledge_base_id) references knowledge_bases(workspace_id, id) on delete cascade
);
select berth_enable_tenant_rls('knowledge_lexemes');
