import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { docx, pdf } from '../../../test/helpers/documents.ts';
import { exportOf as exportArchive } from '../../../test/helpers/exports.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { multipartForm } from '../../../test/helpers/multipart.ts';
import type { UploadResult } from '../knowledge/index.ts';
import { type ArchiveFile, WITHHELD_KEY_DESTROYED } from './privacy.export.archive.ts';

/**
 * Exports carry knowledge documents' original files (rule `file`): a workspace export holds
 * each original's bytes, exactly as uploaded, as a file of its own at
 * `files/knowledge/<document id>/<cleaned file name>`, and the document's record names that
 * path instead of the ciphertext. A member's own export has their documents' records but not
 * the originals (only the workspace's export does, as with the documents' text). Where the
 * workspace's data key was destroyed, the file is withheld and the record says why.
 */

type Row = Record<string, unknown>;
type Archive = {
  format: string;
  manifest: {
    fileCount: number;
    tables: Array<{
      table: string;
      columns: Array<{ name: string; storedEncrypted?: boolean; exportedAs?: string }>;
      notExported: Array<{ column: string; reason?: string }>;
    }>;
  };
  data: Record<string, Row[]>;
  files: Record<string, ArchiveFile>;
};

let app: TestApp;
let owner: SignedInClient;
let member: SignedInClient;
let ws: string;

const PDF = pdf([['Harbour report', 'The pelicans counted this spring outnumber the gulls.']]);
const DOCX = docx([{ text: 'Minutes', style: 'Title' }, { text: 'The choir sings on Thursdays.' }]);
// Not valid UTF-8 anywhere: a decode and re-encode as text would change it.
const BINARY = Buffer.concat([Buffer.from('text then raw bytes: '), Buffer.from([0x00, 0xff, 0xfe, 0x80, 0xc3, 0x28])]);

const uploads = {
  pdf: { name: 'Q3 report: final.pdf', data: PDF, type: 'application/pdf' },
  docx: { name: 'minutes.docx', data: DOCX },
  member: { name: 'member notes.txt', data: BINARY, type: 'text/plain' },
};
const ids: Record<keyof typeof uploads, string> = { pdf: '', docx: '', member: '' };

async function upload(client: SignedInClient, kb: string, file: { name: string; data: Buffer; type?: string }) {
  const { payload, headers } = multipartForm([file]);
  const res = await client.request<UploadResult>(
    'POST',
    `/api/workspaces/${ws}/knowledge/${kb}/documents`,
    payload,
    headers,
  );
  expect(res.status, res.text).toBe(202);
  const id = res.body.data[0]?.document.id;
  if (!id) throw new Error('no document uploaded');
  return id;
}

const exportOf = (client: SignedInClient, path: string) => exportArchive<Archive>(app, client, path);

const workspaceExport = () => exportOf(owner, `/api/workspaces/${ws}/privacy/exports`);
const documentRow = (a: Archive, id: string) => (a.data.knowledge_documents ?? []).find((r) => r.id === id);
const bytesOf = (a: Archive, path: unknown) => {
  const f = typeof path === 'string' ? a.files[path] : undefined;
  if (!f) throw new Error(`no file ${String(path)} in the archive`);
  return Buffer.from(f.base64, 'base64');
};

beforeAll(async () => {
  app = await createTestApp();
  owner = await signUp(app);
  member = await signUp(app);
  ws = (await owner.post<{ id: string }>('/api/workspaces', { name: 'Files' })).body.id;
  const scope = { workspaceId: ws, actor: { type: 'user' as const, userId: owner.userId }, role: 'owner' as const };
  const { token } = await app.modules.workspaces.service.invite({ scope, email: member.email, role: 'member' });
  await app.modules.workspaces.service.acceptInvitation({ token, userId: member.userId });
  const kb = await owner.post<{ id: string }>(`/api/workspaces/${ws}/knowledge`, { name: 'Archive' });
  expect(kb.status, kb.text).toBe(201);
  ids.pdf = await upload(owner, kb.body.id, uploads.pdf);
  ids.docx = await upload(owner, kb.body.id, uploads.docx);
  ids.member = await upload(member, kb.body.id, uploads.member);
  await app.jobs.drain('knowledge.ingest');
});

afterAll(async () => {
  await app?.close();
});

describe('happy', () => {
  it("holds every document's original bytes at its path, and the record names the path", async () => {
    const { text, archive } = await workspaceExport();
    expect(archive.manifest.fileCount).toBe(3);
    const expected = {
      pdf: [`files/knowledge/${ids.pdf}/Q3 report_ final.pdf`, PDF],
      docx: [`files/knowledge/${ids.docx}/minutes.docx`, DOCX],
      member: [`files/knowledge/${ids.member}/member notes.txt`, BINARY],
    } as const;
    for (const [key, [path, bytes]] of Object.entries(expected)) {
      const id = ids[key as keyof typeof ids];
      expect(documentRow(archive, id)?.original_ciphertext, key).toBe(path);
      expect(bytesOf(archive, path).equals(bytes), key).toBe(true);
      expect(archive.files[path]).toMatchObject({
        table: 'knowledge_documents',
        column: 'original_ciphertext',
        record: id,
        size: bytes.length,
        sha256: createHash('sha256').update(bytes).digest('hex'),
      });
    }
    const manifest = archive.manifest.tables.find((t) => t.table === 'knowledge_documents');
    expect(manifest?.columns.find((c) => c.name === 'original_ciphertext')).toMatchObject({
      storedEncrypted: true,
      exportedAs: 'file',
    });
    expect(manifest?.notExported.map((c) => c.column)).not.toContain('original_ciphertext');
    // No ciphertext anywhere in the archive (the documents' SHA-256, 32 bytes, is exported as it is).
    expect(text).not.toMatch(/"\\\\x(?:[0-9a-f]{2}){33,}"/);
  });

  it("gives a member their documents' records but not the originals, and says why", async () => {
    const { archive } = await exportOf(member, '/api/me/privacy/exports');
    const mine = documentRow(archive, ids.member);
    expect(mine).toMatchObject({ filename: 'member notes.txt' });
    expect(mine).not.toHaveProperty('original_ciphertext');
    expect(documentRow(archive, ids.pdf)).toBeUndefined();
    expect(archive.files).toEqual({});
    const manifest = archive.manifest.tables.find((t) => t.table === 'knowledge_documents');
    expect(manifest?.notExported.find((c) => c.column === 'original_ciphertext')?.reason).toMatch(/workspace's export/);
  });
});

// Last: it destroys the workspace's data key.
describe('errors', () => {
  it('withholds the originals whose workspace key was destroyed, and still builds the export', async () => {
    await app.modules.vault.service.destroyOwnerKey({ type: 'workspace', id: ws });
    const { archive } = await workspaceExport();
    expect(archive.files).toEqual({});
    expect(archive.manifest.fileCount).toBe(0);
    for (const id of Object.values(ids)) {
      expect(documentRow(archive, id)?.original_ciphertext, id).toBe(WITHHELD_KEY_DESTROYED);
    }
    expect(documentRow(archive, ids.pdf)).toMatchObject({ filename: 'Q3 report: final.pdf' });
  });
});
