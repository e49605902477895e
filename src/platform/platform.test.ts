import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { manualClock } from './clock.ts';
import { isId, newId } from './ids.ts';
import { DataDirBusyError, lockDataDir } from './lock.ts';
import { createLogger } from './logger.ts';
import { microsToUsd, usdToMicros } from './money.ts';

describe('happy', () => {
  it('ids are prefixed, well-formed and sort by creation time', () => {
    const a = newId('usr', new Date('2026-01-01T00:00:00Z'));
    const b = newId('usr', new Date('2026-01-01T00:00:01Z'));
    expect(a).toMatch(/^usr_[0-9A-Z]{26}$/);
    expect(isId(a, 'usr')).toBe(true);
    expect(isId(a, 'ws')).toBe(false);
    expect(a < b).toBe(true);
    expect(new Set(Array.from({ length: 1000 }, () => newId('ws'))).size).toBe(1000);
  });

  it('ids made in the same millisecond sort in the order they were made', () => {
    const at = new Date('2026-03-01T00:00:00Z');
    const ids = Array.from({ length: 200 }, () => newId('use', at));
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids.map((id) => id.slice(4, 14))).size).toBe(1);
  });

  it('converts USD text to micro-units exactly and back, refusing anything else', () => {
    expect(usdToMicros('12.50')).toBe(12_500_000);
    expect(usdToMicros('0.000001')).toBe(1);
    expect(usdToMicros('999999999.999999')).toBe(999_999_999_999_999);
    expect(usdToMicros('-0.5', { signed: true })).toBe(-500_000);
    for (const bad of ['-0.5', '1.0000001', '1e3', '0x10', '', '.5', '1,5', '1234567890']) {
      expect(usdToMicros(bad), bad).toBeNull();
    }
    expect(microsToUsd(12_500_000)).toBe('12.50');
    expect(microsToUsd(12)).toBe('0.000012');
    expect(microsToUsd(-500_000)).toBe('-0.50');
  });

  it('the manual clock moves only when told', () => {
    const clock = manualClock('2026-03-01T00:00:00Z');
    expect(clock.now().toISOString()).toBe('2026-03-01T00:00:00.000Z');
    clock.advance(60_000);
    expect(clock.now().toISOString()).toBe('2026-03-01T00:01:00.000Z');
  });
});

describe('errors', () => {
  it('the data dir lock refuses a second holder while the first lives, and is reusable after release', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'berth-lock-'));
    const now = () => new Date();
    const first = lockDataDir(dir, 'server', now);
    // The same process cannot take it twice either (pid check is for other processes,
    // so simulate another live holder by pointing at our parent).
    first.update({ pid: process.ppid, url: 'http://127.0.0.1:8080' });
    expect(() => lockDataDir(dir, 'migrate', now)).toThrow(DataDirBusyError);
    expect(() => lockDataDir(dir, 'migrate', now)).toThrow(/held by a running Berth server/);
    first.release();
    const second = lockDataDir(dir, 'migrate', now);
    second.release();
  });

  it('a lock left by a dead process is taken over', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'berth-lock-'));
    const stale = lockDataDir(dir, 'server', () => new Date());
    stale.update({ pid: 2 ** 22 + 12345 });
    const next = lockDataDir(dir, 'server', () => new Date());
    next.release();
  });
});

describe('concurrency', () => {
  it('of several processes racing for a stale lock, exactly one gets it', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'berth-lock-race-'));
    writeFileSync(
      path.join(dir, 'berth.lock'),
      JSON.stringify({ pid: 2 ** 22 + 777, purpose: 'server', since: '2026-01-01T00:00:00Z' }),
    );
    const lockModule = path.resolve('src/platform/lock.ts');
    const script = `
      import { lockDataDir } from ${JSON.stringify(lockModule)};
      try {
        lockDataDir(${JSON.stringify(dir)}, 'race', () => new Date());
        console.log('got');
        setTimeout(() => {}, 1500);
      } catch (err) {
        console.log(err.name === 'DataDirBusyError' ? 'busy' : 'error ' + err.message);
      }`;
    const scriptFile = path.join(dir, 'race.mts');
    writeFileSync(scriptFile, script);
    const run = () =>
      new Promise<string>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', scriptFile]);
        let out = '';
        child.stdout.on('data', (d) => {
          out += d;
        });
        child.on('close', () => resolve(out.trim()));
      });
    const results = await Promise.all(Array.from({ length: 6 }, run));
    expect(results.filter((r) => r === 'got')).toHaveLength(1);
    expect(results.filter((r) => r === 'busy')).toHaveLength(5);
  }, 60_000);
});

describe('security', () => {
  it('the logger redacts credentials wherever they appear', () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'info', destination: { write: (l: string) => lines.push(l) } });
    log.info(
      {
        req: {
          headers: { authorization: 'Bearer sk-secret-1', cookie: 'berth_session=sess-secret-2', 'x-api-key': 'key-3' },
        },
        body: { password: 'pw-secret-4', token: 'tok-secret-5' },
        password: 'pw-secret-6',
      },
      'request',
    );
    const text = lines.join('\n');
    for (const secret of ['sk-secret-1', 'sess-secret-2', 'key-3', 'pw-secret-4', 'tok-secret-5', 'pw-secret-6']) {
      expect(text).not.toContain(secret);
    }
    expect(text).toContain('[redacted]');
  });
});
