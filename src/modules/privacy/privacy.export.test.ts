import { describe, expect, it } from 'vitest';
import { col, type TableEntry } from '../../platform/db/datamap.ts';
import { VaultError } from '../vault/index.ts';
import {
  type ArchiveFile,
  archivePath,
  cleanSegment,
  decryptRows,
  exportFiles,
  exportFilter,
  planExport,
  WITHHELD,
  WITHHELD_KEY_DESTROYED,
  WITHHELD_UNREADABLE,
} from './privacy.export.archive.ts';

const ME = 'usr_01JD6F3Q4N8ZK5R2W7XH9YB0C1';
const OTHER = 'usr_01JD6F3Q4N8ZK5R2W7XH9YB0C2';
const MY_ALIAS = `anon_${'a'.repeat(32)}`;
const OTHER_ALIAS = `anon_${'b'.repeat(32)}`;
const requester = { userId: ME, email: 'me@example.test', aliases: [MY_ALIAS] };

/** A table like the audit log: several people per row, a scrubbed diff, a secret. */
const events: TableEntry = {
  table: 'events',
  module: 'test',
  purpose: 'Who did what',
  basis: 'legitimate_interest',
  retention: 'audit_13_months',
  subject: 'workspace',
  columns: {
    id: col('identifier', false),
    workspace_id: col('identifier', false),
    actor: col('audit', true, { export: 'subject' }),
    target: col('audit', true, { export: 'subject' }),
    ip: col('audit', true, { exportOf: 'actor' }),
    diff: col('audit', true, { export: 'scrubbed' }),
    token_hash: col('credential', false, { secret: true }),
  },
};

const plan = planExport([events])[0];
if (!plan) throw new Error('no plan');

describe('happy', () => {
  it('plans from the map: match columns, owners, and secrets left out', () => {
    expect(plan.userColumns).toEqual(['actor', 'target']);
    expect(plan.workspaceColumns).toEqual(['workspace_id']);
    expect(plan.columns.find((c) => c.name === 'ip')?.ownerColumn).toBe('actor');
    expect(plan.columns.map((c) => c.name)).not.toContain('token_hash');
    expect(plan.notExported).toEqual([{ column: 'token_hash', purpose: 'Who did what' }]);
  });

  it("keeps the requester's own values and hides everyone else's", () => {
    const f = exportFilter(requester);
    const mine = f.row(plan, {
      id: 'aud_1',
      workspace_id: 'ws_1',
      actor: MY_ALIAS,
      target: OTHER,
      ip: '203.0.113.7',
      diff: { from: ME, to: OTHER, by: OTHER_ALIAS, note: 'mail other@example.test and ME@example.test' },
    });
    const pOther = mine.target as string;
    expect(pOther).toMatch(/^person_[0-9a-f]{16}$/);
    expect(mine).toMatchObject({ id: 'aud_1', actor: MY_ALIAS, ip: '203.0.113.7' });
    expect(mine.diff).toEqual({
      from: ME,
      to: pOther,
      by: expect.stringMatching(/^person_[0-9a-f]{16}$/),
      note: `mail ${WITHHELD} and ME@example.test`,
    });
    // Someone else's row: their IP is withheld, their id is the same pseudonym as before.
    const theirs = f.row(plan, {
      id: 'aud_2',
      workspace_id: 'ws_1',
      actor: OTHER,
      target: 'key_1',
      ip: '198.51.100.1',
    });
    expect(theirs).toMatchObject({ actor: pOther, target: 'key_1', ip: WITHHELD, diff: null });
  });

  it('makes pseudonyms that do not link two exports', () => {
    const row = { id: 'x', workspace_id: 'ws', actor: OTHER, target: OTHER, ip: null, diff: null };
    const a = exportFilter(requester).row(plan, row);
    const b = exportFilter(requester).row(plan, row);
    expect(a.actor).toBe(a.target);
    expect(a.actor).not.toBe(b.actor);
  });
});

/** A table like agent runs: content stored encrypted, one column only a workspace's export shows. */
const runs: TableEntry = {
  table: 'runs',
  module: 'test',
  purpose: 'Runs',
  basis: 'contract',
  retention: 'logs_90_days',
  subject: 'workspace',
  exportDecrypt: {
    json: true,
    context: (row, column) => ({
      owner: { type: 'workspace', id: String(row.workspace_id) },
      record: String(row.id),
      field: column,
    }),
  },
  columns: {
    id: col('identifier', false),
    workspace_id: col('identifier', false),
    user_id: col('identifier', true),
    input: col('content', false, { export: 'decrypt' }),
    context: col('content', false, { export: 'decrypt', workspaceExportOnly: true }),
  },
};

const hex = (s: string) => `\\x${Buffer.from(s).toString('hex')}`;

describe('decrypted content', () => {
  it('leaves workspace-only columns out of a user export, with the reason, and plans the rest decrypted', () => {
    const [user] = planExport([runs], 'user');
    const [workspace] = planExport([runs], 'workspace');
    expect(user?.decryptColumns).toEqual(['input']);
    expect(user?.notExported).toEqual([
      { column: 'context', purpose: 'Runs', reason: expect.stringMatching(/workspace/) },
    ]);
    expect(workspace?.decryptColumns).toEqual(['input', 'context']);
    expect(workspace?.notExported).toEqual([]);
  });

  it('refuses a decrypt column the map gives no way to decrypt', () => {
    expect(() => planExport([{ ...runs, exportDecrypt: undefined }], 'user')).toThrow(/exportDecrypt/);
  });

  it('decrypts with the context the map gives, and withholds what the vault cannot open', async () => {
    const [p] = planExport([runs], 'workspace');
    if (!p) throw new Error('no plan');
    const seen: string[] = [];
    const stored: Array<Record<string, unknown>> = [
      { id: 'run_1', workspace_id: 'ws_1', user_id: ME, input: hex('"hello"'), context: null },
      { id: 'run_2', workspace_id: 'ws_1', user_id: ME, input: hex('gone'), context: hex('[1]') },
      { id: 'run_3', workspace_id: 'ws_1', user_id: ME, input: 'not bytea', context: hex('{oops') },
    ];
    const withheld = await decryptRows(p, stored, async (ctx, ciphertext) => {
      seen.push(`${ctx.owner.type}:${ctx.owner.id}:${ctx.record}:${ctx.field}`);
      if (ciphertext.toString() === 'gone') throw new VaultError('key_destroyed');
      return ciphertext;
    });
    expect(seen).toEqual([
      'workspace:ws_1:run_1:input',
      'workspace:ws_1:run_2:input',
      'workspace:ws_1:run_2:context',
      'workspace:ws_1:run_3:context',
    ]);
    expect(stored.map((r) => [r.input, r.context])).toEqual([
      ['hello', null],
      [WITHHELD_KEY_DESTROYED, [1]],
      [WITHHELD_UNREADABLE, WITHHELD_UNREADABLE],
    ]);
    expect(withheld).toEqual({ keyDestroyed: 1, unreadable: 2 });
  });

  it('fails on anything but a refusal of the vault (the job retries)', async () => {
    const [p] = planExport([runs], 'user');
    if (!p) throw new Error('no plan');
    const rows = [{ id: 'run_1', workspace_id: 'ws_1', user_id: ME, input: hex('"x"') }];
    await expect(
      decryptRows(p, rows, async () => {
        throw new Error('connection lost');
      }),
    ).rejects.toThrow('connection lost');
  });
});

/** A table like knowledge documents: an encrypted original file, exported as a file of its own. */
const documents: TableEntry = {
  table: 'documents',
  module: 'docs',
  purpose: 'Documents',
  basis: 'contract',
  retention: 'workspace_lifetime',
  subject: 'workspace',
  columns: {
    id: col('identifier', false),
    workspace_id: col('identifier', false),
    created_by: col('identifier', true),
    filename: col('content', false),
    original: col('content', false, {
      export: 'file',
      workspaceExportOnly: true,
      exportFile: {
        context: (row, column) => ({
          owner: { type: 'workspace', id: String(row.workspace_id) },
          record: String(row.id),
          field: column,
        }),
        file: (row) => ({ record: String(row.id), name: String(row.filename) }),
      },
    }),
  },
};

describe('files', () => {
  it('cleans the names of paths in the archive', () => {
    expect(archivePath('knowledge', 'kdoc_1', 'Q3 report: final.pdf')).toBe(
      'files/knowledge/kdoc_1/Q3 report_ final.pdf',
    );
    expect(cleanSegment('../../etc/passwd', 'file')).toBe('passwd');
    expect(cleanSegment('C:\\Users\\me\\résumé.docx', 'file')).toBe('résumé.docx');
    expect(cleanSegment('..', 'file')).toBe('file');
    expect(cleanSegment('.hidden', 'file')).toBe('hidden');
    expect(cleanSegment('a\u0000b\nc<>|?*"', 'file')).toBe('a_b_c_');
    const long = cleanSegment(`${'x'.repeat(300)}.pdf`, 'file');
    expect(long).toHaveLength(120);
    expect(long.endsWith('.pdf')).toBe(true);
  });

  it('leaves file columns out of a user export, with the reason, and refuses one the map says not how to open', () => {
    const [user] = planExport([documents], 'user');
    const [workspace] = planExport([documents], 'workspace');
    expect(user?.fileColumns).toEqual([]);
    expect(user?.notExported).toEqual([
      { column: 'original', purpose: 'Documents', reason: expect.stringMatching(/workspace/) },
    ]);
    expect(workspace?.fileColumns).toEqual(['original']);
    // The type demands `exportFile` with `file` (and only with it); a map built without types is refused.
    // @ts-expect-error no exportFile
    const original = col('content', false, { export: 'file' });
    const unopenable: TableEntry = { ...documents, columns: { ...documents.columns, original } };
    // @ts-expect-error exportFile on a column that is not a file
    col('content', false, { export: 'include', exportFile: documents.columns.original?.exportFile });
    expect(() => planExport([unopenable], 'workspace')).toThrow(/exportFile/);
  });

  it('adds each file under its path, the row naming it, and withholds what the vault cannot open', async () => {
    const [p] = planExport([documents], 'workspace');
    if (!p) throw new Error('no plan');
    const binary = Buffer.from([0x25, 0x50, 0x44, 0x46, 0x00, 0xff, 0xfe]);
    const stored: Array<Record<string, unknown>> = [
      { id: 'd1', workspace_id: 'ws_1', created_by: ME, filename: 'a.pdf', original: `\\x${binary.toString('hex')}` },
      // Same name in the same folder cannot happen in the map, but a path is never overwritten.
      { id: 'd1', workspace_id: 'ws_1', created_by: ME, filename: 'a.pdf', original: hex('second') },
      { id: 'd2', workspace_id: 'ws_1', created_by: OTHER, filename: `for ${OTHER}.txt`, original: hex('x') },
      { id: 'd3', workspace_id: 'ws_1', created_by: ME, filename: 'gone.txt', original: hex('gone') },
      { id: 'd4', workspace_id: 'ws_1', created_by: ME, filename: 'bad.txt', original: 'not bytea' },
      { id: 'd5', workspace_id: 'ws_1', created_by: ME, filename: 'none.txt', original: null },
    ];
    const files: Record<string, ArchiveFile> = {};
    const seen: string[] = [];
    const filter = exportFilter(requester);
    const withheld = await exportFiles(
      p,
      stored,
      async (ctx, ciphertext) => {
        seen.push(`${ctx.owner.id}:${ctx.record}:${ctx.field}`);
        if (ciphertext.toString() === 'gone') throw new VaultError('key_destroyed');
        return ciphertext;
      },
      filter.text,
      files,
    );
    expect(seen).toEqual(['ws_1:d1:original', 'ws_1:d1:original', 'ws_1:d2:original', 'ws_1:d3:original']);
    expect(withheld).toEqual({ keyDestroyed: 1, unreadable: 1 });
    const other = stored[2]?.original;
    expect(other).toMatch(/^files\/docs\/d2\/for person_[0-9a-f]{16}\.txt$/);
    expect(stored.map((r) => r.original)).toEqual([
      'files/docs/d1/a.pdf',
      'files/docs/d1/a-2.pdf',
      other,
      WITHHELD_KEY_DESTROYED,
      WITHHELD_UNREADABLE,
      null,
    ]);
    expect(Object.keys(files)).toEqual(['files/docs/d1/a.pdf', 'files/docs/d1/a-2.pdf', other]);
    expect(Buffer.from(files['files/docs/d1/a.pdf']?.base64 ?? '', 'base64').equals(binary)).toBe(true);
    expect(files['files/docs/d1/a.pdf']).toMatchObject({
      table: 'documents',
      column: 'original',
      record: 'd1',
      size: 7,
    });
    // The row shows the path as it is.
    expect(filter.row(p, stored[0] ?? {}).original).toBe('files/docs/d1/a.pdf');
  });
});
