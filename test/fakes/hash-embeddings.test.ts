import { describe, expect, it } from 'vitest';
import { HASH_EMBEDDING_DIMS, hashEmbedding, hashFeatures } from './hash-embeddings.ts';

function cosine(a: number[], b: number[]): number {
  let dot = 0;
  for (let i = 0; i < a.length; i++) dot += (a[i] ?? 0) * (b[i] ?? 0);
  return dot;
}

function norm(v: number[]): number {
  return Math.sqrt(cosine(v, v));
}

const embed = (text: string) => hashEmbedding(text, HASH_EMBEDDING_DIMS);

describe('happy', () => {
  it('is deterministic and of the dimensions asked', () => {
    expect(embed('Pelicans eat fish.')).toEqual(embed('Pelicans eat fish.'));
    expect(hashEmbedding('pelicans', 3)).toHaveLength(3);
    expect(embed('x')).toHaveLength(HASH_EMBEDDING_DIMS);
  });

  it('is L2-normalised, and all zeros for a text without words', () => {
    for (const text of ['a', 'the the the', 'Pelicans eat fish; herons eat frogs.', '東京都の天気']) {
      expect(norm(embed(text))).toBeCloseTo(1, 10);
    }
    for (const text of ['', '   ', '?!… —']) expect(embed(text).every((x) => x === 0)).toBe(true);
  });

  it('ignores case and punctuation: the same words embed the same', () => {
    expect(embed('Pelicans, EAT fish!')).toEqual(embed('pelicans eat fish'));
  });

  it('puts texts sharing words closer than unrelated texts', () => {
    const query = embed('how do pelicans catch fish');
    const related = embed('Pelicans catch fish by diving into the sea.');
    const unrelated = embed('Quarterly revenue grew in the northern region.');
    expect(cosine(query, related)).toBeGreaterThan(0.4);
    expect(Math.abs(cosine(query, unrelated))).toBeLessThan(0.2);
    expect(cosine(query, related)).toBeGreaterThan(cosine(query, unrelated));
  });

  it('cuts Chinese, Japanese and Korean runs into overlapping character pairs', () => {
    expect(hashFeatures('東京都')).toEqual(['東京', '京都']);
    expect(hashFeatures('猫')).toEqual(['猫']);
    expect(hashFeatures('GPT模型 カタカナー')).toEqual(['gpt', '模型', 'カタ', 'タカ', 'カナ', 'ナー']);
    const tokyo = embed('東京の天気は晴れです');
    expect(cosine(tokyo, embed('明日の東京の天気'))).toBeGreaterThan(cosine(tokyo, embed('大阪で寿司を食べた')));
    const seoul = embed('서울 날씨가 좋다');
    expect(cosine(seoul, embed('오늘 서울 날씨'))).toBeGreaterThan(0.3);
  });

  it('keeps letters with their marks and any script’s digits in words', () => {
    expect(hashFeatures('नमस्ते दुनिया 2024')).toEqual(['नमस्ते', 'दुनिया', '2024']);
    expect(hashFeatures('Ünïcödé straße')).toEqual(['ünïcödé', 'straße']);
  });
});

describe('errors', () => {
  it('refuses dimensions that are not a positive integer', () => {
    expect(() => hashEmbedding('x', 0)).toThrow(RangeError);
    expect(() => hashEmbedding('x', 1.5)).toThrow(RangeError);
  });
});
