import type { LookupAddress } from 'node:dns';
import { describe, expect, it } from 'vitest';
import { EgressDenied, egressGuard, isPrivateAddress, parseEgressAllow } from './egress.ts';

function resolve(guard: ReturnType<typeof egressGuard>, host: string): Promise<LookupAddress[]> {
  return new Promise((ok, fail) => {
    guard.lookup(host, { all: true }, (err, addresses) =>
      err ? fail(err) : ok(addresses as unknown as LookupAddress[]),
    );
  });
}

describe('happy', () => {
  it('knows private, loopback, link-local, shared, metadata and mapped addresses', () => {
    for (const a of [
      '10.1.2.3',
      '127.0.0.1',
      '169.254.169.254',
      '172.16.0.1',
      '192.168.1.1',
      '100.64.0.1',
      '0.0.0.0',
      '::1',
      'fd00::1',
      'fe80::1',
      '::ffff:10.0.0.1',
      '224.0.0.1',
    ]) {
      expect(isPrivateAddress(a), a).toBe(true);
    }
    for (const a of ['8.8.8.8', '1.1.1.1', '2606:4700:4700::1111', '::ffff:8.8.8.8'])
      expect(isPrivateAddress(a), a).toBe(false);
  });

  it('allows what the operator lists: addresses, networks and host names', async () => {
    const guard = egressGuard('127.0.0.1, 10.0.0.0/8, localhost');
    expect(guard.allowsAddress('10.20.30.40')).toBe(true);
    expect(guard.allowsAddress('192.168.0.1')).toBe(false);
    expect(() => guard.assertUrl(new URL('http://127.0.0.1:11434/v1'))).not.toThrow();
    expect((await resolve(guard, 'localhost')).length).toBeGreaterThan(0);
  });
});

describe('security', () => {
  it('refuses private literals, other schemes, and names that resolve to private addresses', async () => {
    const guard = egressGuard(undefined);
    for (const url of [
      'http://10.0.0.1/',
      'http://[::1]:80/',
      'http://169.254.169.254/latest',
      'ftp://example.com/',
      'file:///etc/passwd',
    ]) {
      expect(() => guard.assertUrl(new URL(url)), url).toThrow(EgressDenied);
    }
    expect(() => guard.assertUrl(new URL('https://api.openai.com/v1'))).not.toThrow();
    await expect(resolve(guard, 'localhost')).rejects.toThrow(EgressDenied);
    // Only the checked addresses reach the socket: an allowed IPv4 loopback, not the IPv6 one.
    const v4only = egressGuard('127.0.0.1');
    const got = await resolve(v4only, 'localhost');
    expect(got.every((a) => a.address === '127.0.0.1')).toBe(true);
  });
});

describe('errors', () => {
  it('refuses a malformed allow-list entry', () => {
    expect(() => parseEgressAllow('10.0.0.0/99')).toThrow(/prefix/);
    expect(() => parseEgressAllow('not a host!')).toThrow(/neither/);
  });
});
