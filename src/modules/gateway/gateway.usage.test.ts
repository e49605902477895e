import { appendFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { usageRow } from '../../../test/helpers/gateway.ts';
import { createLogger } from '../../platform/logger.ts';
import type { UsageEventRow } from './gateway.tables.ts';
import { usageRecorder } from './gateway.usage.ts';

const logger = createLogger({ level: 'silent' });
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function dir() {
  const d = mkdtempSync(path.join(tmpdir(), 'berth-journal-'));
  dirs.push(d);
  return d;
}

function event(n: number): UsageEventRow {
  return usageRow({ id: `use_${n}`, requestId: `req_${n}` });
}

describe('errors', () => {
  it('keeps a batch in the journal while the database refuses it, and inserts it on the next flush', async () => {
    const d = dir();
    const inserted: string[] = [];
    let down = true;
    const recorder = usageRecorder({
      dir: d,
      logger,
      insert: async (rows) => {
        if (down) throw new Error('database unreachable');
        inserted.push(...rows.map((r) => r.requestId));
        return rows.length;
      },
    });
    recorder.record(event(1));
    recorder.record(event(2));
    await expect(recorder.flush()).rejects.toThrow('unreachable');
    expect(recorder.pending()).toBe(2);
    expect(readdirSync(d).length).toBeGreaterThan(0);
    down = false;
    await recorder.flush();
    expect(inserted).toEqual(['req_1', 'req_2']);
    expect(recorder.pending()).toBe(0);
    await recorder.stop();
    expect(readdirSync(d)).toEqual([]);
  });

  it('replays what a killed process left, skipping a line cut short by the kill', async () => {
    const d = dir();
    appendFileSync(
      path.join(d, 'active.jsonl'),
      `${JSON.stringify(event(1))}\n${JSON.stringify(event(2)).slice(0, 40)}`,
    );
    const inserted: UsageEventRow[] = [];
    const recorder = usageRecorder({
      dir: d,
      logger,
      insert: async (rows) => {
        inserted.push(...rows);
        return rows.length;
      },
    });
    expect(await recorder.replay()).toBe(1);
    expect(inserted.map((r) => r.requestId)).toEqual(['req_1']);
    expect(inserted[0]?.createdAt).toEqual(new Date('2026-06-01T00:00:00Z'));
    expect(readdirSync(d)).toEqual([]);
  });
});
