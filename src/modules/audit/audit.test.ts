import { createHash, verify } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config.ts';
import { createLogger } from '../../platform/logger.ts';
import {
  type ChainedEvent,
  canonicalEvent,
  canonicalJson,
  chainWalker,
  GENESIS_HASH,
  hashEvent,
} from './audit.chain.ts';
import {
  checkpointMessage,
  generateAuditSigningKey,
  loadAuditSigningKey,
  parseAuditSigningKey,
  signCheckpoint,
  verifyCheckpoint,
} from './audit.signing.ts';

const logger = createLogger({ level: 'silent' });

function event(seq: number, prevHash: string, extra: Partial<ChainedEvent> = {}): ChainedEvent & { hash: string } {
  const e: ChainedEvent = {
    id: `aud_${seq}`,
    chain: 'ws_1',
    workspaceId: 'ws_1',
    seq,
    occurredAt: new Date(Date.UTC(2026, 0, 1, 0, 0, seq)),
    actorType: 'user',
    actorId: 'usr_1',
    actorUserId: 'usr_1',
    ip: null,
    userAgent: null,
    requestId: null,
    action: 'test.done',
    targetType: 'thing',
    targetId: `t${seq}`,
    outcome: 'success',
    diff: { b: 1, a: [2, { d: null, c: 'x' }] },
    prevHash,
    ...extra,
  };
  return { ...e, hash: hashEvent(e) };
}

function chain(n: number) {
  const out: Array<ChainedEvent & { hash: string }> = [];
  let prev = GENESIS_HASH;
  for (let i = 1; i <= n; i++) {
    const e = event(i, prev);
    out.push(e);
    prev = e.hash;
  }
  return out;
}

describe('happy', () => {
  it('canonical JSON sorts keys at every depth, keeps explicit nulls, writes ISO times, no whitespace', () => {
    expect(canonicalJson({ b: 1, a: { d: null, c: [true, 'x'] }, t: new Date('2026-01-02T03:04:05.006Z') })).toBe(
      '{"a":{"c":[true,"x"],"d":null},"b":1,"t":"2026-01-02T03:04:05.006Z"}',
    );
    const e = event(1, GENESIS_HASH);
    expect(canonicalEvent(e)).toContain('"actor_user_id":"usr_1","chain":"ws_1"');
    expect(canonicalEvent(e)).toContain('"ip":null');
    expect(canonicalEvent(e)).not.toContain('"hash"');
  });

  it('hash = SHA-256(prev_hash || canonical(event)), and any field change changes it', () => {
    const e = event(1, GENESIS_HASH);
    const expected = createHash('sha256')
      .update(GENESIS_HASH + canonicalEvent(e))
      .digest('hex');
    expect(e.hash).toBe(expected);
    expect(hashEvent({ ...e, action: 'test.other' })).not.toBe(e.hash);
    expect(hashEvent({ ...e, diff: { b: 1, a: [2, { d: null, c: 'y' }] } })).not.toBe(e.hash);
    expect(hashEvent({ ...e, diff: { a: [2, { c: 'x', d: null }], b: 1 } })).toBe(e.hash);
  });

  it('an intact chain walks to its head', () => {
    const events = chain(5);
    const w = chainWalker({ seq: 1, hash: GENESIS_HASH });
    for (const e of events) expect(w.push(e)).toBe(true);
    expect(w.finish({ seq: 5, hash: events[4]?.hash ?? '' })).toEqual({ checked: 5, broken: null });
  });

  it('Ed25519 checkpoint signatures verify with the public key alone (as an offline auditor would)', () => {
    const key = parseAuditSigningKey(generateAuditSigningKey());
    const cp = { chain: 'ws_1', seq: 7, hash: 'a'.repeat(64), createdAt: new Date('2026-01-01T00:00:00Z') };
    const signature = signCheckpoint(key, cp);
    expect(verifyCheckpoint(key, { ...cp, signature })).toBe(true);
    expect(checkpointMessage(cp)).toBe(`ws_1|7|${'a'.repeat(64)}|2026-01-01T00:00:00.000Z`);
    expect(
      verify(null, Buffer.from(checkpointMessage(cp)), key.publicKeyPem, Buffer.from(signature, 'base64url')),
    ).toBe(true);
    expect(key.keyId).toMatch(/^ed25519:[0-9a-f]{16}$/);
    expect(parseAuditSigningKey(generateAuditSigningKey()).keyId).not.toBe(key.keyId);
  });
});

describe('errors', () => {
  it('names the first broken seq: edited, deleted, reordered, truncated', () => {
    const edited = chain(5);
    const third = edited[2];
    if (third) edited[2] = { ...third, action: 'test.innocent' };
    const w1 = chainWalker({ seq: 1, hash: GENESIS_HASH });
    for (const e of edited) if (!w1.push(e)) break;
    expect(w1.finish(null).broken).toEqual({ seq: 3, reason: 'hash_mismatch' });

    const deleted = chain(5).filter((e) => e.seq !== 4);
    const w2 = chainWalker({ seq: 1, hash: GENESIS_HASH });
    for (const e of deleted) if (!w2.push(e)) break;
    expect(w2.finish(null).broken).toEqual({ seq: 4, reason: 'seq_gap' });

    const swapped = chain(5).map((e) => (e.seq === 2 ? { ...e, seq: 3 } : e.seq === 3 ? { ...e, seq: 2 } : e));
    swapped.sort((a, b) => a.seq - b.seq);
    const w3 = chainWalker({ seq: 1, hash: GENESIS_HASH });
    for (const e of swapped) if (!w3.push(e)) break;
    expect(w3.finish(null).broken).toEqual({ seq: 2, reason: 'prev_hash_mismatch' });

    const full = chain(5);
    const w4 = chainWalker({ seq: 1, hash: GENESIS_HASH });
    for (const e of full.slice(0, 3)) w4.push(e);
    expect(w4.finish({ seq: 5, hash: full[4]?.hash ?? '' }).broken).toEqual({ seq: 4, reason: 'head_mismatch' });
  });

  it('refuses values canonical JSON cannot hold exactly', () => {
    expect(() => canonicalJson({ x: Number.NaN })).toThrow();
    expect(() => canonicalJson({ x: 1n })).toThrow();
  });

  it('a tampered message, signature or other key fails verification', () => {
    const key = parseAuditSigningKey(generateAuditSigningKey());
    const other = parseAuditSigningKey(generateAuditSigningKey());
    const cp = { chain: 'platform', seq: 3, hash: 'b'.repeat(64), createdAt: new Date('2026-01-01T00:00:00Z') };
    const signature = signCheckpoint(key, cp);
    expect(verifyCheckpoint(key, { ...cp, seq: 4, signature })).toBe(false);
    expect(verifyCheckpoint(other, { ...cp, signature })).toBe(false);
    expect(verifyCheckpoint(key, { ...cp, signature: 'not-a-signature' })).toBe(false);
  });

  it('a malformed key is refused naming the setting, never echoing it', () => {
    const bad = 'berth-audit-ed25519:short-secret-material';
    expect(() => parseAuditSigningKey(bad)).toThrow(/BERTH_AUDIT_SIGNING_KEY/);
    try {
      parseAuditSigningKey(bad);
    } catch (err) {
      expect(String(err)).not.toContain('short-secret-material');
    }
    expect(() =>
      loadConfig({ overrides: { BERTH_AUDIT_SIGNING_KEY: 'x', BERTH_AUDIT_SIGNING_KEY_FILE: 'y' } }),
    ).toThrow(/not both/);
  });
});

describe('security', () => {
  let dir: string | null = null;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = null;
  });

  it('on the embedded engine the key is generated once into the data dir with mode 0600', () => {
    dir = mkdtempSync(path.join(tmpdir(), 'berth-audit-key-'));
    const config = { dataDir: dir };
    const first = loadAuditSigningKey(config, { engine: 'pglite', logger });
    expect(first?.generated).toBe(true);
    const file = path.join(dir, 'audit-signing-key');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const again = loadAuditSigningKey(config, { engine: 'pglite', logger });
    expect(again?.generated).toBe(false);
    expect(again?.keyId).toBe(first?.keyId);
    expect(readFileSync(file, 'utf8')).toMatch(/^berth-audit-ed25519:/);
  });

  it('on server Postgres nothing is generated: checkpoints wait for a configured key', () => {
    dir = mkdtempSync(path.join(tmpdir(), 'berth-audit-key-'));
    expect(loadAuditSigningKey({ dataDir: dir }, { engine: 'postgres', logger })).toBeNull();
    const text = generateAuditSigningKey();
    const configured = loadAuditSigningKey(
      { dataDir: dir, BERTH_AUDIT_SIGNING_KEY: text },
      { engine: 'postgres', logger },
    );
    expect(configured?.keyId).toBe(parseAuditSigningKey(text).keyId);
  });

  it('config print masks the signing key', async () => {
    const { maskedConfig } = await import('../../config.ts');
    const text = generateAuditSigningKey();
    const masked = maskedConfig(loadConfig({ overrides: { BERTH_AUDIT_SIGNING_KEY: text } }));
    expect(JSON.stringify(masked)).not.toContain(text.slice(20));
  });
});
