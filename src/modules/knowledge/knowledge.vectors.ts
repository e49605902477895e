import { endianness } from 'node:os';
import { sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { DotIndex } from './knowledge.dot.ts';

/**
 * Vector storage and nearest-neighbour search of chunk embeddings.
 *
 * Where pgvector is installed (PGlite ships it; on server Postgres the migration detects it),
 * `knowledge_chunks.embedding` is a `vector` and Postgres answers: one partial HNSW index per
 * common dimension count (0043_knowledge_vectors.sql), pgvector's iterative scan so a filter
 * (one knowledge base, some documents) still yields the full count, and pgvector's exact
 * operators for dimension counts without an index.
 *
 * Without pgvector the column is `bytea` (little-endian float32) and `ExactVectors` searches
 * it exactly in this process: each knowledge base's vectors are loaded once into a
 * WebAssembly memory scanned with SIMD dot products (knowledge.dot.ts) and kept while the knowledge base's `vector_generation` (bumped by every change
 * of its embeddings, in the same transaction) is unchanged, so a replica never answers from
 * stale vectors. Every embedding is stored at unit length: cosine similarity is the dot product.
 */

export type VectorMode = 'pgvector' | 'exact';

/** One nearest neighbour: the chunk and its cosine similarity to the query. */
export type VectorHit = { chunkId: string; score: number };

export type VectorQuery = {
  workspaceId: string;
  kbId: string;
  dims: number;
  /** Unit length (see `unitVector`). */
  query: Float32Array;
  limit: number;
  /** Only these documents; undefined: every document of the knowledge base. */
  documentIds?: readonly string[] | undefined;
};

/** The largest dimension count pgvector indexes as `vector`; above it, `halfvec`. */
const HNSW_VECTOR_MAX_DIMS = 2000;

/** Which embedding column this database has (the migration chose it). */
export async function detectVectorMode(tx: Database): Promise<VectorMode> {
  const res = (await tx.execute(
    sql`select format_type(atttypid, null) as type from pg_attribute
        where attrelid = 'knowledge_chunks'::regclass and attname = 'embedding' and not attisdropped`,
  )) as unknown as { rows: Array<{ type: string }> };
  return res.rows[0]?.type === 'bytea' ? 'exact' : 'pgvector';
}

/** The vector scaled to unit length (a zero vector stays zero); non-finite values are refused. */
export function unitVector(values: readonly number[]): Float32Array {
  let sum = 0;
  for (const v of values) {
    if (!Number.isFinite(v)) throw new RangeError('an embedding holds a value that is not a finite number');
    sum += v * v;
  }
  const norm = Math.sqrt(sum);
  const out = new Float32Array(values.length);
  if (norm === 0) return out;
  for (let i = 0; i < values.length; i++) out[i] = (values[i] as number) / norm;
  return out;
}

const littleEndian = endianness() === 'LE';

/** The column value of an embedding: pgvector's text form, or little-endian float32 bytes. */
export function encodeEmbedding(mode: VectorMode, v: Float32Array): string | Buffer {
  if (mode === 'pgvector') return `[${Array.from(v).join(',')}]`;
  const buf = Buffer.alloc(v.length * 4);
  for (let i = 0; i < v.length; i++) buf.writeFloatLE(v[i] as number, i * 4);
  return buf;
}

/** pgvector's text form of a query vector, and the typed cast its HNSW index is built on. */
function typed(dims: number) {
  if (!Number.isInteger(dims) || dims < 1 || dims > 16000) throw new RangeError('bad dimension count');
  return sql.raw(dims <= HNSW_VECTOR_MAX_DIMS ? `vector(${dims})` : `halfvec(${dims})`);
}

/**
 * Nearest chunks by cosine similarity through pgvector, best first. The HNSW index answers
 * when one exists for the dimension count; `hnsw.iterative_scan` keeps scanning until the
 * filters leave `limit` rows (or the scan bound is reached).
 */
export async function searchPgvector(tx: Database, q: VectorQuery): Promise<VectorHit[]> {
  const type = typed(q.dims);
  const ef = Math.min(1000, Math.max(200, q.limit * 4));
  await tx.execute(sql`select set_config('hnsw.ef_search', ${String(ef)}, true)`);
  await tx.execute(sql`select set_config('hnsw.iterative_scan', 'relaxed_order', true)`);
  const vec = `[${Array.from(q.query).join(',')}]`;
  const distance = sql`(embedding::${type}) <=> (${vec}::${type})`;
  const docs = q.documentIds
    ? sql`and document_id in (${sql.join(
        q.documentIds.map((id) => sql`${id}`),
        sql`, `,
      )})`
    : sql``;
  const res = (await tx.execute(sql`
    select id, ${distance} as distance from knowledge_chunks
    where workspace_id = ${q.workspaceId} and knowledge_base_id = ${q.kbId}
      and embedding_dims = ${q.dims} ${docs}
    order by ${distance}
    limit ${q.limit}`)) as unknown as { rows: Array<{ id: string; distance: number | string }> };
  // relaxed_order may return neighbours slightly out of order: sort by the exact distance.
  return res.rows
    .map((r) => ({ chunkId: r.id, score: 1 - Number(r.distance) }))
    .sort((a, b) => b.score - a.score || (a.chunkId < b.chunkId ? -1 : 1));
}

/** A knowledge base's vectors as `ExactVectors` holds them. */
export type Loaded = {
  generation: number;
  dims: number;
  ids: string[];
  documents: string[];
  /** The ids.length vectors, in the same order. */
  index: DotIndex;
  bytes: number;
};

/**
 * Exact in-process search over `bytea` embeddings, cached per knowledge base against its
 * `vector_generation`, within a memory budget (least recently used knowledge bases leave
 * first; one larger than the whole budget is searched without being kept).
 */
export class ExactVectors {
  private readonly cache = new Map<string, Loaded>();
  private used = 0;

  /** `load` reads a knowledge base's vectors (the database's, unless a test gives its own). */
  constructor(
    private readonly budgetBytes: number,
    private readonly load: (tx: Database, q: VectorQuery & { generation: number }) => Promise<Loaded> = loadChunks,
  ) {}

  async search(tx: Database, q: VectorQuery & { generation: number }): Promise<VectorHit[]> {
    const key = `${q.workspaceId}:${q.kbId}`;
    let entry = this.cache.get(key);
    if (!entry || entry.generation !== q.generation || entry.dims !== q.dims) {
      if (entry) this.drop(key);
      entry = await this.load(tx, q);
      this.keep(key, entry);
    } else {
      // Most recently used last.
      this.cache.delete(key);
      this.cache.set(key, entry);
    }
    return topK(entry, q.query, q.limit, q.documentIds ? new Set(q.documentIds) : null);
  }

  /** Bytes of vectors held now. */
  get heldBytes(): number {
    return this.used;
  }

  private keep(key: string, entry: Loaded) {
    if (entry.bytes > this.budgetBytes) return;
    while (this.used + entry.bytes > this.budgetBytes) {
      const oldest = this.cache.keys().next().value;
      if (oldest === undefined) break;
      this.drop(oldest);
    }
    this.cache.set(key, entry);
    this.used += entry.bytes;
  }

  private drop(key: string) {
    const e = this.cache.get(key);
    if (!e) return;
    this.cache.delete(key);
    this.used -= e.bytes;
  }
}

async function loadChunks(tx: Database, q: VectorQuery & { generation: number }): Promise<Loaded> {
  const res = (await tx.execute(sql`
    select id, document_id, embedding from knowledge_chunks
    where workspace_id = ${q.workspaceId} and knowledge_base_id = ${q.kbId} and embedding_dims = ${q.dims}
    order by id`)) as unknown as { rows: Array<{ id: string; document_id: string; embedding: Buffer | Uint8Array }> };
  const n = res.rows.length;
  const index = new DotIndex(n, q.dims);
  const rowBytes = index.stride * 4;
  const view = new Uint8Array(index.vectors.buffer, index.vectors.byteOffset, n * rowBytes);
  const ids: string[] = new Array(n);
  const documents: string[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const row = res.rows[i] as (typeof res.rows)[number];
    ids[i] = row.id;
    documents[i] = row.document_id;
    const bytes = row.embedding;
    if (bytes.length !== q.dims * 4) throw new Error('an embedding has the wrong length for its dimension count');
    if (littleEndian) view.set(bytes, i * rowBytes);
    else {
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (let j = 0; j < q.dims; j++) index.vectors[i * index.stride + j] = dv.getFloat32(j * 4, true);
    }
  }
  return { generation: q.generation, dims: q.dims, ids, documents, index, bytes: index.bytes + n * 64 };
}

/** A `Loaded` of `data` (ids.length vectors of `dims` floats, one after another). */
export function loaded(
  generation: number,
  dims: number,
  ids: string[],
  documents: string[],
  data: Float32Array,
): Loaded {
  const index = new DotIndex(ids.length, dims);
  for (let i = 0; i < ids.length; i++) index.vectors.set(data.subarray(i * dims, (i + 1) * dims), i * index.stride);
  return { generation, dims, ids, documents, index, bytes: index.bytes + ids.length * 64 };
}

/** The `limit` best dot products, best first (ties by chunk id), through a bounded min-heap. */
function topK(e: Loaded, query: Float32Array, limit: number, only: Set<string> | null): VectorHit[] {
  const scores = e.index.scores(query);
  const heapScore = new Float64Array(limit);
  const heapIdx = new Int32Array(limit);
  let size = 0;
  for (let i = 0; i < e.ids.length; i++) {
    if (only && !only.has(e.documents[i] as string)) continue;
    const s = scores[i] as number;
    if (size < limit) {
      // Sift up.
      let k = size++;
      while (k > 0) {
        const p = (k - 1) >> 1;
        if ((heapScore[p] as number) <= s) break;
        heapScore[k] = heapScore[p] as number;
        heapIdx[k] = heapIdx[p] as number;
        k = p;
      }
      heapScore[k] = s;
      heapIdx[k] = i;
    } else if (s > (heapScore[0] as number)) {
      // Replace the smallest and sift down.
      let k = 0;
      for (;;) {
        const l = 2 * k + 1;
        if (l >= size) break;
        const r = l + 1;
        const c = r < size && (heapScore[r] as number) < (heapScore[l] as number) ? r : l;
        if ((heapScore[c] as number) >= s) break;
        heapScore[k] = heapScore[c] as number;
        heapIdx[k] = heapIdx[c] as number;
        k = c;
      }
      heapScore[k] = s;
      heapIdx[k] = i;
    }
  }
  const out: VectorHit[] = [];
  for (let k = 0; k < size; k++) {
    out.push({ chunkId: e.ids[heapIdx[k] as number] as string, score: heapScore[k] as number });
  }
  return out.sort((a, b) => b.score - a.score || (a.chunkId < b.chunkId ? -1 : 1));
}
