import { randomFillSync } from 'node:crypto';

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
  'ltx',
  'rsv',
  'lse',
  'pln',
  'pay',
  'bud',
  // privacy: requests, restrictions, consents, objections
  'prq',
  'prs',
  'pcn',
  'pob',
  // privacy: exports of personal data
  'pex',
  // privacy: sub-processors and the breach register
  'sub',
  'brc',
  // privacy: account deletions
  'pdl',
  // privacy: retention runs
  'rtn',
  // vault: OAuth providers, connections and pending authorizations
  'oap',
  'con',
  'oaz',
  // agents and their published versions
  'agt',
  'agv',
  // agent tools: workspace secrets and MCP servers
  'sec',
  'mcp',
  // a worker process's name in the leases it holds (agent runs)
  'wrk',
  // knowledge: knowledge bases, documents, chunks
  'kb',
  'kdoc',
  'kchk',
] as const;
export type IdPrefix = (typeof ID_PREFIXES)[number];

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
/** Random characters after the time: 16 of 5 bits, 80 bits. */
const RANDOM_CHARS = 16;

let lastTimeMs = -1;
let lastTime = '';

function encodeTime(ms: number): string {
  if (ms === lastTimeMs) return lastTime;
  let out = '';
  let t = ms;
  for (let i = 0; i < 10; i++) {
    out = (ALPHABET[t % 32] ?? '0') + out;
    t = Math.floor(t / 32);
  }
  lastTimeMs = ms;
  lastTime = out;
  return out;
}

/** Random bytes drawn a page at a time: one system call per 256 ids, not one per id. */
const pool = new Uint8Array(4096);
let poolAt = pool.length;

function randomDigit(): number {
  if (poolAt === pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  // 256 is a multiple of 32: every digit is equally likely.
  return (pool[poolAt++] ?? 0) & 31;
}

/** Per prefix: the millisecond of its last id and that id's random digits (base 32). */
const last = new Map<string, { ms: number; digits: Uint8Array }>();

/**
 * 80 random bits, except within one millisecond, where each id takes the previous one's
 * bits plus one (ULID's monotonic mode): ids made in the same millisecond by this process
 * with one prefix still sort in the order they were made.
 */
function nextRandom(prefix: string, ms: number): Uint8Array {
  const prev = last.get(prefix);
  if (prev && prev.ms === ms && increment(prev.digits)) return prev.digits;
  const digits = new Uint8Array(RANDOM_CHARS);
  for (let i = 0; i < RANDOM_CHARS; i++) digits[i] = randomDigit();
  // Leave room to count up within the millisecond (the top bit is clear).
  digits[0] = (digits[0] ?? 0) & 15;
  last.set(prefix, { ms, digits });
  return digits;
}

/** Adds one to a base-32 number in place; false (and unchanged) when it would overflow. */
function increment(digits: Uint8Array): boolean {
  for (let i = digits.length - 1; i >= 0; i--) {
    const d = digits[i] ?? 0;
    if (d < 31) {
      digits[i] = d + 1;
      for (let j = i + 1; j < digits.length; j++) digits[j] = 0;
      return true;
    }
  }
  return false;
}

function encodeRandom(prefix: string, ms: number): string {
  const digits = nextRandom(prefix, ms);
  let out = '';
  for (let i = 0; i < RANDOM_CHARS; i++) out += ALPHABET[digits[i] ?? 0];
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
