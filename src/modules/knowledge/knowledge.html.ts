/**
 * HTML (and DOCX, which is converted to HTML first) to indexable text.
 *
 * Guarantees: no text from scripts, styles, templates, SVG, forms, hidden elements or page
 * furniture (`nav`, `aside`, page-level `header`/`footer`, ARIA navigation/banner/contentinfo
 * roles); when the page marks its `main` content only that is kept. Headings become Markdown
 * heading lines and are returned as sections with their exact offsets in the text; `pre`
 * blocks become fenced code with their whitespace intact; lists and table rows stay one line
 * per item or row. The text is already clean (`cleanCharacters`, one space between words).
 */
import { Parser } from 'htmlparser2';
import { cleanCharacters, type Heading } from './knowledge.text.ts';

type Block =
  | { type: 'heading'; level: number; text: string; main: boolean }
  | { type: 'para'; text: string; tight: boolean; main: boolean }
  | { type: 'code'; text: string; lang: string; main: boolean };

const SKIP = new Set([
  'script',
  'style',
  'noscript',
  'template',
  'svg',
  'math',
  'iframe',
  'object',
  'embed',
  'canvas',
  'nav',
  'aside',
  'form',
  'button',
  'select',
  'dialog',
]);
const SKIP_ROLES = new Set(['navigation', 'banner', 'contentinfo', 'complementary', 'search']);
const BLOCK = new Set([
  'p',
  'div',
  'section',
  'article',
  'main',
  'blockquote',
  'ul',
  'ol',
  'dl',
  'dt',
  'dd',
  'table',
  'thead',
  'tbody',
  'tfoot',
  'caption',
  'figure',
  'figcaption',
  'address',
  'details',
  'summary',
  'hr',
  'body',
  'html',
  'header',
  'footer',
  'fieldset',
  'center',
]);
const HEADING = /^h([1-6])$/;

/** The blocks of an HTML document and its `<title>`. */
function extractBlocks(html: string): { blocks: Block[]; title: string } {
  const blocks: Block[] = [];
  let title = '';
  let inTitle = false;
  let depth = 0;
  let skipUntil = -1; // depth at which the skipped element opened
  let mainDepth = -1;
  let articleDepth = -1;
  let preDepth = -1;
  let preLang = '';
  let heading = 0;
  let buffer = '';
  let itemPrefix = '';
  let tight = false;
  // Inside a heading or a table cell, block elements do not break the line.
  let inlineDepth = -1;
  const lists: { ordered: boolean; n: number }[] = [];
  let cellsInRow = 0;

  const inMain = () => mainDepth >= 0;
  const flush = () => {
    const text = buffer
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '')
      .join('\n');
    buffer = '';
    // An item's marker waits for its text (`<li><p>text</p></li>` flushes before the text).
    if (!text) return;
    if (heading) blocks.push({ type: 'heading', level: heading, text: text.replace(/\n/g, ' '), main: inMain() });
    else blocks.push({ type: 'para', text: itemPrefix + text, tight, main: inMain() });
    itemPrefix = '';
    tight = false;
  };

  const parser = new Parser(
    {
      onopentag(name, attribs) {
        depth++;
        if (skipUntil >= 0) return;
        if (name === 'title' && !title) {
          inTitle = true;
          return;
        }
        const role = (attribs.role ?? '').toLowerCase();
        const pageFurniture = (name === 'header' || name === 'footer') && articleDepth < 0 && mainDepth < 0;
        if (
          SKIP.has(name) ||
          SKIP_ROLES.has(role) ||
          pageFurniture ||
          'hidden' in attribs ||
          attribs['aria-hidden'] === 'true'
        ) {
          skipUntil = depth;
          return;
        }
        if (preDepth >= 0) {
          if (name === 'br') buffer += '\n';
          if (name === 'code' && !preLang) preLang = languageOf(attribs.class);
          return;
        }
        if (inlineDepth >= 0) {
          if (name === 'br' || BLOCK.has(name)) buffer += ' ';
          return;
        }
        if ((name === 'main' || role === 'main') && mainDepth < 0) {
          flush();
          mainDepth = depth;
        }
        if (name === 'article' && articleDepth < 0) articleDepth = depth;
        const h = HEADING.exec(name);
        if (h) {
          flush();
          heading = Number(h[1]);
          inlineDepth = depth;
        } else if (name === 'pre') {
          flush();
          preDepth = depth;
          preLang = languageOf(attribs.class);
        } else if (name === 'li') {
          flush();
          const list = lists.at(-1);
          const indent = '  '.repeat(Math.max(0, lists.length - 1));
          if (list) list.n++;
          itemPrefix = `${indent}${list?.ordered ? `${list.n}.` : '-'} `;
          tight = true;
        } else if (name === 'ul' || name === 'ol') {
          flush();
          lists.push({ ordered: name === 'ol', n: 0 });
        } else if (name === 'tr') {
          flush();
          cellsInRow = 0;
          tight = true;
        } else if (name === 'td' || name === 'th') {
          if (cellsInRow++ > 0) buffer += ' | ';
          inlineDepth = depth;
        } else if (name === 'br') {
          buffer += '\n';
        } else if (BLOCK.has(name)) {
          flush();
        }
      },
      ontext(data) {
        if (inTitle) {
          title += data;
          return;
        }
        if (skipUntil >= 0) return;
        buffer += preDepth >= 0 ? data : data.replace(/\s+/g, ' ');
      },
      onclosetag(name) {
        if (inTitle && name === 'title') {
          inTitle = false;
          depth--;
          return;
        }
        if (skipUntil >= 0) {
          if (depth === skipUntil) skipUntil = -1;
          depth--;
          return;
        }
        if (depth === preDepth) {
          const code = buffer.replace(/^\n/, '').replace(/\s+$/, '');
          if (code.trim()) blocks.push({ type: 'code', text: code, lang: preLang, main: inMain() });
          buffer = '';
          preDepth = -1;
        } else if (depth === inlineDepth) {
          inlineDepth = -1;
          if (heading) {
            flush();
            heading = 0;
          }
        } else if (preDepth < 0 && inlineDepth < 0) {
          if (name === 'ul' || name === 'ol') {
            flush();
            lists.pop();
            itemPrefix = '';
          } else if (name === 'li' || name === 'tr' || BLOCK.has(name)) {
            flush();
            itemPrefix = '';
            // Text after a nested list, still inside the outer item, stays in the list.
            if (name === 'li' || name === 'tr') tight = true;
          }
        }
        if (depth === mainDepth) {
          flush();
          mainDepth = -1;
        }
        if (depth === articleDepth) articleDepth = -1;
        depth--;
      },
    },
    { decodeEntities: true, lowerCaseTags: true, lowerCaseAttributeNames: true },
  );
  parser.write(html);
  parser.end();
  flush();
  const hasMain = blocks.some((b) => b.main);
  return { blocks: hasMain ? blocks.filter((b) => b.main) : blocks, title: title.replace(/\s+/g, ' ').trim() };
}

function languageOf(className: string | undefined): string {
  const m = /(?:^|\s)(?:language|lang)-([\w+#.-]+)/.exec(className ?? '');
  return m?.[1] ?? '';
}

/** A fence longer than any run of backticks inside the code, so the code cannot close it. */
function fenceFor(code: string): string {
  let longest = 0;
  for (const m of code.matchAll(/`+/g)) longest = Math.max(longest, m[0].length);
  return '`'.repeat(Math.max(3, longest + 1));
}

/** Joins blocks into text: blank lines between blocks, one newline inside lists and tables. */
function renderBlocks(blocks: Block[]): { text: string; sections: Heading[] } {
  const parts: string[] = [];
  const sections: Heading[] = [];
  let length = 0;
  let previousTight = false;
  for (const block of blocks) {
    // Items of one list or rows of one table are one line each; anything else is a paragraph.
    const tight = block.type === 'para' && block.tight;
    const sep = parts.length === 0 ? '' : tight && previousTight ? '\n' : '\n\n';
    let text: string;
    if (block.type === 'heading') {
      const title = cleanCharacters(block.text).trim();
      if (!title) continue;
      sections.push({ level: block.level, title, start: length + sep.length });
      text = `${'#'.repeat(block.level)} ${title}`;
    } else if (block.type === 'code') {
      const code = cleanCharacters(block.text);
      const fence = fenceFor(code);
      text = `${fence}${block.lang}\n${code}\n${fence}`;
    } else {
      text = cleanCharacters(block.text)
        .replace(/\u00A0/g, ' ')
        .trimEnd();
      if (!text.trim()) continue;
    }
    parts.push(sep, text);
    length += sep.length + text.length;
    previousTight = tight;
  }
  return { text: parts.join(''), sections };
}

/**
 * The readable text of an HTML document, its headings as sections and its `<title>`.
 *
 * @example htmlToText('<h1>Setup</h1><p>Run it.</p>') // { text: '# Setup\n\nRun it.', sections: [{ level: 1, title: 'Setup', start: 0 }], title: '' }
 */
export function htmlToText(html: string): { text: string; sections: Heading[]; title: string } {
  const { blocks, title } = extractBlocks(html);
  return { ...renderBlocks(blocks), title: cleanCharacters(title).trim() };
}
