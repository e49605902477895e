import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../config.ts';
import { createLogger } from '../../platform/logger.ts';
import { canonicalContext, open, parseCiphertext, seal, unwrapKey, VaultError, wrapKey } from './vault.crypto.ts';
import {
  addKekVersion,
  formatKeyring,
  generateKek,
  keyringFilePath,
  loadKeyring,
  parseKeyring,
  removeKekVersion,
} from './vault.keyring.ts';

const dek = Buffer.alloc(32, 3);
const ctx = {
  owner: { type: 'user' as const, id: 'usr_01JD6F3Q4N8ZK5R2W7XH9YB0C1' },
  record: 'mfa_1',
  field: 'secret',
};
const keyId = 'dk_01JD6F3Q4N8ZK5R2W7XH9YB0C1';

function captureLogger() {
  const lines: string[] = [];
  return { logger: createLogger({ level: 'debug', destination: { write: (l: string) => lines.push(l) } }), lines };
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'berth-vault-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('happy', () => {
  it('seals and opens a value, with the format version and key id in the header', () => {
    const ct = seal(dek, keyId, ctx, Buffer.from('hunter2'));
    expect(ct[0]).toBe(0x01);
    const parsed = parseCiphertext(ct);
    expect(parsed.keyId).toBe(keyId);
    expect(open(dek, parsed, ctx).toString()).toBe('hunter2');
    expect(ct.includes(Buffer.from('hunter2'))).toBe(false);
  });

  it('two encryptions of the same value differ (fresh nonce)', () => {
    expect(seal(dek, keyId, ctx, Buffer.from('x')).equals(seal(dek, keyId, ctx, Buffer.from('x')))).toBe(false);
  });

  it('wraps and unwraps a data key under a KEK version', () => {
    const kek = Buffer.alloc(32, 9);
    const wrapped = wrapKey(kek, 2, ctx.owner, keyId, dek);
    expect(wrapped.length).toBe(60);
    expect(unwrapKey(kek, 2, ctx.owner, keyId, wrapped).equals(dek)).toBe(true);
  });

  it('the canonical context percent-encodes parts, so separators cannot be smuggled', () => {
    expect(canonicalContext({ owner: { type: 'user', id: 'a:b' }, record: 'c', field: 'd' })).toBe('user:a%3Ab:c:d');
    expect(canonicalContext({ owner: { type: 'user', id: 'a' }, record: 'b:c', field: 'd' })).toBe('user:a:b%3Ac:d');
  });

  it('generateKek makes a key parseKeyring accepts; the highest version is current', () => {
    const v1 = generateKek();
    const v3 = generateKek(3);
    expect(v1).toMatch(/^berth-kek-v1:[A-Za-z0-9_-]{43}$/);
    const ring = parseKeyring(`${v1},\n ${v3}`);
    expect(ring.current.version).toBe(3);
    expect([...ring.all.keys()].sort()).toEqual([1, 3]);
    expect(ring.current.key.length).toBe(32);
    expect(parseKeyring(formatKeyring(ring)).all).toEqual(ring.all);
  });

  it('loadKeyring reads BERTH_KEK, and BERTH_KEK_FILE', () => {
    const { logger } = captureLogger();
    const kek = generateKek(4);
    const fromEnv = loadKeyring(loadConfig({ overrides: { BERTH_KEK: kek, BERTH_DATA_DIR: dir } }), {
      engine: 'postgres',
      logger,
    });
    expect(fromEnv.current.version).toBe(4);
    expect(fromEnv.source).toBe('BERTH_KEK');
    const file = path.join(dir, 'kek.txt');
    writeFileSync(file, `${kek}\n`, { mode: 0o600 });
    const fromFile = loadKeyring(loadConfig({ overrides: { BERTH_KEK_FILE: file, BERTH_DATA_DIR: dir } }), {
      engine: 'postgres',
      logger,
    });
    expect(fromFile.current.key.equals(fromEnv.current.key)).toBe(true);
    expect(fromFile.file).toBe(file);
  });

  it('on the first embedded start generates <dataDir>/kek with mode 0600, says so, and reuses it', () => {
    const { logger, lines } = captureLogger();
    const dataDir = path.join(dir, 'data');
    const config = loadConfig({ overrides: { BERTH_DATA_DIR: dataDir } });
    const first = loadKeyring(config, { engine: 'pglite', logger });
    const file = path.join(dataDir, 'kek');
    expect(first.generated).toBe(true);
    expect(first.file).toBe(file);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(lines.some((l) => l.includes('Generated a key-encryption key') && l.includes(file))).toBe(true);
    const second = loadKeyring(config, { engine: 'pglite', logger });
    expect(second.generated).toBe(false);
    expect(second.current.key.equals(first.current.key)).toBe(true);
    expect(keyringFilePath(config)).toBe(file);
  });

  it('addKekVersion adds the next version to a keyring file; removeKekVersion takes an old one out', () => {
    const file = path.join(dir, 'kek');
    writeFileSync(file, generateKek(1), { mode: 0o600 });
    const before = parseKeyring(readFileSync(file, 'utf8'));
    expect(addKekVersion(file)).toEqual({ version: 2 });
    const after = parseKeyring(readFileSync(file, 'utf8'));
    expect(after.current.version).toBe(2);
    expect(after.all.get(1)?.equals(before.current.key)).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(removeKekVersion(file, 1)).toEqual({ removed: true });
    expect([...parseKeyring(readFileSync(file, 'utf8')).all.keys()]).toEqual([2]);
  });
});

describe('errors', () => {
  it('a tampered byte anywhere fails to open', () => {
    const ct = seal(dek, keyId, ctx, Buffer.from('hunter2'));
    const head = 2 + keyId.length;
    for (const i of [head, head + 12, ct.length - 1]) {
      const bad = Buffer.from(ct);
      bad[i] = (bad[i] ?? 0) ^ 1;
      expect(() => open(dek, parseCiphertext(bad), ctx)).toThrow(VaultError);
    }
  });

  it('a ciphertext moved to another owner, record or field fails to open', () => {
    const parsed = parseCiphertext(seal(dek, keyId, ctx, Buffer.from('hunter2')));
    for (const other of [
      { ...ctx, owner: { type: 'workspace' as const, id: ctx.owner.id } },
      { ...ctx, owner: { type: 'user' as const, id: 'usr_01JD6F3Q4N8ZK5R2W7XH9YB0C2' } },
      { ...ctx, record: 'mfa_2' },
      { ...ctx, field: 'other' },
    ]) {
      expect(() => open(dek, parsed, other)).toThrow(expect.objectContaining({ reason: 'authentication_failed' }));
    }
  });

  it('an unknown format version or a truncated value is malformed', () => {
    const ct = seal(dek, keyId, ctx, Buffer.from('x'));
    const v2 = Buffer.from(ct);
    v2[0] = 0x02;
    expect(() => parseCiphertext(v2)).toThrow(expect.objectContaining({ reason: 'malformed' }));
    expect(() => parseCiphertext(ct.subarray(0, 20))).toThrow(expect.objectContaining({ reason: 'malformed' }));
    expect(() => parseCiphertext(Buffer.alloc(0))).toThrow(expect.objectContaining({ reason: 'malformed' }));
  });

  it('a wrapped key does not unwrap under another KEK, version, owner or id', () => {
    const kek = Buffer.alloc(32, 9);
    const wrapped = wrapKey(kek, 1, ctx.owner, keyId, dek);
    expect(() => unwrapKey(Buffer.alloc(32, 8), 1, ctx.owner, keyId, wrapped)).toThrow(/cannot be unwrapped/);
    expect(() => unwrapKey(kek, 2, ctx.owner, keyId, wrapped)).toThrow(/cannot be unwrapped/);
    expect(() => unwrapKey(kek, 1, { type: 'workspace', id: ctx.owner.id }, keyId, wrapped)).toThrow();
    expect(() => unwrapKey(kek, 1, ctx.owner, 'dk_01JD6F3Q4N8ZK5R2W7XH9YB0C2', wrapped)).toThrow();
  });

  it('rejects malformed KEK text, naming the setting and not echoing the key', () => {
    const short = `berth-kek-v1:${Buffer.alloc(16, 1).toString('base64url')}`;
    for (const bad of ['', 'nonsense', short, 'berth-kek-v0:AAAA', `${generateKek(1)},${generateKek(1)}`]) {
      let err: unknown;
      try {
        parseKeyring(bad, 'BERTH_KEK');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).setting).toBe('BERTH_KEK');
      expect((err as ConfigError).message).toContain('BERTH_KEK');
      if (bad) expect((err as ConfigError).message).not.toContain(bad.slice(13, 30) || 'nonsense');
    }
    expect(() =>
      loadKeyring(loadConfig({ overrides: { BERTH_KEK: 'berth-kek-v1:tooshort', BERTH_DATA_DIR: dir } }), {
        engine: 'pglite',
        logger: captureLogger().logger,
      }),
    ).toThrow(/BERTH_KEK/);
  });

  it('names BERTH_KEK_FILE for a missing or bad file', () => {
    const { logger } = captureLogger();
    const missing = loadConfig({ overrides: { BERTH_KEK_FILE: path.join(dir, 'nope'), BERTH_DATA_DIR: dir } });
    expect(() => loadKeyring(missing, { engine: 'postgres', logger })).toThrow(/BERTH_KEK_FILE.*ENOENT/);
    const file = path.join(dir, 'bad');
    writeFileSync(file, 'not a key');
    const bad = loadConfig({ overrides: { BERTH_KEK_FILE: file, BERTH_DATA_DIR: dir } });
    expect(() => loadKeyring(bad, { engine: 'postgres', logger })).toThrow(/BERTH_KEK_FILE: entry 1/);
  });

  it('refuses to start on server Postgres without a configured KEK, and generates nothing', () => {
    const config = loadConfig({ overrides: { BERTH_DATA_DIR: dir } });
    expect(() => loadKeyring(config, { engine: 'postgres', logger: captureLogger().logger })).toThrow(
      /BERTH_KEK: required with DATABASE_URL/,
    );
    expect(() => statSync(path.join(dir, 'kek'))).toThrow();
  });

  it('removeKekVersion refuses to remove the current version', () => {
    const file = path.join(dir, 'kek');
    writeFileSync(file, `${generateKek(2)}\n${generateKek(1)}`, { mode: 0o600 });
    expect(() => removeKekVersion(file, 2)).toThrow(/current/);
  });
});

describe('security', () => {
  it('the KEK file is not readable by group or others and logs never contain the key', () => {
    const { logger, lines } = captureLogger();
    const ring = loadKeyring(loadConfig({ overrides: { BERTH_DATA_DIR: dir } }), { engine: 'pglite', logger });
    expect(statSync(path.join(dir, 'kek')).mode & 0o077).toBe(0);
    const b64 = ring.current.key.toString('base64url');
    expect(lines.join('\n')).not.toContain(b64);
  });

  it('warns when a configured KEK file is readable by others', () => {
    const { logger, lines } = captureLogger();
    const file = path.join(dir, 'loose');
    writeFileSync(file, generateKek(1), { mode: 0o644 });
    loadKeyring(loadConfig({ overrides: { BERTH_KEK_FILE: file, BERTH_DATA_DIR: dir } }), { engine: 'pglite', logger });
    expect(lines.some((l) => l.includes('readable by other users'))).toBe(true);
  });
});
