import { describe, expect, it } from 'vitest';
import { col, type TableEntry } from '../../platform/db/datamap.ts';
import { VaultError } from '../vault/index.ts';
import {
  decryptRows,
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
