import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { SearchMode } from '../src/modules/knowledge/knowledge.schemas.ts';
import { BeirError, readBeir } from './retrieval-quality/beir.ts';
import { type Embedder, hashEmbedder, MODES, remoteEmbedder, runHarness } from './retrieval-quality/harness.ts';

/**
 * Retrieval quality of the knowledge module on a BEIR-format collection: nDCG@10 and
 * recall@100 of lexical, vector and hybrid search, through the real ingestion and search path
 * on an in-memory PGlite.
 *
 *   npm run bench:retrieval-quality                         the shipped corpus
 *   npm run bench:retrieval-quality -- ~/beir/scifact       any BEIR directory
 *     --text-search simple,cjk,english   knowledge bases to build (default simple)
 *     --modes lexical,hybrid             (default all three)
 *     --split dev                        qrels/<split>.tsv (default test)
 *
 * Embeddings: hash embeddings in process by default; a real OpenAI-compatible endpoint with
 * BERTH_EVAL_EMBEDDINGS_URL (API base, e.g. https://api.openai.com/v1), BERTH_EVAL_EMBEDDINGS_MODEL
 * and BERTH_EVAL_EMBEDDINGS_KEY.
 */

const SHIPPED = path.join(path.dirname(fileURLToPath(import.meta.url)), 'retrieval-quality', 'corpus');

function embedderFromEnv(env: NodeJS.ProcessEnv): Embedder {
  const url = env.BERTH_EVAL_EMBEDDINGS_URL;
  if (!url) return hashEmbedder();
  const model = env.BERTH_EVAL_EMBEDDINGS_MODEL;
  if (!model) throw new BeirError('BERTH_EVAL_EMBEDDINGS_URL is set: set BERTH_EVAL_EMBEDDINGS_MODEL too');
  return remoteEmbedder({ url, key: env.BERTH_EVAL_EMBEDDINGS_KEY, model });
}

function listOption<T extends string>(value: string | undefined, allowed: readonly T[] | null, fallback: readonly T[]) {
  if (value === undefined) return fallback;
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const item of items) {
    if (allowed && !allowed.includes(item as T))
      throw new BeirError(`unknown value ${item} (one of ${allowed.join(', ')})`);
  }
  return items as T[];
}

const pct = (x: number) => x.toFixed(4);

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      'text-search': { type: 'string' },
      modes: { type: 'string' },
      split: { type: 'string' },
    },
  });
  const dir = positionals[0] ?? SHIPPED;
  const textSearch = listOption(values['text-search'], null, ['simple']);
  const modes = listOption<SearchMode>(values.modes, MODES, MODES);
  const embedder = embedderFromEnv(process.env);
  const collection = readBeir(dir, values.split ? { split: values.split } : {});
  console.log(`Retrieval quality ${new Date().toISOString()}  Node ${process.version}`);
  console.log(
    `collection ${path.relative(process.cwd(), dir) || dir}: ${collection.documents.length} documents, ${collection.queries.length} judged queries (${collection.qrelsFile})`,
  );
  if (collection.unjudgedQueries > 0) {
    const n = collection.unjudgedQueries;
    console.log(`  ${n} ${n === 1 ? 'query' : 'queries'} without judgements: not run`);
  }
  if (collection.unknownDocuments > 0) {
    console.log(
      `  ${collection.unknownDocuments} judgements name documents not in the corpus: relevant and unfindable`,
    );
  }
  console.log(`embeddings: ${embedder.label}`);
  const bases = await runHarness(collection, {
    textSearch,
    modes,
    embedder,
    onProgress: (m) => console.error(m),
  });
  for (const base of bases) {
    console.log(
      `\ntext search ${base.textSearch}: ingested in ${(base.ingestMs / 1000).toFixed(1)} s, ${base.chunks} chunks` +
        (base.duplicates > 0 ? `, ${base.duplicates} documents with equal content` : '') +
        (base.failed.length > 0
          ? `, ${base.failed.length} failed (${[...new Set(base.failed.map((f) => f.code))].join(', ')})`
          : ''),
    );
    console.log('mode     nDCG@10  recall@100  queries  no result  time');
    for (const r of base.results) {
      console.log(
        `${r.mode.padEnd(8)} ${pct(r.ndcg10).padStart(7)}  ${pct(r.recall100).padStart(10)}  ${String(r.queries).padStart(7)}  ${String(r.empty).padStart(9)}  ${(r.ms / 1000).toFixed(2)} s (${(r.ms / Math.max(1, collection.queries.length)).toFixed(1)} ms/query)`,
      );
    }
  }
}

try {
  await main();
} catch (err) {
  if (!(err instanceof BeirError)) throw err;
  console.error(`bench:retrieval-quality: ${err.message}`);
  process.exitCode = 2;
}
