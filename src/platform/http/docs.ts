import type { HttpServer } from './server.ts';

type Operation = {
  summary?: string;
  description?: string;
  tags?: string[];
  parameters?: Array<{ name: string; in: string; required?: boolean; schema?: unknown; description?: string }>;
  requestBody?: { content?: Record<string, { schema?: unknown }> };
  responses?: Record<string, { description?: string; content?: Record<string, { schema?: unknown }> }>;
};

const esc = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);

const json = (v: unknown) => `<pre>${esc(JSON.stringify(v, null, 2))}</pre>`;

/** Renders the OpenAPI document as one self-contained HTML page (no scripts, no remote assets). */
export function renderApiReference(doc: Record<string, unknown>): string {
  const info = (doc.info ?? {}) as { title?: string; version?: string; description?: string };
  const paths = (doc.paths ?? {}) as Record<string, Record<string, Operation>>;
  const byTag = new Map<string, string[]>();
  for (const [path, methods] of Object.entries(paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const tag = op.tags?.[0] ?? 'other';
      const params = (op.parameters ?? [])
        .map((p) => `<li><code>${esc(p.name)}</code> (${esc(p.in)}${p.required ? ', required' : ''})</li>`)
        .join('');
      const body = op.requestBody?.content?.['application/json']?.schema;
      const responses = Object.entries(op.responses ?? {})
        .map(([status, r]) => {
          const schema = r.content ? Object.values(r.content)[0]?.schema : undefined;
          return `<details><summary>${esc(status)} ${esc(r.description ?? '')}</summary>${schema ? json(schema) : ''}</details>`;
        })
        .join('');
      const html = `<section class="op"><h3><span class="m ${esc(method)}">${esc(method.toUpperCase())}</span> <code>${esc(path)}</code></h3>
${op.summary ? `<p>${esc(op.summary)}</p>` : ''}${op.description ? `<p>${esc(op.description)}</p>` : ''}
${params ? `<h4>Parameters</h4><ul>${params}</ul>` : ''}
${body ? `<details><summary>Request body</summary>${json(body)}</details>` : ''}
${responses ? `<h4>Responses</h4>${responses}` : ''}</section>`;
      byTag.set(tag, [...(byTag.get(tag) ?? []), html]);
    }
  }
  const tags = [...byTag.keys()].sort();
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(info.title ?? 'API')} reference</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}
code,pre{font:13px ui-monospace,monospace}pre{background:#f4f5f7;padding:.75rem;overflow:auto}
.op{border-top:1px solid #ddd;padding:.5rem 0}.m{display:inline-block;min-width:4.5rem;font-size:12px;padding:2px 6px;border-radius:3px;background:#555;color:#fff}
.get{background:#1f6feb}.post{background:#1a7f37}.patch,.put{background:#9a6700}.delete{background:#cf222e}nav a{margin-right:1rem}</style></head>
<body><h1>${esc(info.title ?? 'API')} <small>${esc(info.version ?? '')}</small></h1><p>${esc(info.description ?? '')}</p>
<p>Machine-readable document: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p>
<nav>${tags.map((t) => `<a href="#${esc(t)}">${esc(t)}</a>`).join('')}</nav>
${tags.map((t) => `<h2 id="${esc(t)}">${esc(t)}</h2>${(byTag.get(t) ?? []).join('\n')}`).join('\n')}
</body></html>`;
}

/** Mounts `/docs`: the API reference page, with a CSP that allows no scripts at all. */
export function registerApiReference(app: HttpServer) {
  let cached: string | null = null;
  app.get('/docs', { schema: { hide: true } }, async (_req, reply) => {
    cached ??= renderApiReference(app.swagger() as unknown as Record<string, unknown>);
    return reply
      .type('text/html; charset=utf-8')
      .header(
        'content-security-policy',
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
      )
      .send(cached);
  });
}
