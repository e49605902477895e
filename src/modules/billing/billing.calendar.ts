import { AppError } from '../../platform/errors.ts';

// Billing's calendar: UTC days and months (budget periods, the auto top-up's monthly cap),
// and calendar months written `YYYY-MM` (statements).

/** The start of the UTC day or calendar month that `at` falls in. */
export function periodStart(period: 'day' | 'month', at: Date): Date {
  const y = at.getUTCFullYear();
  const m = at.getUTCMonth();
  return period === 'day' ? new Date(Date.UTC(y, m, at.getUTCDate())) : new Date(Date.UTC(y, m, 1));
}

/** When the period that starts at `start` ends (the next one's start). */
export function periodEnd(period: 'day' | 'month', start: Date): Date {
  const y = start.getUTCFullYear();
  const m = start.getUTCMonth();
  return period === 'day' ? new Date(Date.UTC(y, m, start.getUTCDate() + 1)) : new Date(Date.UTC(y, m + 1, 1));
}

const FIRST_YEAR = 2000;

export function periodOf(at: Date): string {
  return at.toISOString().slice(0, 7);
}

function monthIndex(period: string): number {
  return Number(period.slice(0, 4)) * 12 + Number(period.slice(5, 7)) - 1;
}

export function addMonths(period: string, n: number): string {
  const i = monthIndex(period) + n;
  return `${String(Math.floor(i / 12)).padStart(4, '0')}-${String((i % 12) + 1).padStart(2, '0')}`;
}

export function periodBounds(period: string): { start: Date; end: Date } {
  const i = monthIndex(period);
  const start = new Date(Date.UTC(Math.floor(i / 12), i % 12, 1));
  return { start, end: periodEnd('month', start) };
}

/** A period a caller asks for: `YYYY-MM`, a real month, not after the current one; else 400 `invalid_period`. */
export function parsePeriod(text: string, now: Date): string {
  const m = /^(\d{4})-(\d{2})$/.exec(text);
  const month = Number(m?.[2]);
  if (!m || month < 1 || month > 12 || Number(m[1]) < FIRST_YEAR) {
    throw new AppError('invalid_period', 'A period is a calendar month written YYYY-MM, e.g. 2026-03.');
  }
  if (text > periodOf(now)) {
    throw new AppError('invalid_period', 'That month has not started yet: its statement does not exist.');
  }
  return text;
}

/** A day a caller names (`YYYY-MM-DD`, UTC) as its midnight; else 400 `invalid_date_range`. */
export function parseDay(text: string, what: string): Date {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text);
  const at = m ? new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]))) : null;
  if (!m || !at || at.toISOString().slice(0, 10) !== text || Number(m[1]) < FIRST_YEAR) {
    throw new AppError('invalid_date_range', `${what} is a day written YYYY-MM-DD (UTC), e.g. 2026-03-01.`);
  }
  return at;
}
