import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { usdToMicros } from './platform/money.ts';

/**
 * Berth's configuration: parsed once at start from the environment and an optional JSON
 * file (`--config`), with the same setting names in both. This is the only module that
 * reads `process.env`. Unknown `BERTH_*` settings stop start-up, naming the setting.
 *
 * @example const config = loadConfig({ env: process.env, overrides: { BERTH_PORT: '9000' } });
 */

const bool = z
  .union([z.boolean(), z.enum(['true', 'false', '1', '0'])])
  .transform((v) => v === true || v === 'true' || v === '1');
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
/** One line of text an operator writes (printed on documents): no control characters. */
const oneLine = (max: number) =>
  z
    .string()
    .trim()
    .min(1)
    .max(max)
    .regex(/^[^\p{Cc}]*$/u, 'one line, no control characters');
/** A USD amount, exact to the micro-dollar (kept as text; read with usdToMicros). */
const usd = (example: string) =>
  z.coerce
    .string()
    .trim()
    .refine((v) => usdToMicros(v) !== null, `a USD amount such as ${example} (at most 6 decimals)`);
const url = (protocols: string[]) =>
  z.string().refine(
    (v) => {
      try {
        return protocols.includes(new URL(v).protocol);
      } catch {
        return false;
      }
    },
    `must be a URL starting with ${protocols.map((p) => `${p}//`).join(' or ')}`,
  );

/**
 * Which proxies may set X-Forwarded-For: `false` (none, the default), a number of hops
 * (`1` behind one load balancer), or a comma-separated list of proxy addresses/CIDRs.
 * Trusting every hop would let a client choose its own IP, so `true` is refused.
 */
function parseTrustProxy(value: false | string, ctx: z.RefinementCtx): false | number | string {
  if (value === false || value === 'false' || value === '0' || value === '') return false;
  if (/^\d{1,2}$/.test(value)) return Number(value);
  const parts = value.split(',').map((p) => p.trim());
  const cidr = /^(\d{1,3}(\.\d{1,3}){3}|[0-9a-fA-F:]+)(\/\d{1,3})?$/;
  if (parts.every((p) => cidr.test(p) || p === 'loopback' || p === 'linklocal' || p === 'uniquelocal')) {
    return parts.join(',');
  }
  ctx.addIssue({
    code: 'custom',
    message: 'use false, a number of proxy hops, or a comma-separated list of proxy addresses or CIDRs',
  });
  return z.NEVER;
}

export const ConfigSchema = z
  .object({
    BERTH_HOST: z.string().min(1).default('127.0.0.1'),
    BERTH_PORT: int(0, 65535).default(8080),
    BERTH_DATA_DIR: z.string().min(1).default('./data'),
    BERTH_PUBLIC_URL: url(['http:', 'https:']).optional(),
    BERTH_ROLE: z.enum(['all', 'api', 'gateway', 'worker']).default('all'),
    BERTH_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    BERTH_KEK: z.string().min(1).optional(),
    BERTH_KEK_FILE: z.string().min(1).optional(),
    BERTH_AUDIT_SIGNING_KEY: z.string().min(1).optional(),
    BERTH_AUDIT_SIGNING_KEY_FILE: z.string().min(1).optional(),
    /** Public keys of retired audit signing keys (raw base64url, comma-separated): old checkpoints still verify. */
    BERTH_AUDIT_RETIRED_PUBLIC_KEYS: z.string().min(1).optional(),
    DATABASE_URL: url(['postgres:', 'postgresql:']).optional(),
    BERTH_DB_POOL_MAX: int(1, 1000).default(10),
    BERTH_DB_APP_ROLE: z
      .string()
      .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier')
      .default('berth_app'),
    REDIS_URL: url(['redis:', 'rediss:']).optional(),
    SMTP_URL: url(['smtp:', 'smtps:']).optional(),
    BERTH_MAIL_FROM: z.string().min(3).default('Berth <no-reply@berth.localhost>'),
    BERTH_BODY_LIMIT: int(1024, 1024 * 1024 * 1024).default(1024 * 1024),
    BERTH_TRUST_PROXY: z
      .union([z.literal(false), z.string()])
      .default(false)
      .transform((v, ctx) => parseTrustProxy(v, ctx)),
    BERTH_SESSION_IDLE_MINUTES: int(1, 60 * 24 * 30).default(30),
    BERTH_SESSION_ABSOLUTE_HOURS: int(1, 24 * 365).default(12),
    BERTH_LOGIN_ACCOUNT_MAX_FAILURES: int(1, 10_000).default(10),
    BERTH_LOGIN_ACCOUNT_WINDOW_MINUTES: int(1, 24 * 60).default(15),
    BERTH_LOGIN_IP_MAX_FAILURES: int(1, 10_000).default(10),
    BERTH_LOGIN_IP_WINDOW_SECONDS: int(1, 24 * 3600).default(60),
    BERTH_SIGNUP_IP_MAX: int(1, 100_000).default(20),
    BERTH_EMAIL_ADDRESS_MAX: int(1, 10_000).default(5),
    BERTH_EMAIL_IP_MAX: int(1, 100_000).default(20),
    BERTH_EMAIL_LIMIT_WINDOW_MINUTES: int(1, 7 * 24 * 60).default(60),
    BERTH_EMAIL_TOKEN_TTL_MINUTES: int(5, 60 * 24 * 14).default(60 * 24),
    BERTH_INVITATION_TTL_DAYS: int(1, 90).default(7),
    BERTH_JOBS: bool.default(true),
    BERTH_KEY_ENVIRONMENT: z.enum(['live', 'test']).default('live'),
    BERTH_EGRESS_ALLOW: z.string().optional(),
    /** Lets workspace admins add MCP servers that Berth starts as local programs (stdio): they run on this host. Off by default. */
    BERTH_MCP_STDIO: bool.default(false),
    /** How long a call of the built-in http_request tool or an MCP tool may take before it answers `timeout` (custom HTTP tools have their own limit). */
    BERTH_TOOL_TIMEOUT_SECONDS: int(1, 600).default(30),
    BERTH_VECTOR_CACHE_MB: int(0, 1_048_576).default(1024),
    /** How long an agent run's worker holds it without a heartbeat; a run whose worker died resumes after this. */
    BERTH_RUN_LEASE_SECONDS: int(1, 3600).default(30),
    /** How long a run waits for a tool call's approval before it expires. */
    BERTH_RUN_APPROVAL_TTL_SECONDS: int(10, 30 * 24 * 3600).default(24 * 3600),
    /** Agent runs one worker process executes at once (background runs; sync and streamed runs run in the request's process). */
    BERTH_RUN_CONCURRENCY: int(1, 1000).default(8),
    BERTH_UNPRICED_MODELS: z.enum(['refuse', 'free']).default('refuse'),
    BERTH_GATEWAY_BODY_LIMIT: int(1024, 1024 * 1024 * 1024).default(16 * 1024 * 1024),
    BERTH_GATEWAY_RETRIES: int(0, 5).default(1),
    BERTH_GATEWAY_TOTAL_TIMEOUT_MS: int(1000, 3_600_000).default(300_000),
    BERTH_GATEWAY_DEFAULT_MAX_OUTPUT_TOKENS: int(1, 10_000_000).default(4096),
    BERTH_GATEWAY_WORKSPACE_RPM: int(1, 100_000_000).optional(),
    BERTH_GATEWAY_WORKSPACE_TPM: int(1, 1_000_000_000_000).optional(),
    BERTH_USAGE_JOURNAL_FSYNC: bool.default(false),
    /** A JSON file of operator prices overriding the shipped catalog: { "model": { inputMicrosPerMtok, outputMicrosPerMtok, ... } }. */
    BERTH_MODEL_PRICES_FILE: z.string().min(1).optional(),
    /** A JSON file of platform providers added at start when missing (by name): [{ name, adapter, baseUrl, apiKey, models }]. */
    BERTH_PLATFORM_PROVIDERS_FILE: z.string().min(1).optional(),
    /** A JSON file of plans overriding or adding to the shipped ones: { "<id>": { name, monthlyCreditsMicros, rateLimitRpm, seats, auditRetentionMonths, features } }. */
    BERTH_PLANS_FILE: z.string().min(1).optional(),
    /** `ledger`: calls reserve and settle credits on the billing ledger; `unlimited`: no balances at all. */
    BERTH_CREDITS: z.enum(['ledger', 'unlimited']).default('ledger'),
    /** Credits each new workspace starts with, in USD (exact to the micro-dollar); 0 for none. */
    BERTH_FREE_CREDITS_USD: usd('5 or 12.50').default('5'),
    /** How long a credit reservation may stay open before the expiry job releases it. */
    BERTH_RESERVATION_TTL_SECONDS: int(60, 86_400).default(900),
    /** What a gateway replica reserves at once for a workspace's calls (a credit lease), in USD; 0: a reservation per call. */
    BERTH_CREDIT_LEASE_USD: usd('0.5').default('0.5'),
    /** How long a credit lease takes calls before it is settled on the ledger. */
    BERTH_CREDIT_LEASE_SECONDS: int(1, 300).default(5),
    /** Statement numbers start with this: `<prefix>-<YYYY>-<MM>-<sequence>`. */
    BERTH_INVOICE_PREFIX: z
      .string()
      .regex(/^[A-Z0-9]{1,12}$/, '1 to 12 capital letters or digits')
      .default('BER'),
    /** Who issues the statements and receipts (name, address, tax number), printed on them. */
    BERTH_INVOICE_ISSUER: oneLine(300).optional(),
    /** Who is responsible for the personal data this installation holds (the controller), shown in the privacy policy. */
    BERTH_PRIVACY_CONTROLLER: oneLine(300).optional(),
    /** How people reach the controller about their data (an email address, a postal address or a URL), shown in the privacy policy. */
    BERTH_PRIVACY_CONTACT: oneLine(300).optional(),
    /** The data protection officer and how to reach them, when there is one, shown in the privacy policy. */
    BERTH_PRIVACY_DPO: oneLine(300).optional(),
    /** Below this (USD, available plus held) a workspace's credits are low: owners are warned once per dip; 0 for no warning. */
    BERTH_LOW_BALANCE_USD: usd('1 or 2.50').default('1'),
    /** Below this (USD, available plus held, more than 0) a workspace is out of credits: agents stop starting runs. */
    BERTH_EXHAUSTED_BALANCE_USD: z.coerce
      .string()
      .trim()
      .refine((v) => (usdToMicros(v) ?? 0) > 0, 'a USD amount above 0 such as 0.01 (at most 6 decimals)')
      .default('0.01'),
    /** Days an out-of-credits workspace keeps its deployments' runtime data; 0 never deletes them. */
    BERTH_SUSPENSION_GRACE_DAYS: int(0, 3650).default(30),
    /** Stripe's secret API key: turns card top-ups (Checkout) on. */
    BERTH_STRIPE_SECRET_KEY: z.string().min(8).optional(),
    /** The webhook endpoint's signing secrets, comma-separated (several while one is rotated). */
    BERTH_STRIPE_WEBHOOK_SECRETS: z.string().min(8).optional(),
    /** Stripe's API address (a test double's in tests). */
    BERTH_STRIPE_API_URL: z.url().default('https://api.stripe.com'),
  })
  .strict();

export type Config = z.output<typeof ConfigSchema> & { publicUrl: string; dataDir: string };
export type RawConfig = Partial<Record<keyof z.input<typeof ConfigSchema>, string | number | boolean>>;

/** Settings that are secrets or may carry one; `berth config print` masks them. */
const SECRET_SETTINGS = new Set([
  'BERTH_KEK',
  'BERTH_AUDIT_SIGNING_KEY',
  'BERTH_STRIPE_SECRET_KEY',
  'BERTH_STRIPE_WEBHOOK_SECRETS',
]);
const URL_SETTINGS = new Set(['DATABASE_URL', 'REDIS_URL', 'SMTP_URL']);
const KNOWN_PREFIXES = ['BERTH_'];
const KNOWN_EXTRA = new Set(['DATABASE_URL', 'REDIS_URL', 'SMTP_URL']);
/** Environment variables that belong to the process, not to Berth's configuration. */
const IGNORED_ENV = new Set(['BERTH_URL', 'BERTH_API_KEY', 'BERTH_CONFIG', 'BERTH_PROVIDER_API_KEY']);

export class ConfigError extends Error {
  constructor(
    readonly setting: string,
    message: string,
  ) {
    super(`Invalid configuration: ${setting}: ${message}`);
    this.name = 'ConfigError';
  }
}

export type LoadConfigInput = {
  env?: Record<string, string | undefined>;
  file?: string;
  overrides?: RawConfig;
};

function readFileSettings(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('--config', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ConfigError('--config', `${file} is not valid JSON`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError('--config', `${file} must hold a JSON object of settings`);
  }
  return parsed as Record<string, unknown>;
}

function envSettings(env: Record<string, string | undefined>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined || v === '' || IGNORED_ENV.has(k) || k.startsWith('BERTH_TEST_')) continue;
    if (KNOWN_EXTRA.has(k) || KNOWN_PREFIXES.some((p) => k.startsWith(p))) out[k] = v;
  }
  return out;
}

/** Parses and validates every setting; throws ConfigError naming the first bad one. */
export function loadConfig(input: LoadConfigInput = {}): Config {
  const fromFile = input.file ? readFileSettings(input.file) : {};
  const merged = { ...fromFile, ...envSettings(input.env ?? {}), ...(input.overrides ?? {}) };
  const result = ConfigSchema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0];
    if (!issue) throw new ConfigError('config', 'invalid');
    if (issue.code === 'unrecognized_keys') {
      throw new ConfigError(issue.keys.join(', '), 'unknown setting');
    }
    throw new ConfigError(String(issue.path[0] ?? 'config'), issue.message);
  }
  const c = result.data;
  if (c.BERTH_KEK && c.BERTH_KEK_FILE) {
    throw new ConfigError('BERTH_KEK_FILE', 'set either BERTH_KEK or BERTH_KEK_FILE, not both');
  }
  if (c.BERTH_AUDIT_SIGNING_KEY && c.BERTH_AUDIT_SIGNING_KEY_FILE) {
    throw new ConfigError(
      'BERTH_AUDIT_SIGNING_KEY_FILE',
      'set either BERTH_AUDIT_SIGNING_KEY or BERTH_AUDIT_SIGNING_KEY_FILE, not both',
    );
  }
  const host = c.BERTH_HOST.includes(':') ? `[${c.BERTH_HOST}]` : c.BERTH_HOST;
  const publicUrl = (c.BERTH_PUBLIC_URL ?? `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${c.BERTH_PORT}`).replace(
    /\/+$/,
    '',
  );
  return { ...c, publicUrl, dataDir: path.resolve(c.BERTH_DATA_DIR) };
}

/** The configuration as `berth config print` shows it: secrets masked, URL passwords hidden. */
export function maskedConfig(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config)) {
    if (k === 'publicUrl' || k === 'dataDir') continue;
    if (v === undefined) continue;
    if (SECRET_SETTINGS.has(k)) out[k] = '********';
    else if (URL_SETTINGS.has(k) && typeof v === 'string') out[k] = maskUrl(v);
    else out[k] = v;
  }
  return out;
}

export function maskUrl(value: string): string {
  try {
    const u = new URL(value);
    if (u.password) u.password = '********';
    return u.toString();
  } catch {
    return '********';
  }
}
