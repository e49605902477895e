import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { type Algorithm, hash, parseOptions, verify } from '@node-rs/argon2';
import { AppError } from '../../platform/errors.ts';

/**
 * Argon2id with OWASP's minimum configuration, set explicitly because library defaults
 * may change: 19 MiB of memory, 2 passes, 1 lane. A stored hash below any of these is
 * rehashed at the next successful sign-in.
 */
export const ARGON2_PARAMS = {
  // Algorithm.Argon2id (a const enum, which verbatimModuleSyntax cannot read).
  algorithm: 2 as Algorithm,
  memoryCost: 19_456,
  timeCost: 2,
  parallelism: 1,
  outputLen: 32,
} as const;

export const PASSWORD_MIN_LENGTH = 8;
/** Longer than the 64 NIST asks for; the cap only bounds hashing work. */
export const PASSWORD_MAX_LENGTH = 128;

let commonPasswords: Set<string> | null = null;

function loadCommonPasswords(): Set<string> {
  if (!commonPasswords) {
    const text = readFileSync(new URL('./common-passwords.txt', import.meta.url), 'utf8');
    commonPasswords = new Set(
      text
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l !== '' && !l.startsWith('#')),
    );
  }
  return commonPasswords;
}

/** Passwords are compared and hashed in Unicode NFKC, so look-alike encodings are one password. */
export function normalizePassword(password: string): string {
  return password.normalize('NFKC');
}

/** Why a password is refused, or null when it is acceptable. No composition rules (NIST 800-63B). */
export function passwordProblem(password: string): string | null {
  const length = [...normalizePassword(password)].length;
  if (length < PASSWORD_MIN_LENGTH) return `Use at least ${PASSWORD_MIN_LENGTH} characters.`;
  if (length > PASSWORD_MAX_LENGTH) return `Use at most ${PASSWORD_MAX_LENGTH} characters.`;
  if (loadCommonPasswords().has(normalizePassword(password).toLowerCase())) {
    return 'This password is one of the most commonly used ones; choose another.';
  }
  return null;
}

/** Throws `weak_password` when the password breaks a rule. */
export function assertPasswordAcceptable(password: string): void {
  const problem = passwordProblem(password);
  if (problem) throw new AppError('weak_password', problem);
}

/**
 * The one place Argon2 runs. Every hash and verify in Berth goes through this object, so a
 * test can count the work each path does (`vi.spyOn(passwordHasher, 'verify')`).
 */
export const passwordHasher = {
  hash(password: string): Promise<string> {
    return hash(normalizePassword(password), ARGON2_PARAMS);
  },
  async verify(passwordHash: string, password: string): Promise<boolean> {
    try {
      return await verify(passwordHash, normalizePassword(password));
    } catch {
      return false;
    }
  },
};

export function hashPassword(password: string): Promise<string> {
  return passwordHasher.hash(password);
}

export function verifyPassword(passwordHash: string, password: string): Promise<boolean> {
  return passwordHasher.verify(passwordHash, password);
}

/** True when a stored hash was made with weaker parameters (or another variant) than today's. */
export function needsRehash(passwordHash: string): boolean {
  try {
    const o = parseOptions(passwordHash);
    return (
      o.algorithm !== ARGON2_PARAMS.algorithm ||
      o.memoryCost < ARGON2_PARAMS.memoryCost ||
      o.timeCost < ARGON2_PARAMS.timeCost ||
      o.outputLen < ARGON2_PARAMS.outputLen
    );
  } catch {
    return true;
  }
}

let dummyHash: Promise<string> | null = null;

/**
 * Verifies against a hash of a random password, so an unknown email costs the same
 * Argon2 work as a known one and the answer time does not reveal which it was.
 */
export async function burnPasswordCheck(password: string): Promise<void> {
  await verifyPassword(await prepareDummyHash(), password);
}

/** Makes the dummy hash ahead of the first sign-in, so even that one costs the usual time. */
export function prepareDummyHash(): Promise<string> {
  dummyHash ??= hash(randomBytes(32), ARGON2_PARAMS);
  return dummyHash;
}
