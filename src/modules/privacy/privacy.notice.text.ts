/**
 * The words the generated documents (the privacy policy, the record of processing) use for
 * the data map's terms. Every term has an entry; a term added to the map later without one
 * still reads sensibly (`describeRetention` spells out `<n>_days|months|years`).
 */

export const CATEGORY_TEXT: Record<string, { label: string; description: string }> = {
  identifier: {
    label: 'Identifiers',
    description: 'Random ids that link records together (such as usr_…, ws_…, key_…)',
  },
  account: { label: 'Account data', description: 'Your email address, display name and the state of your account' },
  credential: {
    label: 'Credentials',
    description:
      'Password hashes (Argon2id), API key and token hashes (SHA-256), encrypted secrets: never shown again and never exported',
  },
  security: {
    label: 'Security data',
    description: 'Sign-in history, IP addresses and user agents, throttling and security events',
  },
  tenancy: { label: 'Workspace membership', description: 'Workspaces, their members and roles, and invitations' },
  usage_metadata: {
    label: 'Usage metadata',
    description: 'Model, tokens, latency, status and cost of each request: never the prompts or completions themselves',
  },
  billing: { label: 'Billing records', description: 'Plans, credits and their movements, payments, statements' },
  audit: { label: 'Audit log', description: 'Who changed what in a workspace and when, in a tamper-evident chain' },
  content: {
    label: 'Content',
    description: 'What you put in: documents, agent definitions, free-text reasons you give',
  },
  communication: { label: 'Communications', description: 'Email Berth sends you, and when it was sent' },
  operational: { label: 'Operational records', description: 'Platform bookkeeping that holds no personal data' },
};

export function categoryText(category: string) {
  return CATEGORY_TEXT[category] ?? { label: category.replace(/_/g, ' '), description: category.replace(/_/g, ' ') };
}

export const BASIS_TEXT: Record<string, string> = {
  contract:
    'Contract (Art. 6(1)(b) GDPR): needed to provide the service you signed up for, or to take steps you asked for before signing up',
  legitimate_interest:
    'Legitimate interests (Art. 6(1)(f) GDPR): needed for the security and operation of the service; you may object',
  legal_obligation: 'Legal obligation (Art. 6(1)(c) GDPR): required by tax, accounting or data protection law',
  consent:
    'Consent (Art. 6(1)(a) GDPR): only when you agreed, and you may withdraw it at any time as easily as you gave it',
};

export const basisText = (basis: string) => BASIS_TEXT[basis] ?? basis.replace(/_/g, ' ');

const RETENTION_TEXT: Record<string, string> = {
  account_lifetime: 'For as long as your account exists; erased when you delete it (after the 30-day grace period)',
  workspace_lifetime: 'For as long as the workspace exists; erased when it is deleted',
  until_expiry: 'Deleted as soon as it expires or is used (sessions, one-time tokens and links)',
  operational: 'For the life of the installation (no personal data, or the registry itself)',
  outbox_30_days: 'At most 30 days, less when the link it carries expires sooner',
};

const UNITS: Record<string, string> = { days: 'days', months: 'months', years: 'years' };

/** A retention class in words, e.g. `security_13_months` -> "13 months, then deleted". */
export function describeRetention(retentionClass: string): string {
  const known = RETENTION_TEXT[retentionClass];
  if (known) return known;
  const m = /_(\d+)_(days|months|years)$/.exec(retentionClass);
  if (!m) return retentionClass.replace(/_/g, ' ');
  const what = retentionClass.slice(0, m.index).replace(/_/g, ' ');
  const span = `${m[1]} ${UNITS[m[2] ?? ''] ?? m[2]}`;
  if (what === 'billing') return `${span} (tax and accounting law), also after your account is deleted, then deleted`;
  if (what === 'audit') return `${span} (longer when the workspace's plan says so), then deleted`;
  return `${span}, then deleted or reduced to totals that identify no one`;
}

/** Who a table's rows are about, as the record of processing names them. */
export const SUBJECT_TEXT: Record<string, string> = {
  user: 'Users (account holders)',
  workspace: 'Members of customer workspaces',
  none: 'No one in particular (platform records)',
};

/**
 * Technical and organisational measures, by data category (Art. 30(1)(g), Art. 32): what the
 * code does, each backed by a test in the repository.
 */
export const GENERAL_MEASURES = [
  'Tenant isolation: every workspace row carries its workspace id; on server Postgres row-level security is a second lock',
  'Least privilege: the application connects as a database role that owns no table',
  'Every administrative change is written to a hash-chained, append-only audit log with signed checkpoints',
  'Prompts, completions and upstream error bodies are never stored; logs carry no bodies and redact credentials',
  'Retention windows are enforced by scheduled jobs generated from the data map',
];

const CATEGORY_MEASURES: Record<string, string> = {
  credential:
    'Passwords as Argon2id hashes; API keys and tokens as SHA-256 hashes; third-party secrets as AES-256-GCM ciphertext under per-owner data keys',
  security: 'Sign-in throttling per account and per address; security events visible to the account holder',
  audit: 'Hash chain per workspace, append-only triggers, signed checkpoints, `berth audit verify`',
  billing: 'Integer amounts in a double-entry ledger with idempotent movements; card data stays with the processor',
  communication: 'Outbox bodies encrypted under the recipient’s data key and kept only as long as their links live',
  content: 'Encrypted under the owner’s data key where it holds secrets; erased with its workspace or account',
  account: 'Erased or pseudonymised when the account is deleted; the data key is destroyed (crypto-shredding)',
};

export function measuresFor(categories: readonly string[]): string[] {
  return categories.flatMap((c) => {
    const m = CATEGORY_MEASURES[c];
    return m ? [m] : [];
  });
}
