import { AppError } from '../../platform/errors.ts';
import type { Caller, EmbeddingsRequest, EmbeddingsResponse } from '../gateway/index.ts';
import { unitVector } from './knowledge.vectors.ts';

/**
 * Embeddings of chunks and queries, through the gateway: metered, billed and governed like
 * a /v1/embeddings call of the same caller.
 */

export type Embed = (caller: Caller, body: EmbeddingsRequest) => Promise<{ response: EmbeddingsResponse }>;

/** Inputs per embeddings call, and the characters one call carries at most. */
const BATCH_INPUTS = 64;
const BATCH_CHARS = 200_000;
/** The most dimensions an embedding may have (the column's check). */
const MAX_DIMS = 16_000;

/**
 * The text a chunk is embedded as: the headings it is under (they give it context), then its
 * text. Headings the chunk's first line already holds (a section's first chunk starts with its
 * heading) are not repeated: they would count twice.
 */
export function embeddingText(chunk: { headingPath: readonly string[]; text: string }): string {
  const first = chunk.text.trimStart().split('\n', 1)[0] ?? '';
  const context = chunk.headingPath.filter((h) => !first.includes(h));
  return context.length > 0 ? `${context.join(' > ')}\n\n${chunk.text}` : chunk.text;
}

/** Batches of inputs within the per-call limits, in order. */
function batches(texts: readonly string[]): string[][] {
  const out: string[][] = [];
  let current: string[] = [];
  let chars = 0;
  for (const t of texts) {
    if (current.length > 0 && (current.length >= BATCH_INPUTS || chars + t.length > BATCH_CHARS)) {
      out.push(current);
      current = [];
      chars = 0;
    }
    current.push(t);
    chars += t.length;
  }
  if (current.length > 0) out.push(current);
  return out;
}

const badAnswer = (model: string, what: string) =>
  new AppError('embedding_failed', `The embeddings model ${model} answered ${what}.`);

/**
 * Embeds `texts` with `model`, in batches, and answers one unit-length vector per text, in
 * order. Every vector must have the same dimension count (`dims` when given). The gateway's
 * errors pass through (`insufficient_credits`, `model_not_found`, `upstream_timeout`...); an
 * answer that is not one float vector per input is `embedding_failed`.
 */
export async function embedTexts(
  embed: Embed,
  caller: Caller,
  model: string,
  texts: readonly string[],
  opts: { dims?: number | null; onBatch?: (done: number, total: number) => Promise<void> } = {},
): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  let dims = opts.dims ?? null;
  for (const batch of batches(texts)) {
    const { response } = await embed(caller, { model, input: batch, encoding_format: 'float' });
    const data = [...(response.data ?? [])].sort((a, b) => a.index - b.index);
    if (data.length !== batch.length) throw badAnswer(model, `${data.length} embeddings for ${batch.length} inputs`);
    for (const [i, d] of data.entries()) {
      if (d.index !== i || !Array.isArray(d.embedding) || d.embedding.length === 0) {
        throw badAnswer(model, 'something that is not one list of numbers per input');
      }
      dims ??= d.embedding.length;
      if (dims > MAX_DIMS) throw badAnswer(model, `${dims} dimensions (at most ${MAX_DIMS} are stored)`);
      if (d.embedding.length !== dims) {
        throw new AppError(
          'embedding_dimensions_changed',
          `The embeddings model ${model} answered ${d.embedding.length} dimensions where the knowledge base has ${dims}.`,
        );
      }
      try {
        out.push(unitVector(d.embedding));
      } catch {
        throw badAnswer(model, 'a value that is not a finite number');
      }
    }
    await opts.onBatch?.(out.length, texts.length);
  }
  return out;
}
