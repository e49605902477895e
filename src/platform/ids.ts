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
  'prv',
  'use',
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

const RANDOM_MAX = (1n << 80n) - 1n;
/** Per prefix: the millisecond of its last id and that id's random bits. */
const last = new Map<string, { ms: number; random: bigint }>();

/**
 * 80 random bits, except within one millisecond, where each id takes the previous one's
 * bits plus one (ULID's monotonic mode): ids made in the same millisecond by this process
 * with one prefix still sort in the order they were made.
 */
function nextRandom(prefix: string, ms: number): bigint {
  const prev = last.get(prefix);
  if (prev && prev.ms === ms && prev.random < RANDOM_MAX) {
    prev.random += 1n;
    return prev.random;
  }
  let bits = 0n;
  for (const b of randomBytes(10)) bits = (bits << 8n) | BigInt(b);
  // Leave room to count up within the millisecond.
  const random = bits >> 1n;
  last.set(prefix, { ms, random });
  return random;
}

function encodeRandom(prefix: string, ms: number): string {
  let bits = nextRandom(prefix, ms);
  let out = '';
  for (let i = 0; i < 16; i++) {
    out = (ALPHABET[Number(bits & 31n)] ?? '0') + out;
    bits >>= 5n;
  }
  return out;
}

export function newId(prefix: IdPrefix, at: Date = new Date()): string {
  const ms = at.getTime();
  return `${prefix}_${encodeTime(ms)}${encodeRandom(prefix, ms)}`;
}

const ID_RE = /^[a-z]{2,4}_[0-9A-HJKMNP-TV-Z]{26}$/;

/** True when `value` looks like an id with this prefix (no database lookup needed to reject junk). */
export function isId(value: string, prefix: IdPrefix): boolean {
  return value.startsWith(`${prefix}_`) && ID_RE.test(value);
}
