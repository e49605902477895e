import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { manualClock } from '../../platform/clock.ts';
import { createLogger } from '../../platform/logger.ts';
import { roleAllows } from '../workspaces/index.ts';
import { keyCache } from './keys.cache.ts';
import { CHECKSUM_LENGTH, crc32, generateKey, KEY_LENGTH, parseKey, toBase62 } from './keys.format.ts';
import { formatCidr, ipAllowed, normalizeCidrs, parseCidr, parseIp } from './keys.net.ts';
import { roleAllowsScope, SCOPES, scopePermissions, scopesCover } from './keys.scopes.ts';
import { usageTracker } from './keys.usage.ts';
import { type CachedKey, keyVerifier, parseInvalidation } from './keys.verify.ts';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

describe('happy', () => {
  it('generates keys of the documented shape that parse back', () => {
    const live = generateKey('live');
    expect(live).toMatch(/^brt_live_[0-9A-Za-z]{32}_[0-9A-Za-z]{6}$/);
    expect(live).toHaveLength(KEY_LENGTH);
    expect(parseKey(live)).toEqual({
      env: 'live',
      key: live,
      displayPrefix: live.slice(0, 13),
      last4: live.slice(-4),
    });
    const test = generateKey('test');
    expect(parseKey(test)?.env).toBe('test');
    expect(generateKey()).toMatch(/^brt_live_/);
  });

  it('computes the standard CRC-32 and fixed-width base62', () => {
    // The check value of CRC-32/ISO-HDLC (zlib's).
    expect(crc32('123456789')).toBe(0xcbf43926);
    expect(crc32('')).toBe(0);
    expect(toBase62(0, 6)).toBe('000000');
    expect(toBase62(61, 2)).toBe('0z');
    expect(toBase62(0xffffffff, CHECKSUM_LENGTH)).toHaveLength(6);
  });

  it('draws about 190 bits: every base62 character appears and keys never repeat', () => {
    const keys = Array.from({ length: 2000 }, () => generateKey());
    expect(new Set(keys).size).toBe(keys.length);
    const seen = new Set(keys.flatMap((k) => [...k.slice(9, 41)]));
    expect([...seen].sort().join('')).toBe([...BASE62].sort().join(''));
  });

  it('matches IPv4 and IPv6 ranges, including IPv4-mapped clients', () => {
    const list = normalizeCidrs(['10.0.0.0/8', '2001:db8::/32', '192.168.1.7']).map(parseCidr);
    expect(ipAllowed(list, '10.200.3.4')).toBe(true);
    expect(ipAllowed(list, '::ffff:10.1.1.1')).toBe(true);
    expect(ipAllowed(list, '192.168.1.7')).toBe(true);
    expect(ipAllowed(list, '2001:db8:ffff::1')).toBe(true);
    expect(ipAllowed(list, '11.0.0.1')).toBe(false);
    expect(ipAllowed(list, '192.168.1.8')).toBe(false);
    expect(ipAllowed(list, '2001:db9::1')).toBe(false);
    expect(ipAllowed(list, 'not an ip')).toBe(false);
    expect(ipAllowed([parseCidr('0.0.0.0/0')], '8.8.8.8')).toBe(true);
    expect(ipAllowed([parseCidr('::/0')], '8.8.8.8')).toBe(false);
  });

  it('canonicalises CIDRs', () => {
    expect(normalizeCidrs(['192.168.1.7', '2001:DB8:0:0::/64', '::1', '10.0.0.0/8', '10.0.0.0/8'])).toEqual([
      '192.168.1.7/32',
      '2001:db8::/64',
      '::1/128',
      '10.0.0.0/8',
    ]);
    expect(formatCidr(parseCidr('fe80:0:0:1::/64'))).toBe('fe80:0:0:1::/64');
    expect(parseIp('::ffff:1.2.3.4')).toEqual({ version: 4, value: 0x01020304n });
    expect(parseIp('fe80::1%eth0')?.version).toBe(6);
  });

  it('maps scopes onto the permission table', () => {
    expect(scopesCover(['gateway:invoke'], 'gateway:invoke')).toBe(true);
    expect(scopesCover(['workspace:admin'], 'gateway:invoke')).toBe(false);
    expect(scopesCover(['workspace:admin'], 'members:read')).toBe(true);
    expect(scopesCover(['workspace:admin'], 'keys:manage')).toBe(true);
    expect(scopesCover(['models:read'], 'members:read')).toBe(false);
    expect(scopesCover(['models:read'], 'providers:read')).toBe(true);
    expect(scopesCover(['agents:write'], 'agents:manage')).toBe(true);
    expect(scopesCover(['knowledge:write'], 'knowledge:manage')).toBe(true);
    expect(scopesCover(['made:up'], 'members:read')).toBe(false);
    // workspace:admin never reaches what only owners may do.
    for (const p of scopePermissions('workspace:admin')) expect(roleAllows('admin', p), p).toBe(true);
    expect(scopesCover(['workspace:admin'], 'workspace:delete')).toBe(false);
    expect(scopesCover(['workspace:admin'], 'ownership:transfer')).toBe(false);
    expect(scopesCover(['workspace:admin'], 'billing:manage')).toBe(false);
    expect(scopesCover(['workspace:admin'], 'security:manage')).toBe(false);
    // An explicit list, not "whatever admins may do": leaving the workspace is a person's act.
    expect(scopesCover(['workspace:admin'], 'membership:leave')).toBe(false);
  });

  it('allows a role only the scopes whose permissions it has', () => {
    for (const s of SCOPES) expect(roleAllowsScope('owner', s), s).toBe(true);
    for (const s of SCOPES) expect(roleAllowsScope('admin', s), s).toBe(true);
    expect(roleAllowsScope('member', 'gateway:invoke')).toBe(true);
    expect(roleAllowsScope('member', 'billing:read')).toBe(false);
    expect(roleAllowsScope('member', 'workspace:admin')).toBe(false);
    expect(roleAllowsScope('viewer', 'models:read')).toBe(true);
    expect(roleAllowsScope('viewer', 'gateway:invoke')).toBe(false);
  });

  it('caches lookups with a TTL, least recently used out first, and invalidates by key, hash or all', () => {
    const clock = manualClock();
    const cache = keyCache<string>({ clock, max: 2, ttlMs: 1000, negativeTtlMs: 100, holdMs: 50 });
    cache.set('h1', 'a', 'k1');
    cache.set('h2', 'b', 'k2');
    expect(cache.get('h1')).toEqual({ hit: true, value: 'a' });
    cache.set('h3', 'c', 'k3'); // h2 is now the least recently used
    expect(cache.get('h2')).toEqual({ hit: false });
    expect(cache.size).toBe(2);
    cache.invalidate({ keys: ['k1'] });
    expect(cache.get('h1')).toEqual({ hit: false });
    // While the invalidation is held, a racing lookup cannot put the old state back.
    cache.set('h1', 'stale', 'k1');
    expect(cache.get('h1')).toEqual({ hit: false });
    clock.advance(51);
    cache.set('h1', 'fresh', 'k1');
    expect(cache.get('h1')).toEqual({ hit: true, value: 'fresh' });
    cache.set('h9', null, null);
    expect(cache.get('h9')).toEqual({ hit: true, value: null });
    clock.advance(101);
    expect(cache.get('h9')).toEqual({ hit: false });
    clock.advance(1000);
    expect(cache.get('h1')).toEqual({ hit: false });
    cache.set('h4', 'd', 'k4');
    cache.invalidate({ all: true });
    expect(cache.size).toBe(0);
  });

  it('trusts a found key 10 s by default: the bound for a replica that missed an invalidation', () => {
    const clock = manualClock();
    const cache = keyCache<string>({ clock });
    cache.set('h1', 'a', 'k1');
    clock.advance(9_999);
    expect(cache.get('h1')).toEqual({ hit: true, value: 'a' });
    clock.advance(2);
    expect(cache.get('h1')).toEqual({ hit: false });
  });

  it('after a failed announcement, logs it, empties the cache and keeps entries short-lived for a minute', async () => {
    const clock = manualClock();
    const cache = keyCache<CachedKey>({ clock });
    const logger = createLogger({ level: 'silent' });
    const warn = vi.spyOn(logger, 'warn');
    const verifier = keyVerifier({
      db: { system: () => Promise.reject(new Error('not used')) },
      repo: { findByHash: async () => null, keyIdsOfCreator: async () => [] },
      clock,
      logger,
      members: { resolveMembership: async () => null },
      users: { findUserById: async () => null },
      cache,
      usage: usageTracker({ clock, write: async () => undefined, onError: () => undefined }),
      publish: () => Promise.reject(new Error('bus down')),
    });
    cache.set('other', null, null);
    await expect(verifier.announce({ keys: ['key_x'] })).resolves.toBeUndefined();
    expect(warn).toHaveBeenCalledTimes(1);
    expect(cache.size).toBe(0);
    cache.set('h1', null, 'k1');
    clock.advance(1_001);
    expect(cache.get('h1')).toEqual({ hit: false });
    clock.advance(60_000);
    cache.set('h2', null, 'k2');
    clock.advance(1_001);
    expect(cache.get('h2')).toEqual({ hit: true, value: null });
  });

  it('writes last-used times at most once a minute per key, in one batch', async () => {
    const clock = manualClock('2026-03-01T10:00:00Z');
    const writes: Array<Array<{ id: string; at: Date }>> = [];
    const usage = usageTracker({ clock, write: async (e) => void writes.push(e), onError: () => undefined });
    usage.touch('key_a');
    usage.touch('key_b');
    clock.advance(5_000);
    usage.touch('key_a');
    await usage.flush();
    expect(writes).toHaveLength(1);
    expect(writes[0]?.map((e) => [e.id, e.at.toISOString()])).toEqual([
      ['key_a', '2026-03-01T10:00:05.000Z'],
      ['key_b', '2026-03-01T10:00:00.000Z'],
    ]);
    clock.advance(30_000);
    usage.touch('key_a');
    await usage.flush();
    expect(writes).toHaveLength(1);
    clock.advance(31_000);
    usage.touch('key_a');
    await usage.flush();
    expect(writes[1]?.map((e) => e.id)).toEqual(['key_a']);
  });

  it('reads invalidation messages', () => {
    expect(parseInvalidation('{"keys":["key_1"],"hashes":["ab"]}')).toEqual({ keys: ['key_1'], hashes: ['ab'] });
    expect(parseInvalidation('{"all":true}')).toEqual({ all: true });
  });
});

describe('errors', () => {
  it('refuses malformed keys without looking anything up', () => {
    const key = generateKey();
    for (const bad of [
      '',
      'brt_live_',
      key.slice(0, -1),
      `${key}x`,
      key.replace('brt_live_', 'brt_prod_'),
      key.replace('brt_', 'sk_'),
      key.toUpperCase(),
      ` ${key}`,
      key.replace(/_([0-9A-Za-z]{6})$/, '-$1'),
      'sk-proj-abcdefghijklmnopqrstuvwxyz0123456789',
    ]) {
      expect(parseKey(bad), bad).toBeNull();
    }
  });

  it('rejects any single-character change of a valid key (property)', () => {
    const alphabet = [...`${BASE62}_-. `];
    fc.assert(
      fc.property(
        fc.constantFrom('live' as const, 'test' as const),
        fc.nat(KEY_LENGTH - 1),
        fc.constantFrom(...alphabet),
        (env, index, ch) => {
          const key = generateKey(env);
          fc.pre(key[index] !== ch);
          const changed = key.slice(0, index) + ch + key.slice(index + 1);
          return parseKey(changed) === null;
        },
      ),
      { numRuns: 5000 },
    );
  });

  it('rejects every single-character change at every position of one key (exhaustive)', () => {
    const key = generateKey();
    let tried = 0;
    for (let i = 0; i < key.length; i++) {
      for (const ch of `${BASE62}_`) {
        if (key[i] === ch) continue;
        tried++;
        expect(parseKey(key.slice(0, i) + ch + key.slice(i + 1)), `${i}:${ch}`).toBeNull();
      }
    }
    expect(tried).toBe(KEY_LENGTH * 62);
  });

  it('refuses malformed CIDRs with a message that says why', () => {
    expect(() => parseCidr('10.0.0.0/33')).toThrow(/at most 32/);
    expect(() => parseCidr('10.0.0.1/8')).toThrow(/host bits set: use 10.0.0.0\/8/);
    expect(() => parseCidr('300.0.0.0/8')).toThrow(/not an IPv4 or IPv6/);
    expect(() => parseCidr('example.com')).toThrow(/not an IPv4 or IPv6/);
    expect(() => parseCidr('10.0.0.0/8/8')).toThrow(/not a CIDR/);
    expect(() => parseCidr('10.0.0.0/-1')).toThrow(/invalid prefix/);
    expect(() => parseCidr('2001:db8::/129')).toThrow(/at most 128/);
    expect(() => parseCidr('2001:db8::1/32')).toThrow(/host bits/);
    expect(() => normalizeCidrs(['10.0.0.0/8', 'nope'])).toThrow(/"nope"/);
  });

  it('ignores malformed invalidation messages', () => {
    for (const m of ['', 'null', '[]', '{"keys":"key_1"}', '{"hashes":[1]}', 'not json']) {
      expect(parseInvalidation(m), m).toBeNull();
    }
  });

  it('keeps last-used times for the next flush when a write fails', async () => {
    const clock = manualClock();
    let fail = true;
    const written: string[] = [];
    const errors: unknown[] = [];
    const usage = usageTracker({
      clock,
      write: async (e) => {
        if (fail) throw new Error('database down');
        written.push(...e.map((x) => x.id));
      },
      onError: (err) => errors.push(err),
    });
    usage.touch('key_a');
    await usage.flush();
    expect(errors).toHaveLength(1);
    expect(usage.pendingCount).toBe(1);
    fail = false;
    await usage.flush();
    expect(written).toEqual(['key_a']);
  });
});
