/**
 * Dot products of one query against many vectors, in WebAssembly with 128-bit SIMD: the
 * inner loop of exact vector search (`ExactVectors`), about six times faster than the same
 * loop in JavaScript. The module is `knowledge.dot.wat` assembled (a test checks these bytes
 * are that file's); 270 bytes, no imports.
 *
 * Layout in the instance's memory: `n` vectors of `stride` floats (each padded with zeros to
 * a multiple of 8), then the query (`stride` floats), then `n` output scores.
 */

const MODULE = Buffer.from(
  'AGFzbQEAAAABCQFgBX9/f39/AAMCAQAFAwEAAQcTAgZtZW1vcnkCAAZzY29yZXMAAAraAQHXAQQDfwJ7AX8BeyAEQQJ0IQogACEHAkADQCAFIANPDQH9DAAAAAAAAAAAAAAAAAAAAAAhCP0MAAAAAAAAAAAAAAAAAAAAACEJQQAhBgJAA0AgBiAKTw0BIAggByAGav0ABAAgASAGav0ABAD95gH95AEhCCAJIAcgBmr9AAQQIAEgBmr9AAQQ/eYB/eQBIQkgBkEgaiEGDAALCyAIIAn95AEhCyACIAVBAnRqIAv9HwAgC/0fAZIgC/0fAiAL/R8DkpI4AgAgByAKaiEHIAVBAWohBQwACwsL',
  'base64',
);

/** The assembled module's bytes (for the test that compares them with the source). */
export const DOT_WASM: Uint8Array = MODULE;

const compiled = new WebAssembly.Module(MODULE);

type Exports = {
  memory: WebAssembly.Memory;
  scores(data: number, query: number, out: number, n: number, stride: number): void;
};

const PAGE = 65536;
/** wasm32 addresses 4 GiB; what one knowledge base's vectors, query and scores may take. */
export const MAX_DOT_BYTES = 4 * 1024 * 1024 * 1024 - PAGE;

/** The stride of `dims`-long vectors: rounded up to the loop's 8 floats. */
export const strideOf = (dims: number) => Math.ceil(dims / 8) * 8;

/**
 * `n` vectors of `dims` floats in their own WebAssembly memory. Fill them through `vectors`
 * (row i at i * stride), then `scores(query)` answers every vector's dot product with it.
 */
export class DotIndex {
  readonly stride: number;
  /** The vectors, row after row (`stride` floats each, zero-padded). */
  readonly vectors: Float32Array;
  private readonly query: Float32Array;
  private readonly out: Float32Array;
  private readonly exports: Exports;
  private readonly queryOffset: number;
  private readonly outOffset: number;

  constructor(
    readonly n: number,
    readonly dims: number,
  ) {
    this.stride = strideOf(dims);
    const dataBytes = n * this.stride * 4;
    this.queryOffset = dataBytes;
    this.outOffset = dataBytes + this.stride * 4;
    const bytes = this.outOffset + n * 4;
    if (bytes > MAX_DOT_BYTES) throw new RangeError('too many vectors for one exact index');
    this.exports = new WebAssembly.Instance(compiled).exports as unknown as Exports;
    const pages = Math.ceil(bytes / PAGE) - this.exports.memory.buffer.byteLength / PAGE;
    if (pages > 0) this.exports.memory.grow(pages);
    const buffer = this.exports.memory.buffer;
    this.vectors = new Float32Array(buffer, 0, n * this.stride);
    this.query = new Float32Array(buffer, this.queryOffset, this.stride);
    this.out = new Float32Array(buffer, this.outOffset, n);
  }

  /** Bytes of memory the index holds. */
  get bytes(): number {
    return this.exports.memory.buffer.byteLength;
  }

  /** Every vector's dot product with `query` (`dims` floats); the array is reused by the next call. */
  scores(query: Float32Array): Float32Array {
    if (query.length !== this.dims) throw new RangeError('the query has another dimension count');
    this.query.set(query);
    this.exports.scores(0, this.queryOffset, this.outOffset, this.n, this.stride);
    return this.out;
  }
}
