import { createHash, createPrivateKey, createPublicKey, type KeyObject, randomBytes, sign, verify } from 'node:crypto';
import path from 'node:path';
import { type Config, ConfigError } from '../../config.ts';
import type { Logger } from '../../platform/logger.ts';
import { dataDirSecret, readSecretFile, warnIfLoose } from '../../platform/secret-file.ts';

/**
 * The Ed25519 key that signs audit checkpoints. Text form: `berth-audit-ed25519:<32-byte
 * seed, base64url>`. Verifiers need only the public key (`GET /api/audit/public-key`).
 */
export type AuditSigningKey = {
  /** `ed25519:` + the first 16 hex characters of SHA-256(raw public key). */
  keyId: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** The raw 32-byte public key, base64url. */
  publicKeyRaw: string;
  /** SubjectPublicKeyInfo PEM, for openssl and other offline verifiers. */
  publicKeyPem: string;
};

export type LoadedAuditSigningKey = AuditSigningKey & {
  source: 'BERTH_AUDIT_SIGNING_KEY' | 'BERTH_AUDIT_SIGNING_KEY_FILE' | 'data_dir';
  file: string | null;
  generated: boolean;
};

const KEY_RE = /^berth-audit-ed25519:([A-Za-z0-9_-]{43})$/;
const FORMAT_HINT = 'expected berth-audit-ed25519:<32 bytes, base64url>';
/** PKCS#8 DER prefix of an Ed25519 private key; the 32-byte seed follows. */
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** The name of the file Berth generates in the data directory on embedded starts. */
export const DATA_DIR_AUDIT_KEY_FILE = 'audit-signing-key';

/** A new signing key in Berth's text form. */
export function generateAuditSigningKey(): string {
  return `berth-audit-ed25519:${randomBytes(32).toString('base64url')}`;
}

type Setting = 'BERTH_AUDIT_SIGNING_KEY' | 'BERTH_AUDIT_SIGNING_KEY_FILE';

/** Parses the text form; errors name the setting and never echo key material. */
export function parseAuditSigningKey(text: string, setting: Setting = 'BERTH_AUDIT_SIGNING_KEY'): AuditSigningKey {
  const m = KEY_RE.exec(text.trim());
  const seed = m?.[1] ? Buffer.from(m[1], 'base64url') : null;
  if (!m || !seed || seed.length !== 32 || seed.toString('base64url') !== m[1]) {
    throw new ConfigError(setting, `is not an audit signing key (${FORMAT_HINT})`);
  }
  const privateKey = createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]),
    format: 'der',
    type: 'pkcs8',
  });
  return fromPrivateKey(privateKey);
}

function fromPrivateKey(privateKey: KeyObject): AuditSigningKey {
  const publicKey = createPublicKey(privateKey);
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  const raw = spki.subarray(spki.length - 32);
  return {
    keyId: auditKeyId(raw),
    privateKey,
    publicKey,
    publicKeyRaw: raw.toString('base64url'),
    publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
  };
}

/** The id of a raw Ed25519 public key, stored with every checkpoint it signs. */
export function auditKeyId(rawPublicKey: Buffer): string {
  return `ed25519:${createHash('sha256').update(rawPublicKey).digest('hex').slice(0, 16)}`;
}

/** What a checkpoint signature covers: `chain|seq|hash|created_at` (ISO 8601, UTC, milliseconds). */
export function checkpointMessage(c: { chain: string; seq: number; hash: string; createdAt: Date }): string {
  return `${c.chain}|${c.seq}|${c.hash}|${c.createdAt.toISOString()}`;
}

/** Signs a checkpoint; the signature is base64url. */
export function signCheckpoint(
  key: Pick<AuditSigningKey, 'privateKey'>,
  c: { chain: string; seq: number; hash: string; createdAt: Date },
): string {
  return sign(null, Buffer.from(checkpointMessage(c)), key.privateKey).toString('base64url');
}

export function verifyCheckpoint(
  key: Pick<AuditSigningKey, 'publicKey'>,
  c: { chain: string; seq: number; hash: string; createdAt: Date; signature: string },
): boolean {
  try {
    return verify(null, Buffer.from(checkpointMessage(c)), key.publicKey, Buffer.from(c.signature, 'base64url'));
  } catch {
    return false;
  }
}

/**
 * Loads the checkpoint signing key from BERTH_AUDIT_SIGNING_KEY or
 * BERTH_AUDIT_SIGNING_KEY_FILE. Without either: on the embedded engine it reads
 * `<dataDir>/audit-signing-key`, generating it (mode 0600) on first start; on server
 * Postgres it answers null, and checkpoints are refused until a key is configured (the
 * same key on every replica). Audit events are recorded and verified either way.
 */
export function loadAuditSigningKey(
  config: Pick<Config, 'BERTH_AUDIT_SIGNING_KEY' | 'BERTH_AUDIT_SIGNING_KEY_FILE' | 'dataDir'>,
  opts: { engine: 'pglite' | 'postgres'; logger: Logger },
): LoadedAuditSigningKey | null {
  if (config.BERTH_AUDIT_SIGNING_KEY) {
    return {
      ...parseAuditSigningKey(config.BERTH_AUDIT_SIGNING_KEY, 'BERTH_AUDIT_SIGNING_KEY'),
      source: 'BERTH_AUDIT_SIGNING_KEY',
      file: null,
      generated: false,
    };
  }
  if (config.BERTH_AUDIT_SIGNING_KEY_FILE) {
    const file = path.resolve(config.BERTH_AUDIT_SIGNING_KEY_FILE);
    const key = parseAuditSigningKey(
      readSecretFile(file, 'BERTH_AUDIT_SIGNING_KEY_FILE'),
      'BERTH_AUDIT_SIGNING_KEY_FILE',
    );
    warnIfLoose(file, opts.logger, 'audit signing key');
    return { ...key, source: 'BERTH_AUDIT_SIGNING_KEY_FILE', file, generated: false };
  }
  if (opts.engine === 'postgres') {
    opts.logger.warn(
      'No audit signing key (BERTH_AUDIT_SIGNING_KEY or BERTH_AUDIT_SIGNING_KEY_FILE): audit checkpoints are not signed until one is configured.',
    );
    return null;
  }
  const { file, text, generated } = dataDirSecret({
    dataDir: config.dataDir,
    name: DATA_DIR_AUDIT_KEY_FILE,
    setting: 'BERTH_AUDIT_SIGNING_KEY_FILE',
    what: 'audit signing key',
    generate: generateAuditSigningKey,
    logger: opts.logger,
    generatedMessage:
      'Generated the audit checkpoint signing key. Back this file up with the data directory and give auditors its public key (GET /api/audit/public-key).',
  });
  const key = parseAuditSigningKey(text, 'BERTH_AUDIT_SIGNING_KEY_FILE');
  return { ...key, source: 'data_dir', file, generated };
}

/** A public key that verifies checkpoints (the current key's, or a retired one's). */
export type AuditVerifyKey = Pick<AuditSigningKey, 'keyId' | 'publicKey'>;

/**
 * Parses BERTH_AUDIT_RETIRED_PUBLIC_KEYS: raw Ed25519 public keys (base64url, as
 * `GET /api/audit/public-key` shows them), comma-separated. Checkpoints signed before a key
 * rotation keep verifying; trust comes from the configuration, not the database.
 */
export function parseRetiredPublicKeys(text: string | undefined): AuditVerifyKey[] {
  if (!text) return [];
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((raw) => {
      const bytes = /^[A-Za-z0-9_-]{43}$/.test(raw) ? Buffer.from(raw, 'base64url') : null;
      if (bytes?.length !== 32) {
        throw new ConfigError('BERTH_AUDIT_RETIRED_PUBLIC_KEYS', 'holds a value that is not a raw Ed25519 public key');
      }
      try {
        return {
          keyId: auditKeyId(bytes),
          publicKey: createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw }, format: 'jwk' }),
        };
      } catch {
        throw new ConfigError('BERTH_AUDIT_RETIRED_PUBLIC_KEYS', 'holds a value that is not a raw Ed25519 public key');
      }
    });
}
