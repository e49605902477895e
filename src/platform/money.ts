/**
 * Money as Berth keeps it: integer micro-units (1 USD = 1,000,000), converted from and to
 * decimal USD text exactly, never through a float.
 *
 * @example usdToMicros('12.50') // 12500000
 * @example usdToMicros('-0.5', { signed: true }) // -500000
 */
export const MICROS_PER_USD = 1_000_000;

/** Decimal USD text (up to 9 whole digits and 6 decimals) as micro-units; null when it is not that. */
export function usdToMicros(text: string, opts: { signed?: boolean } = {}): number | null {
  const m = /^(-)?(\d{1,9})(?:\.(\d{1,6}))?$/.exec(text.trim());
  if (!m || (m[1] && !opts.signed)) return null;
  const micros = Number(m[2]) * MICROS_PER_USD + Number((m[3] ?? '').padEnd(6, '0'));
  return m[1] ? -micros : micros;
}

/** Integer micro-units as US dollars for people: 150000 -> "0.15", 12 -> "0.000012", 2500000 -> "2.50". */
export function microsToUsd(micros: number): string {
  const sign = micros < 0 ? '-' : '';
  const abs = Math.abs(Math.trunc(micros));
  const frac = String(abs % MICROS_PER_USD)
    .padStart(6, '0')
    .replace(/0+$/, '')
    .padEnd(2, '0');
  return `${sign}${Math.floor(abs / MICROS_PER_USD)}.${frac}`;
}
