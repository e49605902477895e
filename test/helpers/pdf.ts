import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export type PdfCheck = {
  /** What is wrong with the file's structure (empty when a reader can open it). */
  problems: string[];
  pages: number;
  /** The text of every `(...) Tj` operator, one per line, unescaped. */
  text: string;
};

/**
 * Checks a PDF the way a reader opens it, without a PDF library: the header, `startxref`
 * pointing at the cross-reference table, every table entry 20 bytes and pointing at its
 * object, the trailer naming the table's size and the catalog, and each stream's /Length
 * matching its bytes. Also reads the text shown by `Tj`.
 */
export function checkPdf(pdf: Buffer): PdfCheck {
  const s = pdf.toString('latin1');
  const problems: string[] = [];
  if (!s.startsWith('%PDF-1.')) problems.push('no %PDF-1.x header');
  if (!/%%EOF\s*$/.test(s)) problems.push('no %%EOF at the end');
  const startxref = Number(/startxref\s+(\d+)\s+%%EOF\s*$/.exec(s)?.[1] ?? Number.NaN);
  if (!Number.isInteger(startxref) || s.slice(startxref, startxref + 4) !== 'xref') {
    problems.push('startxref does not point at the xref table');
    return { problems, pages: 0, text: '' };
  }
  const head = /^xref\n0 (\d+)\n/.exec(s.slice(startxref));
  const size = Number(head?.[1] ?? 0);
  if (!head || size < 2) problems.push('the xref table has no subsection 0');
  const table = startxref + (head?.[0].length ?? 0);
  for (let i = 0; i < size; i++) {
    const entry = s.slice(table + 20 * i, table + 20 * (i + 1));
    const m = /^(\d{10}) (\d{5}) ([nf])(?: \n|\r\n| \r)$/.exec(entry);
    if (!m) {
      problems.push(`xref entry ${i} is not 20 bytes of "oooooooooo ggggg n EOL": ${JSON.stringify(entry)}`);
      continue;
    }
    if (i === 0) continue;
    const offset = Number(m[1]);
    if (m[3] !== 'n' || !s.startsWith(`${i} 0 obj`, offset)) problems.push(`object ${i} is not at offset ${offset}`);
  }
  const trailer = s.slice(table + 20 * size);
  if (!trailer.startsWith('trailer')) problems.push('no trailer after the xref table');
  if (!new RegExp(`/Size ${size}\\b`).test(trailer)) problems.push('the trailer /Size differs from the table');
  if (!/\/Root 1 0 R/.test(trailer) || !/1 0 obj\n<< \/Type \/Catalog/.test(s)) problems.push('no catalog as /Root');
  for (const m of s.matchAll(/\/Length (\d+) >>\nstream\n/g)) {
    const start = (m.index ?? 0) + m[0].length;
    if (!s.startsWith('endstream', start + Number(m[1]))) problems.push(`a stream's /Length ${m[1]} is wrong`);
  }
  const pages = [...s.matchAll(/\/Type \/Page\b(?!s)/g)].length;
  const count = Number(/\/Type \/Pages \/Kids \[[^\]]*\] \/Count (\d+)/.exec(s)?.[1] ?? -1);
  if (count !== pages) problems.push(`/Count ${count} but ${pages} page objects`);
  const text = [...s.matchAll(/\(((?:\\.|[^\\)])*)\) Tj/g)].map((m) => (m[1] ?? '').replace(/\\(.)/g, '$1')).join('\n');
  return { problems, pages, text };
}

/**
 * What poppler's `pdftotext` reads from the PDF (its text, and what it complained about on
 * stderr), or null when poppler-utils is not installed.
 */
export function pdfToText(pdf: Buffer): { text: string; complaints: string } | null {
  const dir = mkdtempSync(path.join(tmpdir(), 'berth-pdf-'));
  try {
    const file = path.join(dir, 'doc.pdf');
    writeFileSync(file, pdf);
    const r = spawnSync('pdftotext', ['-layout', file, '-'], { encoding: 'utf8' });
    if ((r.error as { code?: string } | undefined)?.code === 'ENOENT') return null;
    if (r.status !== 0) return { text: '', complaints: `exit ${r.status}: ${r.stderr}` };
    return { text: r.stdout, complaints: r.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
