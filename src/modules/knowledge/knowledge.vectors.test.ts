import { describe, expect, it } from 'vitest';
import type { Database } from '../../platform/db/db.ts';
import { ExactVectors, type Loaded, loaded, unitVector, type VectorQuery } from './knowledge.vectors.ts';

/** A seeded pseudo-random generator (mulberry32): the same vectors on every run. */
function random(seed: number) {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
  };
}

const DIMS = 64;
const tx = {} as Database;

function corpus(n: number, seed: number) {
  const next = random(seed);
  const data = new Float32Array(n * DIMS);
  const ids: string[] = [];
  const documents: string[] = [];
  for (let i = 0; i < n; i++) {
    data.set(unitVector(Array.from({ length: DIMS }, next)), i * DIMS);
    ids.push(`c${String(i).padStart(5, '0')}`);
    documents.push(`d${i % 10}`);
  }
  return { data, ids, documents };
}

/** Every chunk ranked by dot product, ties by id: what exact search must answer. */
function bruteForce(c: ReturnType<typeof corpus>, query: Float32Array, only?: Set<string>) {
  const scored = c.ids.flatMap((id, i) => {
    if (only && !only.has(c.documents[i] as string)) return [];
    let s = 0;
    for (let j = 0; j < DIMS; j++) s += (c.data[i * DIMS + j] as number) * (query[j] as number);
    return [{ chunkId: id, score: s }];
  });
  return scored.sort((a, b) => b.score - a.score || (a.chunkId < b.chunkId ? -1 : 1));
}

function index(budgetBytes: number, sets: Record<string, ReturnType<typeof corpus>>, loads: string[] = []) {
  return new ExactVectors(budgetBytes, async (_tx, q): Promise<Loaded> => {
    loads.push(`${q.kbId}@${q.generation}`);
    const c = sets[q.kbId] as ReturnType<typeof corpus>;
    return loaded(q.generation, q.dims, c.ids, c.documents, c.data);
  });
}

const query = (kbId: string, q: Float32Array, extra: Partial<VectorQuery> = {}) => ({
  workspaceId: 'ws',
  kbId,
  dims: DIMS,
  query: q,
  limit: 10,
  generation: 1,
  ...extra,
});

describe('ExactVectors', () => {
  it('answers exactly the brute-force top k, with and without a document filter', async () => {
    const c = corpus(3000, 7);
    const vectors = index(1e9, { kb: c });
    const next = random(99);
    for (let round = 0; round < 20; round++) {
      const q = unitVector(Array.from({ length: DIMS }, next));
      const limit = 1 + (round % 3) * 49;
      const got = await vectors.search(tx, query('kb', q, { limit }));
      const want = bruteForce(c, q).slice(0, limit);
      expect(got.map((h) => h.chunkId)).toEqual(want.map((h) => h.chunkId));
      for (const [i, h] of got.entries()) expect(h.score).toBeCloseTo(want[i]?.score as number, 5);
      const only = new Set(['d3', 'd7']);
      const filtered = await vectors.search(tx, query('kb', q, { limit, documentIds: [...only] }));
      expect(filtered.map((h) => h.chunkId)).toEqual(
        bruteForce(c, q, only)
          .slice(0, limit)
          .map((h) => h.chunkId),
      );
    }
  });

  it('loads a knowledge base once per generation, and again when it changes', async () => {
    const loads: string[] = [];
    const vectors = index(1e9, { kb: corpus(100, 1) }, loads);
    const q = unitVector(Array.from({ length: DIMS }, random(2)));
    await vectors.search(tx, query('kb', q));
    await vectors.search(tx, query('kb', q));
    await vectors.search(tx, query('kb', q, { generation: 2 } as Partial<VectorQuery>));
    expect(loads).toEqual(['kb@1', 'kb@2']);
  });

  it('keeps within its memory budget, the least recently searched knowledge base leaving first', async () => {
    const loads: string[] = [];
    const sets = { a: corpus(100, 1), b: corpus(100, 2), c: corpus(100, 3), huge: corpus(1000, 4) };
    const one = loaded(1, DIMS, sets.a.ids, sets.a.documents, sets.a.data).bytes;
    const vectors = index(2 * one, sets, loads);
    const q = unitVector(Array.from({ length: DIMS }, random(5)));
    for (const kb of ['a', 'b', 'a', 'c', 'a', 'b']) await vectors.search(tx, query(kb, q));
    // c pushed out b (a was used more recently); b's return pushed out c.
    expect(loads).toEqual(['a@1', 'b@1', 'c@1', 'b@1']);
    expect(vectors.heldBytes).toBe(2 * one);
    // Larger than the whole budget: searched, never kept.
    await vectors.search(tx, query('huge', q));
    await vectors.search(tx, query('huge', q));
    expect(loads.filter((l) => l === 'huge@1')).toHaveLength(2);
    expect(vectors.heldBytes).toBe(2 * one);
  });
});
