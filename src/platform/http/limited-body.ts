/**
 * Reads a response body up to `maxBytes`. Returns null as soon as the body is larger: reading
 * stops there (leaving the loop ends the stream), so an oversized answer is never held whole.
 * Errors of the stream itself (aborts, resets) are thrown as they come.
 */
export async function readLimited(body: AsyncIterable<unknown>, maxBytes: number): Promise<Buffer | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const piece = chunk as Buffer;
    size += piece.length;
    if (size > maxBytes) return null;
    chunks.push(piece);
  }
  return Buffer.concat(chunks);
}
