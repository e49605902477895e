import { randomBytes } from 'node:crypto';

export type FormFile = { name: string; data: Buffer | string; type?: string };

/**
 * A multipart/form-data body with one `file` part per file and, before them, one part per
 * field (e.g. `metadata` of a knowledge upload).
 *
 * @example const { payload, headers } = multipartForm([{ name: 'a.txt', data: 'hello' }], { metadata: '{"lang":"en"}' });
 */
export function multipartForm(
  files: FormFile[],
  fields: Record<string, string> = {},
): { payload: Buffer; headers: Record<string, string> } {
  const boundary = `----berth${randomBytes(8).toString('hex')}`;
  const fieldParts = Object.entries(fields).map(([name, value]) =>
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`),
  );
  const fileParts = files.map((f) =>
    Buffer.concat([
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${f.name}"\r\n` +
          `Content-Type: ${f.type ?? 'application/octet-stream'}\r\n\r\n`,
      ),
      Buffer.from(f.data),
      Buffer.from('\r\n'),
    ]),
  );
  return {
    payload: Buffer.concat([...fieldParts, ...fileParts, Buffer.from(`--${boundary}--\r\n`)]),
    headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
  };
}
