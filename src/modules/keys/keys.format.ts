import { randomBytes } from 'node:crypto';
import { safeEqual } from '../../platform/crypto.ts';

/**
 * API key format: `brt_<env>_<random>_<checksum>`.
 *
 * - `brt` names Berth (secret scanners match on it), `env` is `live` or `test`;
 * - `random` is 32 base62 characters drawn without bias: log2(62^32) ≈ 190 bits;
 * - `checksum` is the CRC-32 of everything before it, as 6 base62 digits (62^6 > 2^32).
 *
 * CRC-32 detects every error burst shorter than 33 bits, so any single mistyped character
 * fails the checksum and the key is refused before a database lookup.
 *
 * @example
 * const key = generateKey('live'); // 'brt_live_3ZbX…_0aB9cD'
 * parseKey(key)?.env === 'live'; parseKey(key.slice(0, -1) + 'x') === null;
 */

export const KEY_ENVIRONMENTS = ['live', 'test'] as const;
export type KeyEnvironment = (typeof KEY_ENVIRONMENTS)[number];

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
export const RANDOM_LENGTH = 32;
export const CHECKSUM_LENGTH = 6;
/** `brt_live_` + 32 + `_` + 6. */
export const KEY_LENGTH = 4 + 5 + RANDOM_LENGTH + 1 + CHECKSUM_LENGTH;

const KEY_RE = new RegExp(`^brt_(live|test)_([0-9A-Za-z]{${RANDOM_LENGTH}})_([0-9A-Za-z]{${CHECKSUM_LENGTH}})$`);

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (IEEE 802.3, as zlib) of a string's UTF-8 bytes. */
export function crc32(text: string): number {
  let crc = 0xffffffff;
  for (const byte of Buffer.from(text, 'utf8')) crc = (CRC_TABLE[(crc ^ byte) & 0xff] ?? 0) ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** `value` in base62, left-padded with zeros to `width` digits. */
export function toBase62(value: number, width: number): string {
  let out = '';
  let v = value;
  while (v > 0) {
    out = (BASE62[v % 62] ?? '0') + out;
    v = Math.floor(v / 62);
  }
  return out.padStart(width, '0');
}

/** Unbiased random base62 text: bytes >= 248 (4 * 62) are discarded, the rest taken mod 62. */
function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const b of randomBytes(length * 2)) {
      if (b < 248 && out.length < length) out += BASE62[b % 62];
    }
  }
  return out;
}

function checksumOf(body: string): string {
  return toBase62(crc32(body), CHECKSUM_LENGTH);
}

export type ParsedKey = {
  env: KeyEnvironment;
  /** The whole key. */
  key: string;
  /** What lists show: `brt_live_` and the first 4 random characters. */
  displayPrefix: string;
  last4: string;
};

/** A new API key in `env`. */
export function generateKey(env: KeyEnvironment = 'live'): string {
  const body = `brt_${env}_${randomBase62(RANDOM_LENGTH)}`;
  return `${body}_${checksumOf(body)}`;
}

/** The key's parts, or null for anything malformed (wrong shape, environment or checksum). */
export function parseKey(text: string): ParsedKey | null {
  if (typeof text !== 'string' || text.length !== KEY_LENGTH) return null;
  const m = KEY_RE.exec(text);
  if (!m) return null;
  const body = text.slice(0, KEY_LENGTH - CHECKSUM_LENGTH - 1);
  const given = m[3] ?? '';
  if (!safeEqual(checksumOf(body), given)) return null;
  const env = m[1] as KeyEnvironment;
  return { env, key: text, displayPrefix: `brt_${env}_${(m[2] ?? '').slice(0, 4)}`, last4: text.slice(-4) };
}

/** True when `text` looks like a Berth key at all (used to refuse keys sent where they must not be). */
export function looksLikeKey(text: string): boolean {
  return /^brt_(live|test)_/.test(text);
}
