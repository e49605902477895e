import { isIPv4, isIPv6 } from 'node:net';

/**
 * CIDR parsing and matching for API key IP allow-lists, IPv4 and IPv6. IPv4-mapped IPv6
 * addresses (`::ffff:10.0.0.1`, what a dual-stack socket reports) match IPv4 ranges.
 *
 * @example cidrContains(parseCidr('10.0.0.0/8'), '10.1.2.3') === true
 */

export type Cidr = { version: 4 | 6; network: bigint; prefix: number };
type Ip = { version: 4 | 6; value: bigint };

function parseIPv4(text: string): bigint {
  return text.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
}

function parseIPv6(text: string): bigint {
  let s = text;
  if (s.includes('.')) {
    // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
    const i = s.lastIndexOf(':');
    const v4 = parseIPv4(s.slice(i + 1));
    s = `${s.slice(0, i + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head = '', rest] = s.split('::');
  const groups = (t: string) => (t === '' ? [] : t.split(':').map((g) => BigInt(Number.parseInt(g, 16))));
  const left = groups(head);
  const right = rest === undefined ? [] : groups(rest);
  const zeros = Array<bigint>(8 - left.length - right.length).fill(0n);
  return [...left, ...zeros, ...right].reduce((acc, g) => (acc << 16n) | g, 0n);
}

/** An IP address, or null when `text` is not one. Zone ids (`%eth0`) are ignored. */
export function parseIp(text: string): Ip | null {
  const t = text.split('%')[0] ?? '';
  if (isIPv4(t)) return { version: 4, value: parseIPv4(t) };
  if (!isIPv6(t)) return null;
  const value = parseIPv6(t);
  // ::ffff:a.b.c.d is an IPv4 client on a dual-stack socket.
  if (value >> 32n === 0xffffn) return { version: 4, value: value & 0xffffffffn };
  return { version: 6, value };
}

function bitsOf(version: 4 | 6) {
  return version === 4 ? 32 : 128;
}

function mask(version: 4 | 6, prefix: number): bigint {
  const bits = bitsOf(version);
  return ((1n << BigInt(prefix)) - 1n) << BigInt(bits - prefix);
}

/**
 * A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address (taken as /32 or /128).
 * Throws a message a client can act on when it is malformed or has host bits set.
 */
export function parseCidr(text: string): Cidr {
  const [addr = '', len, extra] = text.trim().split('/');
  if (extra !== undefined) throw new Error(`"${text}" is not a CIDR range`);
  const t = addr.split('%')[0] ?? '';
  const version = isIPv4(t) ? 4 : isIPv6(t) ? 6 : null;
  if (!version) throw new Error(`"${text}" is not an IPv4 or IPv6 CIDR range`);
  const bits = bitsOf(version);
  if (len !== undefined && !/^\d{1,3}$/.test(len)) throw new Error(`"${text}" has an invalid prefix length`);
  const prefix = len === undefined ? bits : Number(len);
  if (prefix > bits) throw new Error(`"${text}": the prefix length must be at most ${bits}`);
  const value = version === 4 ? parseIPv4(t) : parseIPv6(t);
  const network = value & mask(version, prefix);
  if (network !== value)
    throw new Error(`"${text}" has host bits set: use ${formatCidr({ version, network, prefix })}`);
  return { version, network, prefix };
}

/** Canonical text of a CIDR (lower-case, compressed IPv6). */
export function formatCidr(c: Cidr): string {
  if (c.version === 4) {
    const parts = [24n, 16n, 8n, 0n].map((s) => String((c.network >> s) & 0xffn));
    return `${parts.join('.')}/${c.prefix}`;
  }
  const groups = Array.from({ length: 8 }, (_, i) => Number((c.network >> BigInt(112 - i * 16)) & 0xffffn));
  // Compress the longest run of two or more zero groups (RFC 5952).
  let best = { start: -1, len: 0 };
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > best.len && j - i >= 2) best = { start: i, len: j - i };
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  const text =
    best.start < 0
      ? hex.join(':')
      : `${hex.slice(0, best.start).join(':')}::${hex.slice(best.start + best.len).join(':')}`;
  return `${text}/${c.prefix}`;
}

/** Validates and canonicalises an allow-list; throws naming the first bad entry. */
export function normalizeCidrs(list: readonly string[]): string[] {
  return [...new Set(list.map((c) => formatCidr(parseCidr(c))))];
}

export function cidrContains(c: Cidr, ip: string): boolean {
  return ipAllowed([c], ip);
}

/** True when `ip` falls in any of the CIDRs. */
export function ipAllowed(cidrs: readonly Cidr[], ip: string): boolean {
  const parsed = parseIp(ip);
  if (!parsed) return false;
  return cidrs.some((c) => c.version === parsed.version && (parsed.value & mask(c.version, c.prefix)) === c.network);
}
