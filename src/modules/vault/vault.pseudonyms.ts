import { createHmac, hkdfSync } from 'node:crypto';
import type { Keyring } from './vault.keyring.ts';

/** Pseudonyms start with this prefix, so no pseudonym can be mistaken for an id. */
export const PSEUDONYM_PREFIX = 'anon_';

const PSEUDONYM_RE = /^anon_[0-9a-f]{32}$/;

/** True when `value` is a pseudonym made by `pseudonymizer`. */
export function isPseudonym(value: string): boolean {
  return PSEUDONYM_RE.test(value);
}

/**
 * Pseudonyms of ids (a user id becomes `anon_` + 128 bits of HMAC-SHA-256): the same id
 * always gives the same pseudonym, so records kept after an erasure (audit events, billing
 * records under legal hold) still show that one person acted, but the id cannot be
 * recovered from it without the operator's key-encryption key, and after erasure the id
 * itself exists nowhere to test against.
 *
 * The key is derived (HKDF) from the oldest KEK version in the keyring, so adding a KEK
 * version does not change pseudonyms; removing that oldest version does (as it does for
 * the sign-in throttle's keys).
 *
 * @example const p = pseudonymizer(keyring); p('usr_01J...') // 'anon_3f9c...'
 */
export function pseudonymizer(keyring: Keyring): (id: string) => string {
  const oldest = Math.min(...keyring.all.keys());
  const base = keyring.all.get(oldest) ?? keyring.current.key;
  const key = Buffer.from(hkdfSync('sha256', base, Buffer.from('berth-vault'), Buffer.from('pseudonyms'), 32));
  return (id) => `${PSEUDONYM_PREFIX}${createHmac('sha256', key).update(id).digest('hex').slice(0, 32)}`;
}
