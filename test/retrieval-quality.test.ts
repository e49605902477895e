import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BeirError, readBeir } from '../bench/retrieval-quality/beir.ts';
import { type BaseResult, remoteEmbedder, runHarness } from '../bench/retrieval-quality/harness.ts';
import { evaluate, ndcgAt, recallAt } from '../bench/retrieval-quality/metrics.ts';
import { type FakeOpenAi, startFakeOpenAi } from './fakes/openai-upstream.ts';
import { createTestDb, type TestDb } from './helpers/db.ts';

// The harness of bench/retrieval-quality.ts (bench/ is outside the pglite project's include,
// so its test lives here): metrics on hand-computed cases, the BEIR reader's errors, and one
// run of the shipped corpus through the real knowledge service with hash embeddings.

const SHIPPED = path.resolve(import.meta.dirname, '../bench/retrieval-quality/corpus');
const CJK_QUERIES = ['q29', 'q30', 'q31', 'q32'];

const judged = (o: Record<string, number>) => new Map(Object.entries(o));

describe('happy', () => {
  describe('metrics', () => {
    it('nDCG@10 uses linear gains, a log2 discount and the ideal ranking of the qrels', () => {
      // DCG = 2/log2(2) + 0 + 1/log2(4) = 2.5; IDCG = 2/log2(2) + 1/log2(3) = 2.63093
      expect(ndcgAt(['d1', 'd9', 'd2'], judged({ d1: 2, d2: 1 }), 10)).toBeCloseTo(0.950234, 5);
      // DCG = 1 + 3/log2(3) = 2.89279; IDCG = 3 + 1/log2(3) = 3.63093
      expect(ndcgAt(['a', 'b'], judged({ a: 1, b: 3 }), 10)).toBeCloseTo(0.796708, 5);
      expect(ndcgAt(['b', 'a'], judged({ a: 1, b: 3 }), 10)).toBe(1);
    });

    it('nDCG@10 looks at 10 ranks, and its ideal at the 10 best judgements only', () => {
      const twelve = judged(Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`d${i}`, 1])));
      expect(
        ndcgAt(
          Array.from({ length: 12 }, (_, i) => `d${i}`),
          twelve,
          10,
        ),
      ).toBe(1);
      const late = [...Array.from({ length: 10 }, (_, i) => `x${i}`), 'd1'];
      expect(ndcgAt(late, judged({ d1: 2 }), 10)).toBe(0);
      expect(recallAt(late, judged({ d1: 2 }), 100)).toBe(1);
    });

    it('a judgement of 0 or below gives no gain and is not counted as relevant', () => {
      const j = judged({ a: 1, z: 0, n: -1 });
      expect(ndcgAt(['z', 'n', 'a'], j, 10)).toBeCloseTo(1 / Math.log2(4), 10);
      expect(recallAt(['z', 'n'], j, 100)).toBe(0);
      expect(recallAt(['a'], j, 100)).toBe(1);
    });

    it('recall@k is the share of the relevant documents in the first k; a repeated id counts once, at its first rank', () => {
      expect(recallAt(['a', 'x', 'b'], judged({ a: 1, b: 2, c: 1 }), 2)).toBeCloseTo(1 / 3, 10);
      expect(recallAt(['a', 'a', 'b'], judged({ a: 1, b: 2 }), 2)).toBe(1);
      expect(ndcgAt(['a', 'a', 'b'], judged({ a: 1, b: 1 }), 10)).toBe(1);
    });

    it('averages over the queries with a relevant document; a query without results scores 0', () => {
      const qrels = new Map([
        ['q1', judged({ d1: 1 })],
        ['q2', judged({ d2: 1 })],
        ['q3', judged({ d3: 0 })],
      ]);
      expect(evaluate(new Map([['q1', ['d1']]]), qrels)).toEqual({ ndcg10: 0.5, recall100: 0.5, queries: 2 });
    });
  });

  it('reads the shipped corpus; a query without judgements is not evaluated', () => {
    const c = readBeir(SHIPPED);
    expect(c.qrelsFile).toBe(path.join('qrels', 'test.tsv'));
    expect(c.documents.length).toBeGreaterThanOrEqual(60);
    expect(c.queries.map((q) => q.id)).not.toContain('q99');
    expect(c.unjudgedQueries).toBe(1);
    expect(c.unknownDocuments).toBe(0);
    expect(c.qrels.get('q01')).toEqual(judged({ d01: 2, d02: 2, d03: 1 }));
  });

  describe('the shipped corpus through the knowledge service', () => {
    let t: TestDb;
    let fake: FakeOpenAi;
    let bases: BaseResult[];
    const corpus = readBeir(SHIPPED);
    const evaluated = [...corpus.qrels.values()].filter((j) => [...j.values()].some((g) => g > 0)).length;

    beforeAll(async () => {
      t = await createTestDb();
      fake = await startFakeOpenAi();
      bases = await runHarness(corpus, { db: t.db, textSearch: ['simple', 'cjk'] });
    }, 120_000);

    afterAll(async () => {
      await fake?.close();
      await t?.drop();
    });

    const result = (textSearch: string, mode: string) => {
      const r = bases.find((b) => b.textSearch === textSearch)?.results.find((x) => x.mode === mode);
      if (!r) throw new Error(`no result for ${textSearch} ${mode}`);
      return r;
    };

    it('ingests every document and scores every judged query in each mode', () => {
      for (const base of bases) {
        expect(base.failed).toEqual([]);
        expect(base.chunks).toBeGreaterThanOrEqual(corpus.documents.length);
        expect(base.results.map((r) => r.mode)).toEqual(['lexical', 'vector', 'hybrid']);
        for (const r of base.results) {
          expect(r.queries).toBe(evaluated);
          expect(r.ndcg10).toBeGreaterThan(0);
          expect(r.ndcg10).toBeLessThanOrEqual(1);
          expect(r.recall100).toBeGreaterThan(0);
          expect(r.recall100).toBeLessThanOrEqual(1);
          for (const ranking of r.rankings.values()) {
            expect(ranking.length).toBeLessThanOrEqual(100);
            expect(new Set(ranking).size).toBe(ranking.length);
          }
        }
      }
    });

    it('vector search on hash embeddings ranks well, and hybrid is near the better side', () => {
      for (const textSearch of ['simple', 'cjk']) {
        expect(result(textSearch, 'vector').ndcg10).toBeGreaterThan(0.6);
        const lexical = result(textSearch, 'lexical');
        const vector = result(textSearch, 'vector');
        const hybrid = result(textSearch, 'hybrid');
        // Fusion beats the weaker side and stays near the stronger one (on this corpus it beats
        // both with simple and english; with cjk, bigram lexical search alone is a little better).
        expect(hybrid.ndcg10).toBeGreaterThan(Math.min(lexical.ndcg10, vector.ndcg10));
        expect(hybrid.ndcg10).toBeGreaterThan(Math.max(lexical.ndcg10, vector.ndcg10) - 0.05);
        expect(hybrid.recall100).toBeGreaterThanOrEqual(lexical.recall100);
      }
    });

    it('the cjk setting finds the Chinese and Japanese documents that simple cannot', () => {
      for (const q of CJK_QUERIES) {
        expect(result('simple', 'lexical').rankings.get(q)).toEqual([]);
        const first = result('cjk', 'lexical').rankings.get(q)?.[0];
        expect(corpus.qrels.get(q)?.get(first ?? '')).toBe(2);
      }
      expect(result('cjk', 'lexical').ndcg10).toBeGreaterThan(result('simple', 'lexical').ndcg10);
    });

    // A question in natural language matches chunks with any of its words (all of them would
    // leave most of these queries without a result).
    it('lexical nDCG@10 reaches a sane floor on this corpus', () => {
      for (const textSearch of ['simple', 'cjk']) {
        expect(result(textSearch, 'lexical').ndcg10).toBeGreaterThan(0.6);
      }
    });

    it('embeds through an OpenAI-compatible endpoint when one is configured', async () => {
      const embedder = remoteEmbedder({ url: fake.baseUrl, key: 'sk-eval', model: 'text-embedding-3-small' });
      const [base] = await runHarness(corpus, { db: t.db, embedder, modes: ['vector'] });
      expect(base?.failed).toEqual([]);
      expect(base?.results[0]?.ndcg10).toBeGreaterThan(0.6);
      const calls = fake.received.filter((r) => r.path.endsWith('/embeddings'));
      expect(calls.length).toBeGreaterThan(0);
      expect(calls[0]?.headers.authorization).toBe('Bearer sk-eval');
      expect(calls[0]?.body?.model).toBe('text-embedding-3-small');
    });
  });
});

describe('errors', () => {
  let dir: string;
  const write = (file: string, text: string) => {
    mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    writeFileSync(path.join(dir, file), text);
  };
  const good = {
    corpus: '{"_id":"d1","title":"T","text":"one"}\n{"_id":"d2","title":"","text":"two"}\n',
    queries: '{"_id":"q1","text":"one"}\n',
    qrels: 'query-id\tcorpus-id\tscore\nq1\td1\t1\n',
  };
  const collection = (over: Partial<typeof good> = {}, qrelsFile = 'qrels/test.tsv') => {
    const files = { ...good, ...over };
    write('corpus.jsonl', files.corpus);
    write('queries.jsonl', files.queries);
    write(qrelsFile, files.qrels);
  };
  const fails = (message: RegExp) => {
    expect(() => readBeir(dir)).toThrow(BeirError);
    expect(() => readBeir(dir)).toThrow(message);
  };

  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'berth-beir-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const reset = () => {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
  };

  it('accepts qrels.tsv at the top level', () => {
    reset();
    collection({}, 'qrels.tsv');
    const c = readBeir(dir);
    expect(c.qrelsFile).toBe('qrels.tsv');
    expect(c.documents).toEqual([
      { id: 'd1', title: 'T', text: 'one' },
      { id: 'd2', title: '', text: 'two' },
    ]);
  });

  it('refuses a directory that is missing, or has no judgements, or no corpus', () => {
    expect(() => readBeir(path.join(dir, 'nowhere'))).toThrow(/not a directory/);
    reset();
    write('corpus.jsonl', good.corpus);
    write('queries.jsonl', good.queries);
    fails(/no judgements: expected qrels\/test.tsv or qrels.tsv/);
    reset();
    write('queries.jsonl', good.queries);
    write('qrels.tsv', good.qrels);
    fails(/corpus.jsonl: missing/);
  });

  it.each([
    ['a line that is not JSON', { corpus: '{"_id":"d1","text":"x"}\nnot json\n' }, /corpus.jsonl:2: not a JSON object/],
    [
      'a document without _id',
      { corpus: '{"title":"x","text":"y"}\n' },
      /corpus.jsonl:1: "_id" must be a non-empty string/,
    ],
    ['a document without text', { corpus: '{"_id":"d1","title":"x"}\n' }, /corpus.jsonl:1: "text" is missing/],
    [
      'a duplicate document id',
      { corpus: `${good.corpus}{"_id":"d1","text":"z"}\n` },
      /corpus.jsonl:3: duplicate _id "d1"/,
    ],
    ['an empty document', { corpus: '{"_id":"d1","title":" ","text":""}\n' }, /neither title nor text/],
    ['an empty query', { queries: '{"_id":"q1","text":"  "}\n' }, /queries.jsonl:1: query q1 has an empty text/],
    ['qrels without the header', { qrels: 'q1\td1\t1\n' }, /test.tsv:1: expected the header/],
    [
      'a qrels line of two columns',
      { qrels: 'query-id\tcorpus-id\tscore\nq1 d1\t1\n' },
      /test.tsv:2: expected 3 tab-separated columns, got 2/,
    ],
    [
      'a score that is not an integer',
      { qrels: 'query-id\tcorpus-id\tscore\nq1\td1\thigh\n' },
      /test.tsv:2: score "high" is not an integer/,
    ],
    [
      'a pair judged twice',
      { qrels: 'query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t2\n' },
      /test.tsv:3: q1 judges d1 twice/,
    ],
    [
      'a judged query missing from queries.jsonl',
      { qrels: 'query-id\tcorpus-id\tscore\nq7\td1\t1\n' },
      /1 judged query is not in queries.jsonl \(q7\)/,
    ],
  ])('refuses %s', (_name, over, message) => {
    reset();
    collection(over);
    fails(message);
  });

  it('counts judgements of documents the corpus does not have', () => {
    reset();
    collection({ qrels: 'query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td404\t1\n' });
    expect(readBeir(dir).unknownDocuments).toBe(1);
  });
});
