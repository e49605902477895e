import { randomBytes } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { type Config, ConfigError } from '../../config.ts';
import type { Logger } from '../../platform/logger.ts';
import { dataDirSecret, readSecretFile, warnIfLoose } from '../../platform/secret-file.ts';

/** The key-encryption keys Berth knows: the newest version wraps, every version unwraps. */
export type Keyring = { current: { version: number; key: Buffer }; all: Map<number, Buffer> };

/** Where a loaded keyring came from (never the key itself). */
export type LoadedKeyring = Keyring & {
  source: 'BERTH_KEK' | 'BERTH_KEK_FILE' | 'data_dir';
  /** The file holding the keyring (BERTH_KEK_FILE or `<dataDir>/kek`), null for BERTH_KEK. */
  file: string | null;
  /** True when this start generated the embedded KEK file. */
  generated: boolean;
};

const KEK_RE = /^berth-kek-v([1-9][0-9]{0,5}):([A-Za-z0-9_-]{43})$/;
const FORMAT_HINT = 'expected berth-kek-v<N>:<32 bytes, base64url>; make one with `berth vault generate-key`';

/** The name of the KEK file Berth generates in the data directory on embedded starts. */
export const DATA_DIR_KEK_FILE = 'kek';

/**
 * A new key-encryption key in Berth's text form.
 *
 * @example generateKek(2) // 'berth-kek-v2:Zm9v...'
 */
export function generateKek(version = 1): string {
  if (!Number.isInteger(version) || version < 1 || version > 999_999) throw new Error('KEK version must be 1-999999');
  return `berth-kek-v${version}:${randomBytes(32).toString('base64url')}`;
}

/**
 * Parses a keyring: one or more `berth-kek-v<N>:<base64url>` entries separated by commas,
 * whitespace or newlines. The highest version is current. Errors name `setting` and never
 * echo key text.
 */
export function parseKeyring(text: string, setting: 'BERTH_KEK' | 'BERTH_KEK_FILE' = 'BERTH_KEK'): Keyring {
  const entries = text.split(/[\s,]+/).filter((e) => e.length > 0);
  if (entries.length === 0) throw new ConfigError(setting, `holds no key-encryption key (${FORMAT_HINT})`);
  const all = new Map<number, Buffer>();
  entries.forEach((entry, i) => {
    const m = KEK_RE.exec(entry);
    const key = m?.[2] ? Buffer.from(m[2], 'base64url') : null;
    if (!m || !key || key.length !== 32 || key.toString('base64url') !== m[2]) {
      throw new ConfigError(setting, `entry ${i + 1} is not a key-encryption key (${FORMAT_HINT})`);
    }
    const version = Number(m[1]);
    if (all.has(version)) throw new ConfigError(setting, `lists version ${version} twice`);
    all.set(version, key);
  });
  const version = Math.max(...all.keys());
  const key = all.get(version);
  if (!key) throw new ConfigError(setting, 'holds no key-encryption key');
  return { current: { version, key }, all };
}

/** Formats a keyring back to text, newest version first (for keyring files). */
export function formatKeyring(keyring: Keyring): string {
  return `${[...keyring.all.entries()]
    .sort(([a], [b]) => b - a)
    .map(([v, k]) => `berth-kek-v${v}:${k.toString('base64url')}`)
    .join('\n')}\n`;
}

function readKeyringFile(file: string, setting: 'BERTH_KEK_FILE' | 'BERTH_KEK'): string {
  return readSecretFile(file, setting);
}

/** The file a file-based keyring lives in: BERTH_KEK_FILE, else `<dataDir>/kek` on embedded; null for BERTH_KEK. */
export function keyringFilePath(config: Pick<Config, 'BERTH_KEK' | 'BERTH_KEK_FILE' | 'dataDir'>): string | null {
  if (config.BERTH_KEK) return null;
  if (config.BERTH_KEK_FILE) return path.resolve(config.BERTH_KEK_FILE);
  return path.join(config.dataDir, DATA_DIR_KEK_FILE);
}

/**
 * Loads the keyring from BERTH_KEK or BERTH_KEK_FILE. Without either: on the embedded
 * engine it reads `<dataDir>/kek`, generating it (mode 0600) on first start and saying so;
 * on server Postgres it refuses, because replicas must share one configured KEK.
 */
export function loadKeyring(
  config: Pick<Config, 'BERTH_KEK' | 'BERTH_KEK_FILE' | 'dataDir'>,
  opts: { engine: 'pglite' | 'postgres'; logger: Logger },
): LoadedKeyring {
  if (config.BERTH_KEK) {
    return { ...parseKeyring(config.BERTH_KEK, 'BERTH_KEK'), source: 'BERTH_KEK', file: null, generated: false };
  }
  if (config.BERTH_KEK_FILE) {
    const file = path.resolve(config.BERTH_KEK_FILE);
    const keyring = parseKeyring(readKeyringFile(file, 'BERTH_KEK_FILE'), 'BERTH_KEK_FILE');
    warnIfLoose(file, opts.logger, 'key-encryption key');
    return { ...keyring, source: 'BERTH_KEK_FILE', file, generated: false };
  }
  if (opts.engine === 'postgres') {
    throw new ConfigError(
      'BERTH_KEK',
      'required with DATABASE_URL: set BERTH_KEK or BERTH_KEK_FILE to a key from `berth vault generate-key`, the same on every replica',
    );
  }
  const { file, text, generated } = dataDirSecret({
    dataDir: config.dataDir,
    name: DATA_DIR_KEK_FILE,
    setting: 'BERTH_KEK_FILE',
    what: 'key-encryption key',
    generate: () => generateKek(1),
    logger: opts.logger,
    generatedMessage:
      'Generated a key-encryption key for the vault. Back this file up with the data directory: without it, encrypted secrets cannot be read.',
  });
  const keyring = parseKeyring(text, 'BERTH_KEK_FILE');
  return { ...keyring, source: 'data_dir', file, generated };
}

/**
 * Adds a new, higher KEK version to a keyring file (atomically, mode 0600) and returns it.
 * New data keys are wrapped under it once Berth restarts; `rotateKek` rewraps the old ones.
 */
export function addKekVersion(file: string): { version: number } {
  const keyring = parseKeyring(readKeyringFile(file, 'BERTH_KEK_FILE'), 'BERTH_KEK_FILE');
  const version = keyring.current.version + 1;
  const added = parseKeyring(generateKek(version));
  keyring.all.set(version, added.current.key);
  writeKeyringFile(file, keyring);
  return { version };
}

/**
 * Removes an old KEK version from a keyring file once no data key uses it (check with the
 * vault's `status()`); the current version cannot be removed.
 */
export function removeKekVersion(file: string, version: number): { removed: boolean } {
  const keyring = parseKeyring(readKeyringFile(file, 'BERTH_KEK_FILE'), 'BERTH_KEK_FILE');
  if (version === keyring.current.version) {
    throw new ConfigError('BERTH_KEK_FILE', `version ${version} is the current key-encryption key`);
  }
  const removed = keyring.all.delete(version);
  if (removed) writeKeyringFile(file, keyring);
  return { removed };
}

function writeKeyringFile(file: string, keyring: Keyring) {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, formatKeyring(keyring), { mode: 0o600, flag: 'w' });
  renameSync(tmp, file);
}
