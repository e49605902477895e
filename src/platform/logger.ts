import type { DestinationStream, Logger } from 'pino';
import { pino } from 'pino';

export type { Logger };

/**
 * Paths pino removes from every log line: credentials of any kind, wherever they sit.
 * Bodies are never logged at all (the HTTP layer logs method, route, status and timing).
 */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
  'req.headers["x-csrf-token"]',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  '*.password',
  '*.newPassword',
  '*.currentPassword',
  '*.token',
  '*.secret',
  '*.apiKey',
  '*.kek',
  '*.recoveryCode',
  '*.totpCode',
  'password',
  'token',
  'secret',
  'apiKey',
];

export type LoggerOptions = { level?: string; destination?: NodeJS.WritableStream | { write(msg: string): void } };

export function createLogger(opts: LoggerOptions = {}): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { service: 'berth' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    opts.destination as DestinationStream | undefined,
  );
}

/**
 * A child of `logger` without the redaction pass, for lines built only from fixed fields that
 * cannot hold a credential or content (the request line: id, method, route pattern, status,
 * time). Redaction walks every line for the wildcard paths above, which costs more than
 * writing the line; never hand this logger headers, bodies, URLs, errors or user input.
 */
export function fixedFieldsLogger(logger: Logger): Logger {
  return logger.child({}, { redact: { paths: [] } });
}
