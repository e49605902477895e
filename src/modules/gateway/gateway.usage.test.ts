import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
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

/** The request ids of the complete lines in the journal directory, file by file. */
function journaled(d: string): string[] {
  return readdirSync(d)
    .filter((f) => f.endsWith('.jsonl'))
    .flatMap((f) => readFileSync(path.join(d, f), 'utf8').split('\n').filter(Boolean))
    .map((l) => (JSON.parse(l) as UsageEventRow).requestId);
}

const written = (recorder: { whenWritten(done: (err?: Error) => void): void }) =>
  new Promise<Error | undefined>((resolve) => recorder.whenWritten(resolve));

describe('happy', () => {
  it('writes the events of one event-loop turn together, before any caller waiting on them goes on', async () => {
    const d = dir();
    const recorder = usageRecorder({ dir: d, logger, insert: async (rows) => rows.length });
    // Nothing waits: a caller is told at once.
    expect(await written(recorder)).toBeUndefined();
    const seen: string[][] = [];
    for (const n of [1, 2, 3]) {
      recorder.record(event(n));
      recorder.whenWritten((err) => {
        expect(err).toBeUndefined();
        seen.push(journaled(d));
      });
    }
    // Recorded, not yet written: the waiters are held until the group write.
    expect(journaled(d)).toEqual([]);
    expect(seen).toEqual([]);
    expect(recorder.pending()).toBe(3);
    await written(recorder);
    // Every waiter saw the three lines already in the file: they were written in one go.
    expect(seen).toEqual([
      ['req_1', 'req_2', 'req_3'],
      ['req_1', 'req_2', 'req_3'],
      ['req_1', 'req_2', 'req_3'],
    ]);
    // The next turn's events are the next group.
    recorder.record(event(4));
    expect(journaled(d)).toEqual(['req_1', 'req_2', 'req_3']);
    await written(recorder);
    expect(journaled(d)).toEqual(['req_1', 'req_2', 'req_3', 'req_4']);
    await recorder.stop();
  });

  it('a flush inserts events still waiting for their group write, once each', async () => {
    const d = dir();
    const inserted: string[] = [];
    const recorder = usageRecorder({
      dir: d,
      logger,
      insert: async (rows) => {
        inserted.push(...rows.map((r) => r.requestId));
        return rows.length;
      },
    });
    recorder.record(event(1));
    recorder.record(event(2));
    await recorder.flush();
    expect(inserted).toEqual(['req_1', 'req_2']);
    expect(recorder.pending()).toBe(0);
    expect(await written(recorder)).toBeUndefined();
    await recorder.flush();
    expect(inserted).toEqual(['req_1', 'req_2']);
    await recorder.stop();
    expect(readdirSync(d)).toEqual([]);
  });

  it('a process killed after the group write (even mid-insert) leaves every event to the next start, which inserts each once', async () => {
    const d = dir();
    // The database: unique request ids, as usage_events' key makes them.
    const table = new Map<string, UsageEventRow>();
    const insert = async (rows: UsageEventRow[]) => {
      let added = 0;
      for (const r of rows) {
        if (table.has(r.requestId)) continue;
        table.set(r.requestId, r);
        added += 1;
      }
      return added;
    };
    // The first process: a batch inserted whose segment was never deleted (killed mid-flush),
    // then events written to the journal and never inserted. It is never stopped.
    let hang = false;
    const killed = usageRecorder({
      dir: d,
      logger,
      insert: async (rows) => {
        const n = await insert(rows);
        if (hang) await new Promise(() => undefined);
        return n;
      },
    });
    killed.record(event(1));
    killed.record(event(2));
    await written(killed);
    hang = true;
    void killed.flush();
    await new Promise((resolve) => setImmediate(resolve));
    expect([...table.keys()]).toEqual(['req_1', 'req_2']);
    for (const n of [3, 4, 5]) killed.record(event(n));
    await written(killed);

    const next = usageRecorder({ dir: d, logger, insert });
    expect(await next.replay()).toBe(5);
    expect([...table.keys()].sort()).toEqual(['req_1', 'req_2', 'req_3', 'req_4', 'req_5']);
    expect(readdirSync(d)).toEqual([]);
    await next.stop();
  });
});

describe('errors', () => {
  it('fails the callers waiting on a group write that failed, and inserts none of its events', async () => {
    const d = dir();
    const inserted: string[] = [];
    const recorder = usageRecorder({
      dir: d,
      logger,
      insert: async (rows) => {
        inserted.push(...rows.map((r) => r.requestId));
        return rows.length;
      },
    });
    // The journal file cannot be opened for appending.
    mkdirSync(path.join(d, 'active.jsonl'));
    recorder.record(event(1));
    recorder.record(event(2));
    const err = await written(recorder);
    expect(err).toBeInstanceOf(Error);
    expect(recorder.pending()).toBe(0);
    await recorder.flush();
    expect(inserted).toEqual([]);
    // Once the journal can be written again, so are new events.
    rmSync(path.join(d, 'active.jsonl'), { recursive: true });
    recorder.record(event(3));
    expect(await written(recorder)).toBeUndefined();
    await recorder.stop();
    expect(inserted).toEqual(['req_3']);
  });

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
