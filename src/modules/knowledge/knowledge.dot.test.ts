import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import wabtInit from 'wabt';
import { DOT_WASM, DotIndex, strideOf } from './knowledge.dot.ts';

describe('DotIndex', () => {
  it('answers every dot product, for dimension counts that are not a multiple of the loop', () => {
    for (const dims of [1, 3, 8, 13, 384, 1537]) {
      const n = 50;
      const index = new DotIndex(n, dims);
      expect(index.stride).toBe(strideOf(dims));
      const rows: number[][] = [];
      for (let i = 0; i < n; i++) {
        const row = Array.from({ length: dims }, (_, j) => Math.sin(i * 31 + j * 7));
        rows.push(row);
        index.vectors.set(row, i * index.stride);
      }
      const query = Float32Array.from({ length: dims }, (_, j) => Math.cos(j * 3));
      const scores = index.scores(query);
      for (let i = 0; i < n; i++) {
        const want = (rows[i] as number[]).reduce((s, x, j) => s + Math.fround(x) * (query[j] as number), 0);
        expect(scores[i]).toBeCloseTo(want, 3);
      }
    }
  });

  it('holds no vector at all, and refuses a query of another size', () => {
    expect(new DotIndex(0, 4).scores(new Float32Array(4))).toHaveLength(0);
    expect(() => new DotIndex(1, 4).scores(new Float32Array(5))).toThrow(RangeError);
  });

  it('runs the module assembled from knowledge.dot.wat', async () => {
    const wabt = await wabtInit();
    const source = readFileSync(fileURLToPath(new URL('./knowledge.dot.wat', import.meta.url)), 'utf8');
    const built = wabt.parseWat('knowledge.dot.wat', source, { simd: true }).toBinary({}).buffer;
    expect(Buffer.from(built).equals(Buffer.from(DOT_WASM))).toBe(true);
  });
});
