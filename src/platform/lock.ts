import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/**
 * The embedded database may be opened by one process at a time: PGlite has no server to
 * arbitrate, so two writers would corrupt it. Whoever opens it (the server, or an operator
 * command such as `berth migrate`) holds `<dataDir>/berth.lock` until it closes.
 */
export type LockHolder = { pid: number; purpose: string; since: string; url?: string };

export class DataDirBusyError extends Error {
  constructor(
    readonly holder: LockHolder,
    dataDir: string,
  ) {
    super(
      holder.purpose === 'server'
        ? `The embedded database in ${dataDir} is held by a running Berth server (pid ${holder.pid}${holder.url ? `, ${holder.url}` : ''}). Stop the server first, or use the HTTP API.`
        : `The embedded database in ${dataDir} is in use by another berth command (pid ${holder.pid}: ${holder.purpose}). Try again when it has finished.`,
    );
    this.name = 'DataDirBusyError';
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readHolder(file: string): LockHolder | null {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as LockHolder;
  } catch {
    return null;
  }
}

/**
 * Removes a lock whose holder is gone (crash, kill -9). Two processes may find the same
 * stale lock at once: each moves the file aside atomically and checks it moved the stale
 * lock it read; if it moved a fresh lock another process had just taken, it puts that
 * lock back (link fails if a third one exists) and retries.
 */
function takeOverStale(file: string, seen: LockHolder | null) {
  const aside = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
  try {
    renameSync(file, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const moved = readHolder(aside);
  const same = JSON.stringify(moved) === JSON.stringify(seen);
  if (!same && moved) {
    try {
      linkSync(aside, file);
    } catch {
      // Someone holds the lock by now; theirs stays, the moved one was already superseded.
    }
  }
  rmSync(aside, { force: true });
}

export type DataDirLock = { release(): void; update(extra: Partial<LockHolder>): void };

export function lockDataDir(dataDir: string, purpose: string, clockNow: () => Date): DataDirLock {
  mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, 'berth.lock');
  let holder: LockHolder = { pid: process.pid, purpose, since: clockNow().toISOString() };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(file, JSON.stringify(holder), { flag: 'wx', mode: 0o600 });
      let released = false;
      return {
        release() {
          if (released) return;
          released = true;
          rmSync(file, { force: true });
        },
        update(extra) {
          holder = { ...holder, ...extra };
          writeFileSync(file, JSON.stringify(holder), { mode: 0o600 });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const seen = readHolder(file);
      if (seen && seen.pid !== process.pid && alive(seen.pid)) throw new DataDirBusyError(seen, dataDir);
      takeOverStale(file, seen);
    }
  }
  throw new Error(`Could not lock ${dataDir}`);
}
