import { describe, expect, it } from 'vitest';
import { col, type TableEntry } from '../../platform/db/datamap.ts';
import { exportFilter, planExport, WITHHELD } from './privacy.export.archive.ts';

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
