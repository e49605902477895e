import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { AppError } from '../../platform/errors.ts';

/**
 * The vault's byte formats, pure and synchronous.
 *
 * A ciphertext is
 *   0x01 | key-id length (1 byte) | data key id (ASCII, e.g. dk_01J...) | nonce (12) | ciphertext | tag (16)
 * sealed with AES-256-GCM under the owner's data key. The additional data is the header
 * (version byte, key id) followed by the canonical context
 * `owner_type:owner_id:record:field` (each part percent-encoded, so no part can smuggle a
 * separator), which binds a ciphertext to exactly one owner, record and field.
 *
 * A wrapped data key is nonce (12) | AES-256-GCM(KEK, DEK) (32) | tag (16), with the owner,
 * the key id and the KEK version as additional data.
 */

export const FORMAT_V1 = 0x01;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
export const KEY_BYTES = 32;

/** Whose secrets a data key encrypts; `platform` (id `platform`) holds the operator's own, e.g. platform providers' keys. */
export type VaultOwner = { type: 'user' | 'workspace' | 'platform'; id: string };
export type VaultContext = { owner: VaultOwner; record: string; field: string };

export type VaultErrorReason =
  /** The owner's data key was destroyed (crypto-shredding): the secret is gone for good. */
  | 'key_destroyed'
  /** The ciphertext names a data key the vault does not have. */
  | 'key_missing'
  /** Not a vault ciphertext, or a format version this build does not read. */
  | 'malformed'
  /** The ciphertext was altered, or belongs to another owner, record or field. */
  | 'authentication_failed';

/**
 * Why the vault could not decrypt. Destroyed or unknown keys answer 404 (the secret no
 * longer exists); altered or misplaced ciphertexts are an integrity failure (500).
 * Messages never carry key material or plaintext.
 */
export class VaultError extends AppError {
  constructor(readonly reason: VaultErrorReason) {
    super(
      reason === 'key_destroyed' || reason === 'key_missing' ? 'not_found' : 'internal_error',
      reason === 'key_destroyed'
        ? 'This secret is no longer available: its data key was destroyed.'
        : reason === 'key_missing'
          ? 'This secret is no longer available.'
          : 'This secret could not be decrypted.',
    );
    this.name = 'VaultError';
  }
}

export function ownerKey(owner: VaultOwner): string {
  return `${owner.type}:${owner.id}`;
}

/** The canonical context string bound into every ciphertext as additional data. */
export function canonicalContext(ctx: VaultContext): string {
  return [ctx.owner.type, ctx.owner.id, ctx.record, ctx.field].map(encodeURIComponent).join(':');
}

function header(keyId: string): Buffer {
  const id = Buffer.from(keyId, 'ascii');
  if (id.length === 0 || id.length > 255) throw new Error('data key id must be 1-255 ASCII bytes');
  return Buffer.concat([Buffer.from([FORMAT_V1, id.length]), id]);
}

function aad(head: Buffer, ctx: VaultContext): Buffer {
  return Buffer.concat([head, Buffer.from([0]), Buffer.from(canonicalContext(ctx), 'utf8')]);
}

/** Seals plaintext under a data key. */
export function seal(dek: Buffer, keyId: string, ctx: VaultContext, plaintext: Buffer): Buffer {
  const head = header(keyId);
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', dek, nonce);
  cipher.setAAD(aad(head, ctx));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([head, nonce, body, cipher.getAuthTag()]);
}

export type ParsedCiphertext = {
  version: number;
  keyId: string;
  nonce: Buffer;
  body: Buffer;
  tag: Buffer;
  head: Buffer;
};

/** Reads a ciphertext's header without decrypting it. Throws VaultError('malformed'). */
export function parseCiphertext(ciphertext: Buffer): ParsedCiphertext {
  const version = ciphertext[0];
  const idLength = ciphertext[1];
  if (version !== FORMAT_V1 || idLength === undefined || idLength === 0) throw new VaultError('malformed');
  const headLength = 2 + idLength;
  if (ciphertext.length < headLength + NONCE_BYTES + TAG_BYTES) throw new VaultError('malformed');
  const keyId = ciphertext.subarray(2, headLength).toString('ascii');
  if (!/^[a-z]{2,4}_[0-9A-Z]{26}$/.test(keyId)) throw new VaultError('malformed');
  return {
    version,
    keyId,
    head: ciphertext.subarray(0, headLength),
    nonce: ciphertext.subarray(headLength, headLength + NONCE_BYTES),
    body: ciphertext.subarray(headLength + NONCE_BYTES, ciphertext.length - TAG_BYTES),
    tag: ciphertext.subarray(ciphertext.length - TAG_BYTES),
  };
}

/** Opens a parsed ciphertext. Throws VaultError('authentication_failed') on any mismatch. */
export function open(dek: Buffer, parsed: ParsedCiphertext, ctx: VaultContext): Buffer {
  try {
    const decipher = createDecipheriv('aes-256-gcm', dek, parsed.nonce);
    decipher.setAAD(aad(parsed.head, ctx));
    decipher.setAuthTag(parsed.tag);
    return Buffer.concat([decipher.update(parsed.body), decipher.final()]);
  } catch {
    throw new VaultError('authentication_failed');
  }
}

function wrapAad(owner: VaultOwner, keyId: string, kekVersion: number): Buffer {
  return Buffer.from(
    `berth-dek:${encodeURIComponent(owner.type)}:${encodeURIComponent(owner.id)}:${keyId}:kek-v${kekVersion}`,
    'utf8',
  );
}

/** Encrypts a data key under a KEK version, bound to its owner and id. */
export function wrapKey(kek: Buffer, kekVersion: number, owner: VaultOwner, keyId: string, dek: Buffer): Buffer {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', kek, nonce);
  cipher.setAAD(wrapAad(owner, keyId, kekVersion));
  const body = Buffer.concat([cipher.update(dek), cipher.final()]);
  return Buffer.concat([nonce, body, cipher.getAuthTag()]);
}

/** Decrypts a wrapped data key; throws a plain Error (an operator problem, not a client's). */
export function unwrapKey(kek: Buffer, kekVersion: number, owner: VaultOwner, keyId: string, wrapped: Buffer): Buffer {
  if (wrapped.length !== NONCE_BYTES + KEY_BYTES + TAG_BYTES) {
    throw new Error(`Vault data key ${keyId} has a malformed wrapped key.`);
  }
  try {
    const decipher = createDecipheriv('aes-256-gcm', kek, wrapped.subarray(0, NONCE_BYTES));
    decipher.setAAD(wrapAad(owner, keyId, kekVersion));
    decipher.setAuthTag(wrapped.subarray(NONCE_BYTES + KEY_BYTES));
    return Buffer.concat([decipher.update(wrapped.subarray(NONCE_BYTES, NONCE_BYTES + KEY_BYTES)), decipher.final()]);
  } catch {
    throw new Error(
      `Vault data key ${keyId} cannot be unwrapped with key-encryption key version ${kekVersion}: the configured KEK for that version is not the one that wrapped it.`,
    );
  }
}

export function newDataKey(): Buffer {
  return randomBytes(KEY_BYTES);
}
