import { describe, expect, it } from 'vitest';
import { AppError } from '../../platform/errors.ts';
import type { Caller, EmbeddingsRequest } from '../gateway/index.ts';
import { embeddingText, embedTexts } from './knowledge.embed.ts';
import { candidatesPerSide, fuse, RRF_K } from './knowledge.retrieve.ts';
import { encodeEmbedding, unitVector } from './knowledge.vectors.ts';

const caller: Caller = {
  workspaceId: 'ws_1',
  keyId: null,
  userId: null,
  allowedModels: null,
  rateLimitRpm: null,
  rateLimitTpm: null,
  requestId: 'req_1',
};

const ids = (...xs: string[]) => xs.map((chunkId) => ({ chunkId }));

describe('fuse', () => {
  it('sums 1/(k + rank) over both rankings, best first', () => {
    const fused = fuse(ids('a', 'b', 'c'), ids('c', 'd', 'a'));
    const score = Object.fromEntries(fused.map((f) => [f.chunkId, f.score]));
    expect(score.a).toBeCloseTo(1 / (RRF_K + 1) + 1 / (RRF_K + 3), 12);
    expect(score.c).toBeCloseTo(1 / (RRF_K + 3) + 1 / (RRF_K + 1), 12);
    expect(score.b).toBeCloseTo(1 / (RRF_K + 2), 12);
    expect(score.d).toBeCloseTo(1 / (RRF_K + 2), 12);
    // a and c tie: the better lexical rank first; b and d tie: b (lexical) first.
    expect(fused.map((f) => f.chunkId)).toEqual(['a', 'c', 'b', 'd']);
    expect(fused.find((f) => f.chunkId === 'd')).toMatchObject({ lexicalRank: null, vectorRank: 2 });
  });

  it('counts a chunk once per side even if a side repeats it, and handles empty sides', () => {
    expect(fuse(ids('a', 'a'), [])).toEqual([
      { chunkId: 'a', score: 1 / (RRF_K + 1), lexicalRank: 1, vectorRank: null },
    ]);
    expect(fuse([], [])).toEqual([]);
  });

  it('takes 50 to 100 candidates from each side', () => {
    expect(candidatesPerSide(1)).toBe(50);
    expect(candidatesPerSide(15)).toBe(75);
    expect(candidatesPerSide(100)).toBe(100);
  });
});

describe('embedTexts', () => {
  /** An embed dep answering `dims`-long vectors, recording each batch. */
  function fakeEmbed(dims: (i: number) => number, calls: string[][] = []) {
    return async (_c: Caller, body: EmbeddingsRequest) => {
      const input = body.input as string[];
      calls.push(input);
      return {
        response: {
          object: 'list' as const,
          model: body.model,
          data: input
            .map((t, index) => ({
              object: 'embedding' as const,
              index,
              embedding: Array.from({ length: dims(index) }, (_, j) => (j === 0 ? t.length : 1)),
            }))
            .reverse(),
          usage: { prompt_tokens: 1, total_tokens: 1 },
        },
      };
    };
  }

  it('embeds in batches, in order (whatever order the answer lists them in), at unit length', async () => {
    const calls: string[][] = [];
    const texts = Array.from({ length: 130 }, (_, i) => 'x'.repeat(i + 1));
    const progress: number[] = [];
    const vectors = await embedTexts(
      fakeEmbed(() => 4, calls),
      caller,
      'm',
      texts,
      {
        onBatch: async (done) => {
          progress.push(done);
        },
      },
    );
    expect(calls.map((c) => c.length)).toEqual([64, 64, 2]);
    expect(progress).toEqual([64, 128, 130]);
    expect(vectors).toHaveLength(130);
    for (const [i, v] of vectors.entries()) {
      const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
      expect(norm).toBeCloseTo(1, 5);
      // The first component grows with the text's length: the order is the input's.
      expect(v[0]).toBeCloseTo((i + 1) / Math.sqrt((i + 1) ** 2 + 3), 5);
    }
  });

  it('refuses another dimension count than the knowledge base has, and answers that are not vectors', async () => {
    await expect(
      embedTexts(
        fakeEmbed(() => 4),
        caller,
        'm',
        ['a'],
        { dims: 8 },
      ),
    ).rejects.toMatchObject({
      code: 'embedding_dimensions_changed',
    });
    await expect(
      embedTexts(
        fakeEmbed((i) => (i === 0 ? 4 : 5)),
        caller,
        'm',
        ['a', 'b'],
      ),
    ).rejects.toMatchObject({
      code: 'embedding_dimensions_changed',
    });
    const short = async () => ({
      response: { object: 'list' as const, model: 'm', data: [], usage: { prompt_tokens: 0, total_tokens: 0 } },
    });
    await expect(embedTexts(short, caller, 'm', ['a'])).rejects.toMatchObject({ code: 'embedding_failed' });
    const nan = async () => ({
      response: {
        object: 'list' as const,
        model: 'm',
        data: [{ object: 'embedding' as const, index: 0, embedding: [1, Number.NaN] }],
        usage: { prompt_tokens: 0, total_tokens: 0 },
      },
    });
    await expect(embedTexts(nan, caller, 'm', ['a'])).rejects.toMatchObject({ code: 'embedding_failed' });
    // More dimensions than a chunk's column holds.
    await expect(
      embedTexts(
        fakeEmbed(() => 16_001),
        caller,
        'm',
        ['a'],
      ),
    ).rejects.toMatchObject({
      code: 'embedding_failed',
    });
  });

  it("passes the gateway's errors on unchanged", async () => {
    const broke = async () => {
      throw new AppError('insufficient_credits', 'no credits');
    };
    await expect(embedTexts(broke, caller, 'm', ['a'])).rejects.toMatchObject({ code: 'insufficient_credits' });
  });

  it('embeds a chunk with the headings it is under, not repeating one its text starts with', () => {
    expect(embeddingText({ headingPath: ['Guide', 'Refunds'], text: 'Paid in 14 days.' })).toBe(
      'Guide > Refunds\n\nPaid in 14 days.',
    );
    expect(embeddingText({ headingPath: ['Guide', 'Refunds'], text: '## Refunds\n\nPaid in 14 days.' })).toBe(
      'Guide\n\n## Refunds\n\nPaid in 14 days.',
    );
    expect(embeddingText({ headingPath: [], text: 'Plain.' })).toBe('Plain.');
  });
});

describe('vectors', () => {
  it('scales to unit length, keeps a zero vector, refuses non-finite values', () => {
    expect(Array.from(unitVector([3, 4]))).toEqual([expect.closeTo(0.6, 6), expect.closeTo(0.8, 6)]);
    expect(Array.from(unitVector([0, 0]))).toEqual([0, 0]);
    expect(() => unitVector([1, Number.POSITIVE_INFINITY])).toThrow(RangeError);
  });

  it("writes pgvector's text form or little-endian float32 bytes", () => {
    const v = new Float32Array([0.5, -0.25]);
    expect(encodeEmbedding('pgvector', v)).toBe('[0.5,-0.25]');
    const bytes = encodeEmbedding('exact', v) as Buffer;
    expect(bytes).toHaveLength(8);
    expect(bytes.readFloatLE(0)).toBe(0.5);
    expect(bytes.readFloatLE(4)).toBe(-0.25);
  });
});
