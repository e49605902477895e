/**
 * A synthetic, text-like corpus for the retrieval benchmark: made-up words with Zipf-like
 * frequencies (a few very common, a long tail of rare ones) and topics (sets of mid-frequency
 * words that cluster in the documents about them), so lexical queries have realistic
 * selectivity and a bag-of-words embedding finds the documents of a topic. Deterministic.
 */

/** mulberry32: a small seeded PRNG (deterministic corpus and queries from one seed). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ONSETS = ['b', 'c', 'd', 'f', 'g', 'h', 'k', 'l', 'm', 'n', 'p', 'r', 's', 't', 'v', 'z', 'br', 'st', 'tr', 'pl'];
const VOWELS = ['a', 'e', 'i', 'o', 'u', 'ai', 'ou'];

export type QueryKind = 'rare1' | 'topic2' | 'topic3' | 'mixed4' | 'common1';
export type Query = { kind: QueryKind; text: string };

export type Corpus = {
  vocabulary: string[];
  topics: string[][];
  /** A Markdown document of about `sections` sections. */
  document(i: number): { filename: string; text: string };
  queries(n: number): Query[];
};

export function syntheticCorpus(
  opts: { seed?: number; vocabulary?: number; topics?: number; topicWords?: number } = {},
): Corpus {
  const rand = rng(opts.seed ?? 42);
  const V = opts.vocabulary ?? 20_000;
  const T = opts.topics ?? 300;
  const perTopic = opts.topicWords ?? 25;
  const pick = <T>(xs: readonly T[], r = rand) => xs[Math.floor(r() * xs.length)] as T;

  const seen = new Set<string>();
  const vocabulary: string[] = [];
  while (vocabulary.length < V) {
    const syllables = 1 + Math.floor(rand() * 3) + (vocabulary.length > 200 ? 1 : 0);
    let w = '';
    for (let s = 0; s < syllables; s++) w += pick(ONSETS) + pick(VOWELS);
    if (!seen.has(w)) {
      seen.add(w);
      vocabulary.push(w);
    }
  }
  // Zipf (s = 1): rank r has weight 1 / (r + 1).
  const cumulative = new Float64Array(V);
  let sum = 0;
  for (let r = 0; r < V; r++) {
    sum += 1 / (r + 1);
    cumulative[r] = sum;
  }
  const zipf = (r: () => number) => {
    const u = r() * sum;
    let lo = 0;
    let hi = V - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((cumulative[mid] as number) < u) lo = mid + 1;
      else hi = mid;
    }
    return vocabulary[lo] as string;
  };
  // Topic words come from the middle and tail of the distribution (ranks 300 and up).
  const topics = Array.from({ length: T }, () =>
    Array.from({ length: perTopic }, () => vocabulary[300 + Math.floor(rand() * (V - 300))] as string),
  );

  function sentence(r: () => number, topic: string[]): string {
    const n = 8 + Math.floor(r() * 10);
    const words: string[] = [];
    for (let i = 0; i < n; i++) words.push(r() < 0.2 ? pick(topic, r) : zipf(r));
    const s = words.join(' ');
    return `${s.charAt(0).toUpperCase()}${s.slice(1)}.`;
  }

  return {
    vocabulary,
    topics,
    document(i) {
      const r = rng(1_000_003 * (i + 1));
      const main = topics[i % T] as string[];
      const second = topics[Math.floor(r() * T)] as string[];
      const title = `${pick(main, r)} ${pick(main, r)} ${i}`;
      const parts = [`# ${title}`, ''];
      const sections = 6 + Math.floor(r() * 6);
      for (let s = 0; s < sections; s++) {
        const topic = r() < 0.7 ? main : second;
        parts.push(`## ${pick(topic, r)} ${zipf(r)}`, '');
        const paragraphs = 2 + Math.floor(r() * 3);
        for (let p = 0; p < paragraphs; p++) {
          const sentences = 3 + Math.floor(r() * 4);
          parts.push(Array.from({ length: sentences }, () => sentence(r, topic)).join(' '), '');
        }
      }
      return { filename: `doc-${i}.md`, text: parts.join('\n') };
    },
    queries(n) {
      const r = rng(7);
      const kinds: QueryKind[] = [
        'rare1',
        'topic2',
        'topic3',
        'mixed4',
        'topic2',
        'topic3',
        'rare1',
        'mixed4',
        'topic2',
        'common1',
      ];
      return Array.from({ length: n }, (_, i) => {
        const kind = kinds[i % kinds.length] as QueryKind;
        const topic = pick(topics, r);
        const words =
          kind === 'rare1'
            ? [vocabulary[50 + Math.floor(r() * 2000)] as string]
            : kind === 'common1'
              ? [vocabulary[Math.floor(r() * 20)] as string]
              : kind === 'topic2'
                ? [pick(topic, r), pick(topic, r)]
                : kind === 'topic3'
                  ? [pick(topic, r), pick(topic, r), pick(topic, r)]
                  : [pick(topic, r), pick(topic, r), zipf(r), zipf(r)];
        return { kind, text: words.join(' ') };
      });
    },
  };
}
