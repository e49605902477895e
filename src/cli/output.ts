import { type Config, ConfigError } from '../config.ts';
import { isAppError } from '../platform/errors.ts';
import { DataDirBusyError } from '../platform/lock.ts';
import { createLogger, type Logger } from '../platform/logger.ts';

/**
 * Exit codes every `berth` command uses:
 * 0 success, 1 failure, 2 invalid usage or configuration, 3 the embedded database is held
 * by another process, 4 the request was refused (validation, conflict, permission),
 * 5 the server could not be reached.
 */
export const EXIT = { ok: 0, failure: 1, usage: 2, busy: 3, refused: 4, unreachable: 5 } as const;

export type Io = {
  out: (text: string) => void;
  err: (text: string) => void;
  env: Record<string, string | undefined>;
  stdin: NodeJS.ReadStream;
};

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
    readonly code = 'cli_error',
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** Prints a result: JSON with --json, otherwise the human text. */
export function emit(io: Io, json: boolean, value: unknown, human: string) {
  io.out(json ? JSON.stringify(value, null, 2) : human);
}

/** Turns any error into a message and an exit code (no stack traces for expected errors). */
export function describeError(err: unknown): { code: string; message: string; exitCode: number } {
  if (err instanceof CliError) return { code: err.code, message: err.message, exitCode: err.exitCode };
  if (err instanceof ConfigError) return { code: 'invalid_config', message: err.message, exitCode: EXIT.usage };
  if (err instanceof DataDirBusyError) return { code: 'database_busy', message: err.message, exitCode: EXIT.busy };
  if (isAppError(err)) return { code: err.code, message: err.message, exitCode: EXIT.refused };
  const e = err as { code?: string; message?: string };
  if (e?.code === 'ECONNREFUSED') {
    return { code: 'unreachable', message: 'Cannot reach the database or server.', exitCode: EXIT.unreachable };
  }
  return { code: 'internal_error', message: e?.message ?? String(err), exitCode: EXIT.failure };
}

/** Operator commands log to stderr, so their stdout stays clean output (JSON with --json). */
export function cliLogger(io: Io, config: Config): Logger {
  return createLogger({
    level: config.BERTH_LOG_LEVEL,
    destination: { write: (line: string) => io.err(line.trimEnd()) },
  });
}
