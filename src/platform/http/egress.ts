import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { AppError } from '../errors.ts';

/**
 * The SSRF guard for requests Berth makes to addresses that users or operators configure
 * (providers' base URLs, later documents by URL): private, loopback, link-local, shared,
 * multicast and cloud metadata addresses are refused unless the operator allow-lists them
 * (`BERTH_EGRESS_ALLOW`: host names and addresses/CIDRs, comma-separated).
 *
 * The check runs on the resolved address at connect time (the `lookup` given to the
 * socket), so a name that resolves to a private address, or changes to one after it was
 * checked, is refused too. Literal IP hosts never reach `lookup`, so `assertUrl` checks
 * them before a request is made.
 *
 * @example const egress = egressGuard('127.0.0.1,ollama.internal'); new Pool(origin, { connect: { lookup: egress.lookup } });
 */
export type EgressGuard = {
  /** Throws EgressDenied for a URL whose literal address (or scheme) is refused. */
  assertUrl(url: URL): void;
  /** A socket `lookup` that refuses resolved addresses outside the policy. */
  lookup: LookupFunction;
  /** True when the address may be reached. */
  allowsAddress(address: string): boolean;
};

export class EgressDenied extends Error {
  constructor(readonly host: string) {
    super(`Outbound connections to ${host} are not allowed (private address; see BERTH_EGRESS_ALLOW).`);
    this.name = 'EgressDenied';
  }
}

const BLOCKED_V4 = [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.88.99.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const;

const BLOCKED_V6 = [
  ['::', 128],
  ['::1', 128],
  ['64:ff9b::', 96],
  ['64:ff9b:1::', 48],
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const;

const blocked = new BlockList();
for (const [net, prefix] of BLOCKED_V4) blocked.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of BLOCKED_V6) blocked.addSubnet(net, prefix, 'ipv6');

/** The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`), if it is one. */
function unmapped(address: string): string {
  const m = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  return m?.[1] ?? address;
}

function family(address: string): 'ipv4' | 'ipv6' {
  return isIP(address) === 4 ? 'ipv4' : 'ipv6';
}

/** True for addresses no outbound call should reach without the operator's say-so. */
export function isPrivateAddress(address: string): boolean {
  const a = unmapped(address);
  if (isIP(a) === 0) return true;
  return blocked.check(a, family(a));
}

/** Parses BERTH_EGRESS_ALLOW; throws on an entry that is neither a host name nor an address/CIDR. */
export function parseEgressAllow(value: string | undefined): { hosts: Set<string>; nets: BlockList; raw: string[] } {
  const hosts = new Set<string>();
  const nets = new BlockList();
  const raw = (value ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const entry of raw) {
    const [addr, bits] = entry.split('/');
    if (addr && isIP(addr)) {
      const fam = family(addr);
      const max = fam === 'ipv4' ? 32 : 128;
      const prefix = bits === undefined ? max : Number(bits);
      if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) throw new Error(`bad prefix length in ${entry}`);
      nets.addSubnet(addr, prefix, fam);
    } else if (bits === undefined && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i.test(entry)) {
      hosts.add(entry.toLowerCase());
    } else {
      throw new Error(`${entry} is neither a host name nor an address or CIDR`);
    }
  }
  return { hosts, nets, raw };
}

export function egressGuard(allow: string | undefined): EgressGuard {
  const policy = parseEgressAllow(allow);
  const allowsAddress = (address: string) => {
    const a = unmapped(address);
    if (isIP(a) === 0) return false;
    return !isPrivateAddress(a) || policy.nets.check(a, family(a));
  };

  const lookup: LookupFunction = (hostname, options, callback) => {
    const host = hostname.toLowerCase();
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '', 4);
      const list = addresses as LookupAddress[];
      const named = policy.hosts.has(host);
      const usable = named ? list : list.filter((a) => allowsAddress(a.address));
      // Only checked addresses are handed to the socket: it connects to what was checked.
      if (usable.length === 0) {
        return callback(Object.assign(new EgressDenied(hostname), { code: 'EGRESS_DENIED' }), '', 4);
      }
      if (options.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, usable);
      const first = usable[0] as LookupAddress;
      callback(null, first.address, first.family);
    });
  };

  return {
    allowsAddress,
    lookup,
    assertUrl(url) {
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new EgressDenied(url.host);
      const host = url.hostname.replace(/^\[|\]$/g, '');
      if (isIP(host) !== 0 && !allowsAddress(host)) throw new EgressDenied(host);
    },
  };
}

/**
 * Checks a configured URL (a provider's, an MCP server's, an OAuth endpoint, a document to
 * fetch) before anything connects: a refused host is 400 `egress_denied` with the guard's
 * reason. The resolved address is checked again at connect time.
 *
 * @example assertEgress(deps.egress, new URL(input.baseUrl));
 */
export function assertEgress(egress: Pick<EgressGuard, 'assertUrl'>, url: URL): void {
  try {
    egress.assertUrl(url);
  } catch (err) {
    if (err instanceof EgressDenied) throw new AppError('egress_denied', err.message);
    throw err;
  }
}
