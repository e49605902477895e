import type { PolicySubprocessor, PolicyVersionSummary, PolicyView } from './privacy.notice.schemas.ts';
import { categoryText } from './privacy.notice.text.ts';

/**
 * The privacy policy as a self-contained page: no scripts, no outside resources, every value
 * escaped (the operator's settings and sub-processor names included). A pure function of the
 * stored document, so an old version renders as it was published.
 */

/** Served with the page: no scripts, nothing from outside, inline styles only. */
export const POLICY_CSP =
  "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}

const day = (iso: string) => iso.slice(0, 10);
const list = (items: string[]) => items.map(escapeHtml).join(', ');
const label = (category: string) => categoryText(category).label;

const STYLE = `body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1b1f24;max-width:60rem;margin:2rem auto;padding:0 1rem}
h1{font-size:1.6rem;margin:0 0 .25rem}h2{font-size:1.15rem;margin:2rem 0 .5rem}h3{font-size:1rem;margin:1.25rem 0 .4rem}
table{border-collapse:collapse;width:100%;font-size:14px}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e1e4e8;vertical-align:top}
.meta th{width:12rem;color:#57606a;font-weight:normal}.muted{color:#57606a}ul{padding-left:1.25rem}code{font-size:13px}
@media print{body{margin:0;max-width:none}a{color:inherit}}`;

function controllerRows(v: PolicyView): string {
  const c = v.policy.controller;
  const row = (name: string, value: string | null, missing: string) =>
    `<tr><th>${name}</th><td>${value ? escapeHtml(value) : `<span class="muted">${escapeHtml(missing)}</span>`}</td></tr>`;
  return [
    row('Controller', c.name, 'the operator of this installation (not configured)'),
    row('Contact', c.contact, 'not configured'),
    row('Data protection officer', c.dpo, 'none appointed'),
    `<tr><th>Version</th><td>${v.version}, effective ${escapeHtml(day(v.effectiveAt))}</td></tr>`,
  ].join('\n');
}

function processingTable(v: PolicyView, personal: boolean): string {
  const rows = v.policy.processing
    .filter((p) => p.personal === personal)
    .map(
      (p) =>
        `<tr><td>${escapeHtml(p.purpose)}</td><td>${list(p.categories.map(label))}</td>` +
        `<td>${list(p.bases.map((b) => b.replace(/_/g, ' ')))}</td>` +
        `<td>${list(p.retention.map((r) => r.text))}</td>` +
        `<td>${p.recipients.length ? list(p.recipients) : '<span class="muted">no one outside the operator</span>'}</td></tr>`,
    );
  if (rows.length === 0) return '<p class="muted">None.</p>';
  return `<table><thead><tr><th>Purpose</th><th>Data</th><th>Lawful basis</th><th>Kept</th><th>Recipients</th></tr></thead>
<tbody>
${rows.join('\n')}
</tbody></table>`;
}

function subprocessorRows(subs: PolicySubprocessor[]): string {
  if (subs.length === 0) return '<p>No sub-processors are registered.</p>';
  const rows = subs.map(
    (s) =>
      `<tr><td>${escapeHtml(s.name)}</td><td>${escapeHtml(s.purpose)}</td><td>${list(s.dataCategories.map(label))}</td>` +
      `<td>${escapeHtml(s.region)}</td><td>${escapeHtml(day(s.effectiveAt))}${s.retiredAt ? ` to ${escapeHtml(day(s.retiredAt))}` : ''}</td></tr>`,
  );
  return `<table><thead><tr><th>Sub-processor</th><th>Purpose</th><th>Data shared</th><th>Region</th><th>In use</th></tr></thead>
<tbody>
${rows.join('\n')}
</tbody></table>`;
}

/** The policy page; `versions` (newest first) are linked at the end. */
export function renderPolicyHtml(v: PolicyView, versions: PolicyVersionSummary[]): string {
  const p = v.policy;
  const categories = p.categories
    .map(
      (c) =>
        `<tr><td>${escapeHtml(c.label)} <span class="muted">(${escapeHtml(c.category)})</span></td><td>${escapeHtml(c.description)}</td><td>${c.personal ? 'yes' : 'no'}</td></tr>`,
    )
    .join('\n');
  const bases = p.bases.map(
    (b) => `<li><strong>${escapeHtml(b.basis.replace(/_/g, ' '))}</strong>: ${escapeHtml(b.text)}</li>`,
  );
  const retention = p.retention.map(
    (r) => `<tr><td><code>${escapeHtml(r.class)}</code></td><td>${escapeHtml(r.text)}</td></tr>`,
  );
  const rights = p.rights.map((r) => {
    const how = r.how.length
      ? `<ul>${r.how.map((h) => `<li><code>${escapeHtml(h)}</code></li>`).join('')}</ul>`
      : p.controller.contact
        ? `<p>Contact: ${escapeHtml(p.controller.contact)}</p>`
        : '';
    return `<h3>${escapeHtml(r.right.replace(/_/g, ' '))}</h3><p>${escapeHtml(r.description)}</p>${how}`;
  });
  const history = versions.map(
    (h) =>
      `<li><a href="/privacy?version=${h.version}">Version ${h.version}</a>, effective ${escapeHtml(day(h.effectiveAt))}${h.version === v.version ? ' (shown)' : ''}${h.current ? ' (current)' : ''}</li>`,
  );
  const title = `Privacy policy, version ${v.version}`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title><style>${STYLE}</style></head>
<body>
<header><h1>Privacy policy</h1>
<p class="muted">Generated from the data map this installation enforces: every table and column it stores is listed below by category and purpose.</p></header>
<table class="meta">
${controllerRows(v)}
</table>
<h2>What we collect</h2>
<table><thead><tr><th>Category</th><th>What it is</th><th>Personal data</th></tr></thead>
<tbody>
${categories}
</tbody></table>
<h2>Why we process it, on what basis, and for how long</h2>
${processingTable(v, true)}
<h3>Records without personal data</h3>
${processingTable(v, false)}
<h2>Lawful bases</h2>
<ul>${bases.join('\n')}</ul>
<h2>How long we keep it</h2>
<table><tbody>
${retention.join('\n')}
</tbody></table>
<h2>Who receives it</h2>
${p.recipients.length ? `<ul>${p.recipients.map((r) => `<li>${escapeHtml(r)}</li>`).join('')}</ul>` : '<p>No one outside the operator, other than the sub-processors below.</p>'}
<h3>Sub-processors</h3>
${subprocessorRows(p.subprocessors)}
<p class="muted">The list is also at <code>GET /api/subprocessors</code>. A new sub-processor is announced to workspace owners at least 30 days before it starts; owners may object.</p>
<h2>Your rights</h2>
${rights.join('\n')}
<h2>Versions</h2>
<ul>${history.join('\n')}</ul>
</body></html>
`;
}
