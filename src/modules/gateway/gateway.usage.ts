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
 * Usage events leave the request path through a local append-only journal. `record` queues
 * the event's line; the lines recorded during one turn of the event loop are appended with
 * one `write(2)` (group commit), which a killed process cannot take back (with `fsync`,
 * neither can a power loss). A response is sent only after the lines recorded before it are
 * written (`whenWritten`), so a client never holds a complete answer whose event a crash
 * could lose. A flusher inserts written events in batches and deletes a journal segment
 * once all its events are in the database. At start, segments left by a crash are
 * replayed; request ids are unique, so an event already inserted is not inserted twice.
 *
 * Journal lines carry metadata only (the columns of `usage_events`), never content.
 *
 * @example
 *   usage.record(row);
 *   usage.whenWritten((err) => (err ? fail(err) : sendLastByte()));
 */
export type UsageRecorder = {
  record(event: UsageEventRow): void;
  /**
   * Calls `done` once every event recorded so far is in the journal: at once when none is
   * waiting, else after this turn's group write (with its error, when the write failed).
   */
  whenWritten(done: (err?: Error) => void): void;
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

/** Writes all of `text`: a regular file may take a large write in more than one piece. */
function writeAll(fd: number, text: string) {
  const buf = Buffer.from(text);
  for (let off = 0; off < buf.length; ) off += writeSync(fd, buf, off, buf.length - off);
}

export function usageRecorder(deps: UsageRecorderDeps): UsageRecorder {
  const batchSize = deps.batchSize ?? 500;
  const intervalMs = deps.intervalMs ?? 250;
  mkdirSync(deps.dir, { recursive: true, mode: 0o700 });
  let fd: number | null = null;
  /** Recorded, not yet written: their lines, rows and the callers waiting for them. */
  let lines = '';
  let unwritten: UsageEventRow[] = [];
  let waiters: Array<(err?: Error) => void> = [];
  let scheduled: NodeJS.Immediate | null = null;
  /** A write failed, maybe part-way: the next starts on a new line, so no event is glued to a torn one. */
  let torn = false;
  /** Written to the active file, not yet sealed. */
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

  function flushSoon() {
    flush().catch(() => deps.logger.warn('gateway: usage events could not be written yet; kept in the journal'));
  }

  /**
   * The group commit: one write for every line recorded since the last, then the waiting
   * responses go. Runs after the turn's I/O callbacks (setImmediate), or at once before a seal.
   */
  function writeUnwritten() {
    if (scheduled) clearImmediate(scheduled);
    scheduled = null;
    if (unwritten.length === 0) return;
    const text = lines;
    const rows = unwritten;
    const done = waiters;
    lines = '';
    unwritten = [];
    waiters = [];
    let error: Error | undefined;
    try {
      const f = open();
      writeAll(f, torn ? `\n${text}` : text);
      torn = false;
      if (deps.fsync) fdatasyncSync(f);
      for (const row of rows) current.push(row);
    } catch (err) {
      // As before group commit, an event that never reached the journal is not inserted:
      // the calls waiting for it fail instead of answering.
      error = err instanceof Error ? err : new Error(String(err));
      torn = true;
      deps.logger.error(
        { events: rows.length, code: (err as { code?: unknown }).code },
        'gateway: usage journal write failed',
      );
    }
    for (const cb of done) {
      try {
        cb(error);
      } catch (err) {
        deps.logger.error({ type: (err as Error)?.name }, 'gateway: a usage journal waiter threw');
      }
    }
    if (current.length >= batchSize) flushSoon();
  }

  /** Closes the active file under a segment name; its rows become that segment's. */
  function seal() {
    writeUnwritten();
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
      lines += `${JSON.stringify(event)}\n`;
      unwritten.push(event);
      scheduled ??= setImmediate(writeUnwritten);
    },
    whenWritten(done) {
      if (unwritten.length === 0) done();
      else waiters.push(done);
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
        if (current.length === 0 && sealed.length === 0 && unwritten.length === 0) return;
        flushSoon();
      }, intervalMs);
      timer.unref();
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = null;
      try {
        await this.flush();
      } finally {
        writeUnwritten();
        if (fd !== null) closeSync(fd);
        fd = null;
      }
    },
    pending: () => unwritten.length + current.length + sealed.reduce((n, s) => n + s.rows.length, 0),
  };
}
