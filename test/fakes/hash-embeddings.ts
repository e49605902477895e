/**
 * A deterministic bag-of-words embedding for the fake upstream and benchmarks: texts that
 * share words (or, in Chinese, Japanese and Korean, character pairs) point the same way,
 * unrelated texts are near orthogonal. Signed feature hashing: each feature adds ±1 to one
 * dimension, both picked by its hash, so collisions cancel out on average instead of adding up.
 * No dependency beyond the language (a benchmark imports it outside vitest).
 *
 * @example const v = hashEmbedding('The pelican eats fish', HASH_EMBEDDING_DIMS); // unit length
 */

/** The fake upstream's dimensions when a request names none. */
export const HASH_EMBEDDING_DIMS = 512;

/** Runs of letters, marks and digits: the words (a mark belongs to its letter, as in Devanagari). */
const WORD = /[\p{L}\p{M}\p{N}]+/gu;
/** Scripts written without spaces between words: cut into overlapping character pairs instead. */
const CJK = /([\p{scx=Han}\p{scx=Hiragana}\p{scx=Katakana}\p{scx=Hangul}]+)/u;

/** The features of a text: lower-cased words, and overlapping character bigrams of CJK runs. */
export function hashFeatures(text: string): string[] {
  const out: string[] = [];
  for (const [word] of text.toLowerCase().matchAll(WORD)) {
    // With a capture group, split keeps the CJK runs at the odd indexes.
    word.split(CJK).forEach((part, i) => {
      if (part === '') return;
      if (i % 2 === 0) {
        out.push(part);
        return;
      }
      const chars = Array.from(part);
      if (chars.length === 1) out.push(part);
      for (let j = 0; j + 1 < chars.length; j++) out.push(`${chars[j]}${chars[j + 1]}`);
    });
  }
  return out;
}

/** FNV-1a over UTF-16 code units, finished with murmur3's mix so every bit depends on every input bit. */
function hash(feature: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < feature.length; i++) {
    h ^= feature.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The text's embedding of `dims` dimensions, L2-normalised; a text without a word (empty,
 * punctuation only) embeds as all zeros.
 */
export function hashEmbedding(text: string, dims: number): number[] {
  if (!Number.isInteger(dims) || dims < 1) throw new RangeError(`dims must be a positive integer, got ${dims}`);
  const v = new Array<number>(dims).fill(0);
  for (const feature of hashFeatures(text)) {
    const h = hash(feature);
    // The low bits pick the dimension, the top bit the sign.
    v[h % dims] = (v[h % dims] ?? 0) + (h & 0x80000000 ? -1 : 1);
  }
  let norm = 0;
  for (const x of v) norm += x * x;
  if (norm === 0) return v;
  const scale = 1 / Math.sqrt(norm);
  return v.map((x) => x * scale);
}
