import { z } from 'zod';

/** Control characters (NUL, tabs, line breaks...) have no place in a name; Postgres refuses NUL outright. */
export const NO_CONTROL_CHARACTERS = /^[^\p{Cc}]*$/u;

/**
 * A short human-entered text (a name, a label): trimmed, `min` to `max` characters, no
 * control characters. Every such field of every module uses it.
 *
 * @example const Body = z.strictObject({ name: singleLineText(1, 100) });
 */
export function singleLineText(min: number, max: number) {
  return z
    .string()
    .trim()
    .min(min)
    .max(max)
    .regex(NO_CONTROL_CHARACTERS, 'no control characters')
    .describe(`${min} to ${max} characters, no control characters`);
}
