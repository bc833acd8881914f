// HTML mail sanitiser: an allow-list over DOMParser's tree. The result is shown in a sandboxed
// iframe (no scripts) whose CSP forbids everything but inline styles and allowed images, so a
// miss here still cannot run code or fetch a tracking pixel.

// Dropped with their content; any other element not in KEEP is replaced by its content
// (so a <form>'s text stays while its controls go).
const DROP = new Set(['script', 'iframe', 'frame', 'frameset', 'object', 'embed', 'applet',
  'input', 'button', 'select', 'option', 'textarea', 'link', 'meta', 'base', 'title', 'template',
  'noscript', 'svg', 'math', 'audio', 'video', 'source', 'track', 'canvas', 'portal', 'dialog']);

const KEEP = new Set(['a', 'abbr', 'address', 'b', 'bdi', 'bdo', 'big', 'blockquote', 'br', 'caption',
  'center', 'cite', 'code', 'col', 'colgroup', 'dd', 'del', 'details', 'dfn', 'div', 'dl', 'dt', 'em',
  'figcaption', 'figure', 'font', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'hr', 'i', 'img', 'ins', 'kbd',
  'li', 'mark', 'ol', 'p', 'pre', 'q', 's', 'samp', 'small', 'span', 'strike', 'strong', 'style', 'sub',
  'summary', 'sup', 'table', 'tbody', 'td', 'tfoot', 'th', 'thead', 'tr', 'tt', 'u', 'ul', 'var', 'wbr']);

const ATTRS = new Set(['href', 'src', 'alt', 'title', 'width', 'height', 'align', 'valign', 'colspan',
  'rowspan', 'border', 'cellpadding', 'cellspacing', 'bgcolor', 'color', 'face', 'size', 'style',
  'dir', 'lang', 'start', 'type', 'class', 'id', 'name', 'open', 'span']);

const REMOTE = /url\s*\(|@import|image-set\s*\(/i;

/**
 * Sanitises an HTML body. `cid(id)` maps a Content-ID to a same-origin URL (or null);
 * remote images stay blocked unless `allowRemote`. Returns { html, blocked }.
 */
export function sanitize(source, { cid = () => null, allowRemote = false } = {}) {
  const doc = new DOMParser().parseFromString(source, 'text/html');
  let blocked = 0;

  const clean = (node) => {
    for (const child of [...node.childNodes]) {
      if (child.nodeType === Node.COMMENT_NODE) { child.remove(); continue; }
      if (child.nodeType !== Node.ELEMENT_NODE) continue;
      const tag = child.localName;
      if (DROP.has(tag) || child.namespaceURI !== 'http://www.w3.org/1999/xhtml') { child.remove(); continue; }
      if (!KEEP.has(tag)) { clean(child); child.replaceWith(...child.childNodes); continue; }
      if (tag === 'style') {
        if (REMOTE.test(child.textContent) && !allowRemote) { blocked++; child.remove(); }
        continue;
      }
      for (const attr of [...child.attributes]) {
        const name = attr.name.toLowerCase();
        const value = attr.value.trim();
        if (!ATTRS.has(name)) { child.removeAttribute(attr.name); continue; }
        if (name === 'style' && REMOTE.test(value) && !allowRemote) { blocked++; child.removeAttribute(attr.name); }
        if (name === 'href' && !/^(https?:|mailto:|#)/i.test(value)) child.removeAttribute(attr.name);
        if (name === 'src') {
          if (/^cid:/i.test(value)) {
            const url = cid(decodeURIComponent(value.slice(4)));
            if (url) child.setAttribute('src', url); else child.removeAttribute('src');
          } else if (/^https?:/i.test(value)) {
            if (!allowRemote) { blocked++; child.removeAttribute('src'); child.setAttribute('data-blocked', ''); }
          } else if (!/^data:image\/(png|gif|jpeg|webp);/i.test(value)) {
            child.removeAttribute('src');
          }
        }
      }
      if (tag === 'a' && child.hasAttribute('href')) {
        child.setAttribute('target', '_blank');
        child.setAttribute('rel', 'noopener noreferrer');
      }
      clean(child);
    }
  };
  // Styles in <head> apply to the message too; everything else in <head> goes.
  const styles = [...doc.head.querySelectorAll('style')];
  doc.body.prepend(...styles);
  clean(doc.body);
  return { html: doc.body.innerHTML, blocked };
}

/** The iframe document: the sanitised body under a CSP that blocks scripts and remote loads. */
export function frameDocument(html, { origin, allowRemote }) {
  const img = `data: ${origin}` + (allowRemote ? ' https: http:' : '');
  return `<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src ${img}; style-src 'unsafe-inline'; font-src data:">
<style>body{margin:0;font:15px/1.5 system-ui,sans-serif;overflow-wrap:anywhere;color:#1b1b1b}img{max-width:100%;height:auto}pre{white-space:pre-wrap}</style>
</head><body>${html}</body></html>`;
}

/** Search snippets carry <mark> around hits; everything else in them is text. */
export function snippetNodes(snippet) {
  const doc = new DOMParser().parseFromString(snippet, 'text/html');
  return [...doc.body.childNodes].map((n) => {
    if (n.nodeType === Node.ELEMENT_NODE && n.localName === 'mark') {
      const m = document.createElement('mark');
      m.textContent = n.textContent;
      return m;
    }
    return document.createTextNode(n.textContent);
  });
}
