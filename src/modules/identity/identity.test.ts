import { hash, parseOptions } from '@node-rs/argon2';
import { Secret, TOTP } from 'otpauth';
import { describe, expect, it } from 'vitest';
import type { Keyring } from '../vault/index.ts';
import { ARGON2_PARAMS, hashPassword, needsRehash, passwordProblem, verifyPassword } from './identity.passwords.ts';
import {
  hashRecoveryCode,
  hashToken,
  identityKeys,
  looksLikeToken,
  newRecoveryCode,
  newSessionToken,
} from './identity.tokens.ts';
import { matchTotpStep, newTotpSecret, totpCodeAt, totpStep, totpUri } from './identity.totp.ts';

const keyring = (version: number, fill: number): Keyring => ({
  current: { version, key: Buffer.alloc(32, fill) },
  all: new Map([[version, Buffer.alloc(32, fill)]]),
});

describe('happy', () => {
  it('accepts long passphrases and any characters, without composition rules', () => {
    expect(passwordProblem('correct horse battery staple')).toBeNull();
    expect(passwordProblem('zzzzzzzzzzzzqqq')).toBeNull();
    expect(passwordProblem('ünïcødé-pässwörd-✓')).toBeNull();
    expect(passwordProblem('x'.repeat(64))).toBeNull();
    expect(passwordProblem('y'.repeat(128))).toBeNull();
  });

  it('hashes with Argon2id at the OWASP parameters, set explicitly', async () => {
    const h = await hashPassword('correct horse battery staple');
    expect(h.startsWith('$argon2id$')).toBe(true);
    const o = parseOptions(h);
    expect(o.memoryCost).toBe(19_456);
    expect(o.timeCost).toBe(2);
    expect(o.parallelism).toBe(1);
    expect(ARGON2_PARAMS.memoryCost).toBeGreaterThanOrEqual(19_456);
    expect(await verifyPassword(h, 'correct horse battery staple')).toBe(true);
    expect(await verifyPassword(h, 'correct horse battery stapl')).toBe(false);
    expect(needsRehash(h)).toBe(false);
  });

  it('treats Unicode-equivalent spellings of a password as the same password', async () => {
    const h = await hashPassword('caf\u00e9-au-lait-42');
    expect(await verifyPassword(h, 'cafe\u0301-au-lait-42')).toBe(true);
  });

  it('makes session tokens of 256 random bits and stores only their SHA-256', () => {
    const a = newSessionToken();
    const b = newSessionToken();
    expect(a).not.toBe(b);
    expect(Buffer.from(a, 'base64url')).toHaveLength(32);
    expect(looksLikeToken(a)).toBe(true);
    expect(hashToken(a)).toMatch(/^[0-9a-f]{64}$/);
    expect(hashToken(a)).not.toContain(a);
  });

  it('makes recovery codes of about 79 bits that match however they are typed', () => {
    const codes = new Set(Array.from({ length: 200 }, () => newRecoveryCode()));
    expect(codes.size).toBe(200);
    for (const c of codes) expect(c).toMatch(/^[a-hj-km-np-z2-9]{4}(-[a-hj-km-np-z2-9]{4}){3}$/);
    const code = [...codes][0] ?? '';
    expect(hashRecoveryCode(code.toUpperCase().replace(/-/g, ' '))).toBe(hashRecoveryCode(code));
  });

  it('binds CSRF tokens to the session and accepts them after a KEK rotation', () => {
    const k1 = identityKeys(keyring(1, 1));
    const token = k1.csrfToken('ses_A');
    expect(k1.verifyCsrfToken('ses_A', token)).toBe(true);
    const rotated = identityKeys({
      current: { version: 2, key: Buffer.alloc(32, 2) },
      all: new Map([
        [1, Buffer.alloc(32, 1)],
        [2, Buffer.alloc(32, 2)],
      ]),
    });
    expect(rotated.verifyCsrfToken('ses_A', token)).toBe(true);
    expect(rotated.csrfToken('ses_A')).not.toBe(token);
  });

  it('generates 160-bit TOTP secrets and a standard otpauth URI', () => {
    const secret = newTotpSecret();
    expect(Secret.fromBase32(secret).bytes).toHaveLength(20);
    const uri = totpUri(secret, 'ada@example.com');
    expect(uri).toMatch(/^otpauth:\/\/totp\/Berth:ada%40example\.com\?/);
    expect(uri).toContain('period=30');
    expect(uri).toContain('digits=6');
  });

  it('matches a TOTP code to its 30-second step, one step of drift either way (RFC 6238)', () => {
    const secret = newTotpSecret();
    const now = new Date('2026-03-01T12:00:15Z');
    const step = totpStep(now);
    expect(step).toBe(Math.floor(now.getTime() / 30_000));
    expect(matchTotpStep(secret, totpCodeAt(secret, now), now)).toBe(step);
    expect(matchTotpStep(secret, totpCodeAt(secret, new Date(now.getTime() - 30_000)), now)).toBe(step - 1);
    expect(matchTotpStep(secret, totpCodeAt(secret, new Date(now.getTime() + 30_000)), now)).toBe(step + 1);
  });

  it('agrees with the RFC 6238 SHA-1 test vector', () => {
    // RFC 6238 appendix B: secret "12345678901234567890", T = 59 s -> 94287082 (8 digits).
    const totp = new TOTP({
      algorithm: 'SHA1',
      digits: 8,
      period: 30,
      secret: Secret.fromUTF8('12345678901234567890'),
    });
    expect(totp.generate({ timestamp: 59_000 })).toBe('94287082');
    expect(totpStep(new Date(59_000))).toBe(1);
  });
});

describe('errors', () => {
  it('refuses short, over-long and common passwords with a reason', () => {
    expect(passwordProblem('short')).toMatch(/at least 8/);
    expect(passwordProblem('1234567')).toMatch(/at least 8/);
    expect(passwordProblem('z'.repeat(129))).toMatch(/at most 128/);
    for (const p of ['password', 'Password', '12345678', 'iloveyou', 'qwertyuiop', 'PASSWORD1']) {
      expect(passwordProblem(p), p).toMatch(/commonly used/);
    }
  });

  it('counts characters, not bytes', () => {
    expect(passwordProblem('✓✓✓✓✓✓✓')).toMatch(/at least 8/);
    expect(passwordProblem('✓✓✓✓✓✓✓✓')).toBeNull();
  });

  it('rejects TOTP codes outside the window and malformed ones', () => {
    const secret = newTotpSecret();
    const now = new Date('2026-03-01T12:00:15Z');
    expect(matchTotpStep(secret, totpCodeAt(secret, new Date(now.getTime() - 60_000)), now)).toBeNull();
    expect(matchTotpStep(secret, totpCodeAt(secret, new Date(now.getTime() + 60_000)), now)).toBeNull();
    expect(matchTotpStep(secret, '12345', now)).toBeNull();
    expect(matchTotpStep(secret, 'abcdef', now)).toBeNull();
    expect(matchTotpStep(newTotpSecret(), totpCodeAt(secret, now), now)).toBeNull();
  });

  it('rejects token look-alikes before any lookup', () => {
    expect(looksLikeToken('')).toBe(false);
    expect(looksLikeToken('a'.repeat(42))).toBe(false);
    expect(looksLikeToken(`${'a'.repeat(42)}!`)).toBe(false);
  });
});

describe('security', () => {
  it('asks to rehash hashes made with weaker parameters or another variant', async () => {
    expect(needsRehash(await hash('pw-12345678', { memoryCost: 4096, timeCost: 3, parallelism: 1 }))).toBe(true);
    expect(needsRehash(await hash('pw-12345678', { ...ARGON2_PARAMS, timeCost: 1 }))).toBe(true);
    // Argon2i (algorithm 1)
    expect(
      needsRehash(await hash('pw-12345678', { ...ARGON2_PARAMS, algorithm: 1 as typeof ARGON2_PARAMS.algorithm })),
    ).toBe(true);
    expect(needsRehash('not a hash')).toBe(true);
    expect(await verifyPassword('not a hash', 'whatever-123')).toBe(false);
  });

  it('does not accept a CSRF token of another session or another key', () => {
    const k = identityKeys(keyring(1, 1));
    const other = identityKeys(keyring(1, 9));
    expect(k.verifyCsrfToken('ses_B', k.csrfToken('ses_A'))).toBe(false);
    expect(k.verifyCsrfToken('ses_A', other.csrfToken('ses_A'))).toBe(false);
    expect(k.verifyCsrfToken('ses_A', '')).toBe(false);
  });

  it('keeps throttling keys across a KEK rotation (derived from the oldest KEK version)', () => {
    const before = identityKeys(keyring(1, 1));
    const rotated = identityKeys({
      current: { version: 2, key: Buffer.alloc(32, 2) },
      all: new Map([
        [1, Buffer.alloc(32, 1)],
        [2, Buffer.alloc(32, 2)],
      ]),
    });
    expect(rotated.throttleKey('account', 'ada@example.com')).toBe(before.throttleKey('account', 'ada@example.com'));
    expect(rotated.throttleKey('ip', '10.0.0.1')).toBe(before.throttleKey('ip', '10.0.0.1'));
    // Only dropping the oldest version changes them.
    expect(identityKeys(keyring(2, 2)).throttleKey('ip', '10.0.0.1')).not.toBe(before.throttleKey('ip', '10.0.0.1'));
  });

  it('keys throttling hashes, so the table holds no email or IP in clear', () => {
    const k = identityKeys(keyring(1, 1));
    const h = k.throttleKey('account', 'ada@example.com');
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(h).not.toBe(hashToken('account:ada@example.com'));
    expect(k.throttleKey('ip', '10.0.0.1')).not.toBe(k.throttleKey('account', '10.0.0.1'));
  });
});
