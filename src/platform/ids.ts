import { randomBytes } from 'node:crypto';

/**
 * Prefixed, sortable, random ids: `usr_` + 26 Crockford base32 characters (48-bit
 * millisecond time, then 80 random bits), the ULID layout. Sorting ids sorts by creation.
 *
 * @example newId('ws') // 'ws_01JD6F3Q4N8ZK5R2W7XH9YB0C1'
 */
export const ID_PREFIXES = [
  'usr',
  'ses',
  'ws',
  'mem',
  'inv',
  'dk',
  'sev',
  'tok',
  'mfa',
  'rc',
  'out',
  'req',
  'key',
  'ksec',
  'run',
  'job',
  'aud',
  'ack',
] as const;
export type IdPrefix = (typeof ID_PREFIXES)[number];

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

function encodeTime(ms: number): string {
  let out = '';
  let t = ms;
  for (let i = 0; i < 10; i++) {
    out = (ALPHABET[t % 32] ?? '0') + out;
    t = Math.floor(t / 32);
  }
  return out;
}

function encodeRandom(): string {
  const bytes = randomBytes(10);
  let bits = 0n;
  for (const b of bytes) bits = (bits << 8n) | BigInt(b);
  let out = '';
  for (let i = 0; i < 16; i++) {
    out = (ALPHABET[Number(bits & 31n)] ?? '0') + out;
    bits >>= 5n;
  }
  return out;
}

export function newId(prefix: IdPrefix, at: Date = new Date()): string {
  return `${prefix}_${encodeTime(at.getTime())}${encodeRandom()}`;
}

const ID_RE = /^[a-z]{2,4}_[0-9A-HJKMNP-TV-Z]{26}$/;

/** True when `value` looks like an id with this prefix (no database lookup needed to reject junk). */
export function isId(value: string, prefix: IdPrefix): boolean {
  return value.startsWith(`${prefix}_`) && ID_RE.test(value);
}
