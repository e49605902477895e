import { isIP } from 'node:net';
import { parseEgressAllow } from '../../platform/http/egress.ts';

/**
 * Where credentials may appear in what agents and MCP servers are configured with.
 * Definitions are plaintext that viewers read and exports carry, so a literal credential
 * never belongs in them; a workspace secret is referenced instead, and a secret only ever
 * travels in the request headers it was declared for, over https (plain http only to hosts
 * the operator allow-listed with BERTH_EGRESS_ALLOW, for local development). A secret in a
 * URL or a body could be written to a service that shows it back to whoever wrote the tool.
 * An OAuth connection's access token (`{{connection.NAME}}`) follows the same rules, and goes
 * only to the API hosts its provider declares.
 */

const TEMPLATE = /\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}/g;

const CREDENTIAL_HEADERS = new Set(['authorization', 'proxy-authorization', 'x-api-key', 'api-key', 'cookie']);

/** True for header names that carry credentials (their values must be secret references). */
export function isCredentialHeader(name: string): boolean {
  const n = name.toLowerCase();
  return CREDENTIAL_HEADERS.has(n) || /token|secret|key/.test(n);
}

/**
 * True when a credential header's value holds no literal credential: templates only, with
 * at most an authorization scheme word before them (`Bearer {{secret.TOKEN}}`).
 */
export function isTemplatedCredential(value: string): boolean {
  if (!/\{\{\s*[A-Za-z0-9_.-]+\s*\}\}/.test(value)) return false;
  return /^\s*([A-Za-z][A-Za-z0-9-]{0,19}\s+)?$/.test(value.replace(TEMPLATE, ''));
}

const CREDENTIAL_PARAMS = new Set([
  'key',
  'api_key',
  'apikey',
  'api-key',
  'x-api-key',
  'token',
  'access_token',
  'refresh_token',
  'id_token',
  'auth',
  'auth_token',
  'secret',
  'client_secret',
  'password',
  'passwd',
  'pwd',
  'sig',
  'signature',
  'x-amz-signature',
  'x-amz-credential',
  'x-amz-security-token',
  'x-goog-signature',
  'x-goog-credential',
]);

/**
 * The credential-like query parameters of a URL (or URL template) that carry a literal
 * value; a value that is only an argument template (`?token={{page}}`) is not literal.
 */
export function credentialParams(url: string): string[] {
  const q = url.indexOf('?');
  if (q < 0) return [];
  const query = url.slice(q + 1).split('#')[0] ?? '';
  const found: string[] = [];
  for (const pair of query.split('&')) {
    const eq = pair.indexOf('=');
    const rawName = eq < 0 ? pair : pair.slice(0, eq);
    const value = eq < 0 ? '' : pair.slice(eq + 1);
    let name = rawName;
    try {
      name = decodeURIComponent(rawName.replace(/\+/g, ' '));
    } catch {
      // an undecodable name is compared as written
    }
    if (!CREDENTIAL_PARAMS.has(name.trim().toLowerCase())) continue;
    if (value === '' || value.replace(TEMPLATE, '') === '') continue;
    found.push(name);
  }
  return found;
}

/** True when the URL template's user-info part (`user:pass@host`) is present. */
export function hasUserInfo(url: string): boolean {
  const m = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(url);
  return Boolean(m?.[1]?.includes('@'));
}

/**
 * Whether a secret may travel over plain http to `host`: only to hosts (or addresses) the
 * operator allow-listed in BERTH_EGRESS_ALLOW.
 */
export function plainHttpPolicy(egressAllow: string | undefined): (host: string) => boolean {
  const policy = parseEgressAllow(egressAllow);
  return (host) => {
    const h = host.toLowerCase().replace(/^\[|\]$/g, '');
    if (policy.hosts.has(h)) return true;
    const family = isIP(h);
    return family !== 0 && policy.nets.check(h, family === 4 ? 'ipv4' : 'ipv6');
  };
}

/**
 * The scheme and literal host of a URL template (`null` host when a template decides it).
 */
export function templateOrigin(url: string): { scheme: string; host: string | null } {
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)/i.exec(url.trim());
  if (!m) return { scheme: '', host: null };
  const authority = m[2] ?? '';
  if (authority.includes('{{')) return { scheme: (m[1] ?? '').toLowerCase(), host: null };
  const host = authority.replace(/^.*@/, '').replace(/:\d*$/, '');
  return { scheme: (m[1] ?? '').toLowerCase(), host };
}
