import {
  closeSync,
  fdatasyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import type { Logger } from '../../platform/logger.ts';
import type { UsageEventRow } from './gateway.tables.ts';

/**
 * Usage events leave the request path through a local append-only journal: `record`
 * writes the event's line to the journal file (a `write(2)`, which a killed process cannot
 * take back; with `fsync`, also a power loss) before the response's last byte is sent,
 * and queues it. A flusher inserts queued events in batches and deletes a journal segment
 * once all its events are in the database. At start, segments left by a crash are
 * replayed; request ids are unique, so an event already inserted is not inserted twice.
 *
 * Journal lines carry metadata only (the columns of `usage_events`), never content.
 */
export type UsageRecorder = {
  record(event: UsageEventRow): void;
  /** Inserts everything recorded so far. */
  flush(): Promise<void>;
  /** Inserts what an earlier process left in the journal; returns how many events it found. */
  replay(): Promise<number>;
  start(): void;
  stop(): Promise<void>;
  pending(): number;
};

export type UsageRecorderDeps = {
  dir: string;
  insert(rows: UsageEventRow[]): Promise<number>;
  logger: Logger;
  fsync?: boolean;
  intervalMs?: number;
  batchSize?: number;
};

type Segment = { file: string; rows: UsageEventRow[] };

const ACTIVE = 'active.jsonl';

function parseLine(line: string): UsageEventRow | null {
  try {
    const v = JSON.parse(line) as UsageEventRow & { createdAt: string };
    if (typeof v.requestId !== 'string' || typeof v.workspaceId !== 'string') return null;
    return { ...v, createdAt: new Date(v.createdAt) };
  } catch {
    // A line cut short by a crash mid-write: the request it belonged to never completed.
    return null;
  }
}

export function usageRecorder(deps: UsageRecorderDeps): UsageRecorder {
  const batchSize = deps.batchSize ?? 500;
  const intervalMs = deps.intervalMs ?? 250;
  mkdirSync(deps.dir, { recursive: true, mode: 0o700 });
  let fd: number | null = null;
  let current: UsageEventRow[] = [];
  const sealed: Segment[] = [];
  let seq = 0;
  let timer: NodeJS.Timeout | null = null;
  let flushing: Promise<void> | null = null;
  const activePath = path.join(deps.dir, ACTIVE);

  function open() {
    fd ??= openSync(activePath, 'a', 0o600);
    return fd;
  }

  /** Closes the active file under a segment name; its rows become that segment's. */
  function seal() {
    if (current.length === 0) return;
    if (fd !== null) closeSync(fd);
    fd = null;
    const file = path.join(deps.dir, `segment-${process.pid}-${Date.now()}-${++seq}.jsonl`);
    renameSync(activePath, file);
    sealed.push({ file, rows: current });
    current = [];
  }

  async function insertAll(rows: UsageEventRow[]) {
    for (let i = 0; i < rows.length; i += batchSize) await deps.insert(rows.slice(i, i + batchSize));
  }

  async function drain() {
    seal();
    while (sealed.length > 0) {
      const seg = sealed[0] as Segment;
      await insertAll(seg.rows);
      unlinkSync(seg.file);
      sealed.shift();
    }
  }

  function flush(): Promise<void> {
    flushing ??= drain().finally(() => {
      flushing = null;
    });
    return flushing;
  }

  return {
    record(event) {
      const f = open();
      writeSync(f, `${JSON.stringify(event)}\n`);
      if (deps.fsync) fdatasyncSync(f);
      current.push(event);
      if (current.length >= batchSize) {
        flush().catch(() => deps.logger.warn('gateway: usage events could not be written yet; kept in the journal'));
      }
    },
    async flush() {
      // A flush already running may have started before the newest events: run once more.
      if (flushing) await flushing.catch(() => undefined);
      await flush();
    },
    async replay() {
      let found = 0;
      const files = readdirSync(deps.dir).filter((f) => f.endsWith('.jsonl'));
      for (const name of files) {
        const file = path.join(deps.dir, name);
        if (name === ACTIVE && fd !== null) continue;
        const rows = readFileSync(file, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map(parseLine)
          .filter((r): r is UsageEventRow => r !== null);
        found += rows.length;
        await insertAll(rows);
        unlinkSync(file);
      }
      return found;
    },
    start() {
      timer ??= setInterval(() => {
        if (current.length === 0 && sealed.length === 0) return;
        flush().catch(() => deps.logger.warn('gateway: usage events could not be written yet; kept in the journal'));
      }, intervalMs);
      timer.unref();
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = null;
      try {
        await this.flush();
      } finally {
        if (fd !== null) closeSync(fd);
        fd = null;
      }
    },
    pending: () => current.length + sealed.reduce((n, s) => n + s.rows.length, 0),
  };
}
