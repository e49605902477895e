import { crc32, deflateRawSync } from 'node:zlib';

/**
 * Document fixtures made in the test, without a library: ZIP archives (and DOCX files in
 * them), small PDFs, and text in legacy encodings.
 */

export type ZipFile = {
  name: string;
  data: string | Uint8Array;
  /** The uncompressed size the archive declares (a zip bomb declares a huge one). Default: the real size. */
  declaredSize?: number;
};

/** A ZIP archive (deflated entries, local headers, central directory, end record). */
export function zip(files: ZipFile[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const file of files) {
    const data = typeof file.data === 'string' ? Buffer.from(file.data, 'utf8') : Buffer.from(file.data);
    const packed = deflateRawSync(data);
    const name = Buffer.from(file.name, 'utf8');
    const crc = crc32(data);
    const size = file.declaredSize ?? data.length;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(8, 8); // deflate
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(packed.length, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(name.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(8, 10);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(packed.length, 20);
    central.writeUInt32LE(size, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, packed);
    centrals.push(central, name);
    offset += local.length + name.length + packed.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(files.length, 8);
  end.writeUInt16LE(files.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, directory, end]);
}

const xmlEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export type DocxParagraph = { text: string; style?: 'Title' | 'Heading1' | 'Heading2' | 'Heading3' };

/** The XML of a DOCX body: paragraphs, each with an optional style. */
export function docxBody(paragraphs: DocxParagraph[], extra = ''): string {
  const ps = paragraphs
    .map(
      (p) =>
        `<w:p>${p.style ? `<w:pPr><w:pStyle w:val="${p.style}"/></w:pPr>` : ''}<w:r><w:t xml:space="preserve">${xmlEscape(p.text)}</w:t></w:r></w:p>`,
    )
    .join('');
  return `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>${ps}${extra}</w:body></w:document>`;
}

const STYLES = `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:styles xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">${[
  ['Title', 'Title'],
  ['Heading1', 'heading 1'],
  ['Heading2', 'heading 2'],
  ['Heading3', 'heading 3'],
]
  .map(([id, name]) => `<w:style w:type="paragraph" w:styleId="${id}"><w:name w:val="${name}"/></w:style>`)
  .join('')}</w:styles>`;

/** A DOCX file whose `word/document.xml` is `documentXml` (by default, `docxBody(paragraphs)`). */
export function docx(
  paragraphs: DocxParagraph[],
  options: { documentXml?: string; declaredSize?: number } = {},
): Buffer {
  return zip([
    {
      name: '[Content_Types].xml',
      data: '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/><Override PartName="/word/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.styles+xml"/></Types>',
    },
    {
      name: '_rels/.rels',
      data: '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>',
    },
    {
      name: 'word/_rels/document.xml.rels',
      data: '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/></Relationships>',
    },
    { name: 'word/styles.xml', data: STYLES },
    {
      name: 'word/document.xml',
      data: options.documentXml ?? docxBody(paragraphs),
      ...(options.declaredSize ? { declaredSize: options.declaredSize } : {}),
    },
  ]);
}

/** A PDF string literal: printable Latin-1 as is, `\`, `(` and `)` escaped. */
const pdfString = (s: string) => `(${s.replace(/[\\()]/g, (c) => `\\${c}`)})`;

/**
 * A PDF with one page per entry, each line of a page shown by its own `Tj` in Helvetica
 * (WinAnsi). `encrypt` adds a standard security handler whose user password is not empty,
 * so a reader must ask for a password.
 */
export function pdf(pages: string[][], options: { title?: string; encrypt?: boolean } = {}): Buffer {
  const objects: string[] = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    `<< /Type /Pages /Kids [${pages.map((_, i) => `${5 + 2 * i} 0 R`).join(' ')}] /Count ${pages.length} >>`,
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>',
    `<< /Title ${pdfString(options.title ?? '')} >>`,
  ];
  for (const [i, lines] of pages.entries()) {
    const body = lines.map((l) => `${pdfString(l)} Tj T*`).join('\n');
    const content = `BT\n/F1 11 Tf\n14 TL\n50 790 Td\n${body}\nET\n`;
    objects.push(
      `<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> /Contents ${6 + 2 * i} 0 R >>`,
      `<< /Length ${Buffer.byteLength(content, 'latin1')} >>\nstream\n${content}endstream`,
    );
  }
  if (options.encrypt) {
    const hex = (n: number) => 'ab'.repeat(n);
    objects.push(`<< /Filter /Standard /V 1 /R 2 /O <${hex(32)}> /U <${hex(32)}> /P -4 >>`);
  }
  let out = '%PDF-1.4\n';
  const offsets: number[] = [];
  objects.forEach((body, i) => {
    offsets.push(out.length);
    out += `${i + 1} 0 obj\n${body}\nendobj\n`;
  });
  const xref = out.length;
  out += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`;
  for (const o of offsets) out += `${String(o).padStart(10, '0')} 00000 n \n`;
  const encrypt = options.encrypt
    ? ` /Encrypt ${objects.length} 0 R /ID [<${'01'.repeat(16)}> <${'01'.repeat(16)}>]`
    : '';
  out += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R /Info 4 0 R${encrypt} >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(out, 'latin1');
}

/**
 * `text` encoded in a legacy encoding that `TextDecoder` knows (shift_jis, gb18030, euc-kr,
 * windows-1252, ...), by inverting the decoder over its one- and two-byte sequences. Throws
 * for a character the encoding lacks.
 */
export function encodeLegacy(label: string, text: string): Buffer {
  const decoder = new TextDecoder(label);
  const table = new Map<string, number[]>();
  for (let a = 0; a < 0x100; a++) {
    const one = decoder.decode(new Uint8Array([a]));
    if (one.length === 1 && one !== '\uFFFD' && !table.has(one)) table.set(one, [a]);
  }
  for (let a = 0x81; a <= 0xfe; a++) {
    for (let b = 0x40; b <= 0xfe; b++) {
      const two = decoder.decode(new Uint8Array([a, b]));
      if ([...two].length === 1 && two !== '\uFFFD' && !table.has(two)) table.set(two, [a, b]);
    }
  }
  const out: number[] = [];
  for (const ch of text) {
    const bytes = table.get(ch);
    if (!bytes) throw new Error(`${label} has no ${ch}`);
    out.push(...bytes);
  }
  return Buffer.from(out);
}
