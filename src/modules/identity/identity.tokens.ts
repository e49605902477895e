import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { randomToken, safeEqual, sha256Hex } from '../../platform/crypto.ts';
import type { Keyring } from '../vault/index.ts';

/** Session tokens: 256 random bits, base64url. Only their SHA-256 is stored. */
export function newSessionToken(): string {
  return randomToken(32);
}

/** Email and challenge tokens: 256 random bits, base64url, stored as SHA-256. */
export function newOpaqueToken(): string {
  return randomToken(32);
}

export const hashToken = sha256Hex;

const TOKEN_RE = /^[A-Za-z0-9_-]{43}$/;
/** Cheap shape check before any database lookup. */
export function looksLikeToken(value: string): boolean {
  return TOKEN_RE.test(value);
}

const RECOVERY_ALPHABET = 'abcdefghjkmnpqrstuvwxyz23456789';

/** A recovery code: 16 characters from a 31-letter alphabet (~79 bits), shown as xxxx-xxxx-xxxx-xxxx. */
export function newRecoveryCode(): string {
  let out = '';
  while (out.length < 16) {
    for (const b of randomBytes(32)) {
      // Rejection sampling keeps every character equally likely.
      if (b < 248 && out.length < 16) out += RECOVERY_ALPHABET[b % 31];
    }
  }
  return out.match(/.{4}/g)?.join('-') ?? out;
}

/** Canonical form of a typed recovery code: case, spaces and dashes do not matter. */
export function normalizeRecoveryCode(code: string): string {
  return code.toLowerCase().replace(/[\s-]/g, '');
}

export function hashRecoveryCode(code: string): string {
  return sha256Hex(`berth-recovery:${normalizeRecoveryCode(code)}`);
}

function deriveKey(kek: Buffer, purpose: string): Buffer {
  return Buffer.from(hkdfSync('sha256', kek, Buffer.from('berth-identity'), Buffer.from(purpose), 32));
}

/**
 * Keys the identity module derives from the keyring (HKDF of each KEK version): CSRF
 * tokens are signed with the current one and accepted under any known one, so rotating the
 * KEK does not break open pages. The throttling key comes from the oldest version.
 */
export function identityKeys(keyring: Keyring) {
  const csrfKeys = [
    deriveKey(keyring.current.key, 'csrf'),
    ...[...keyring.all.entries()]
      .filter(([version]) => version !== keyring.current.version)
      .map(([, key]) => deriveKey(key, 'csrf')),
  ];
  // Throttling rows must keep counting across a KEK rotation, so their key comes from the
  // oldest KEK version in the keyring: adding a new version leaves it unchanged; it changes
  // (and the counters start afresh, once) only when an operator removes that oldest version.
  const oldest = Math.min(...keyring.all.keys());
  const throttleKey = deriveKey(keyring.all.get(oldest) ?? keyring.current.key, 'login-throttle');
  const sign = (key: Buffer, sessionId: string) =>
    createHmac('sha256', key).update(`csrf:${sessionId}`).digest('base64url');
  return {
    /** The CSRF token of a session: HMAC(csrf key, session id). */
    csrfToken(sessionId: string): string {
      return sign(csrfKeys[0] ?? Buffer.alloc(32), sessionId);
    },
    verifyCsrfToken(sessionId: string, token: string): boolean {
      return csrfKeys.some((key) => safeEqual(sign(key, sessionId), token));
    },
    /** Keyed hash of an email or IP address for the throttling table. */
    throttleKey(kind: string, value: string): string {
      return createHmac('sha256', throttleKey).update(`${kind}:${value}`).digest('hex');
    },
  };
}
export type IdentityKeys = ReturnType<typeof identityKeys>;
