import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../config.ts';
import type { Logger } from './logger.ts';

/**
 * Secrets Berth keeps in files: the vault's key-encryption keys and the audit signing key.
 * On the embedded engine, a missing secret is generated once into the data dir (mode 0600),
 * so `npm start` needs no configuration; the operator is told to back the file up.
 */

/** Reads a secret file; an unreadable file stops start-up naming the setting. */
export function readSecretFile(file: string, setting: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(setting, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

/** Warns when a secret file is readable by group or others. */
export function warnIfLoose(file: string, logger: Logger, what: string) {
  try {
    if ((statSync(file).mode & 0o077) !== 0) {
      logger.warn({ file }, `The ${what} file is readable by other users; restrict it to mode 0600.`);
    }
  } catch {
    // Already read successfully; a failing stat changes nothing.
  }
}

/**
 * Reads `<dataDir>/<name>`, creating it first with `generate()` when it does not exist.
 * Creation is exclusive (`wx`), so two processes starting at once keep the same secret.
 */
export function dataDirSecret(opts: {
  dataDir: string;
  name: string;
  setting: string;
  what: string;
  generate: () => string;
  logger: Logger;
  /** Said once, when the file is generated: what it is for and that it must be backed up. */
  generatedMessage: string;
}): { file: string; text: string; generated: boolean } {
  const file = path.join(opts.dataDir, opts.name);
  let generated = false;
  try {
    mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
    writeFileSync(file, `${opts.generate()}\n`, { mode: 0o600, flag: 'wx' });
    generated = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new ConfigError(opts.setting, `cannot create ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  }
  const text = readSecretFile(file, opts.setting);
  if (generated) opts.logger.warn({ file }, opts.generatedMessage);
  else warnIfLoose(file, opts.logger, opts.what);
  return { file, text, generated };
}
