// The webmail page: a JMAP client over the page's cookie session. No framework: one state
// object, functions that render parts of the page from it, and JMAP calls that refresh it.
// jmap.js speaks the protocol (session, API calls, upload, download URLs, EventSource);
// sanitize.js cleans HTML mail for its sandboxed frame; app.css holds both layouts (three
// panes, or one at a time on a phone, switched by body[data-view]).

import { CORE, Jmap, JmapError, csrfToken } from './jmap.js';
import { sanitize, frameDocument, snippetNodes } from './sanitize.js';

const $ = (sel) => document.querySelector(sel);
const jmap = new Jmap();

const state = {
  mailboxes: [],
  byId: new Map(),
  mailboxId: null,
  query: '',
  sort: 'receivedAt:desc',
  threads: false,
  position: 0,
  pageSize: 50,
  total: 0,
  rows: [], // { email, threadCount, snippet }
  sel: -1,
  open: null, // { id, emails }
  allowImages: false,
  identity: null,
  compose: null, // { draftId, attachments, inReplyTo, references }
};

const ROLE_ORDER = ['inbox', 'drafts', 'sent', 'archive', 'junk', 'trash'];
const EMAIL_LIST_PROPS = ['id', 'threadId', 'mailboxIds', 'keywords', 'from', 'to', 'subject',
  'receivedAt', 'preview', 'hasAttachment', 'size'];
const EMAIL_READ_PROPS = ['id', 'threadId', 'mailboxIds', 'keywords', 'from', 'to', 'cc', 'replyTo',
  'subject', 'sentAt', 'receivedAt', 'messageId', 'inReplyTo', 'references', 'textBody', 'htmlBody',
  'attachments', 'bodyValues'];

// ---- small helpers

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v == null) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  e.append(...children.flat().filter((c) => c != null && c !== false));
  return e;
}

let statusTimer;
function status(text, { error = false } = {}) {
  const s = $('#status');
  s.textContent = text;
  s.classList.toggle('error', error);
  clearTimeout(statusTimer);
  if (text) statusTimer = setTimeout(() => { s.textContent = ''; }, 6000);
}

function fail(e) {
  console.error(e);
  status(`Error: ${e.message || e}`, { error: true });
}

// The store names the inbox INBOX, as IMAP does; people read "Inbox".
const label = (m) => (m.role === 'inbox' ? 'Inbox' : m.name);
const byRole = (role) => state.mailboxes.find((m) => m.role === role);
const hasKw = (email, kw) => Boolean(email.keywords?.[kw]);

function addr(a) {
  if (!a) return '';
  return a.name ? `${a.name} <${a.email}>` : a.email;
}
const addrs = (list) => (list || []).map(addr).join(', ');
const who = (list) => (list || []).map((a) => a.name || a.email).join(', ') || '(nobody)';

const dayFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const yearFmt = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });
function shortDate(iso) {
  const d = new Date(iso);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return timeFmt.format(d);
  return (d.getFullYear() === now.getFullYear() ? dayFmt : yearFmt).format(d);
}

/** "Ann <a@x>, b@y" -> [{name, email}], or throws naming the bad entry. */
function parseAddrs(text) {
  return text.split(/[,;]/).map((s) => s.trim()).filter(Boolean).map((s) => {
    const m = s.match(/^(?:"?([^"<]*?)"?\s*)?<([^<>\s]+@[^<>\s]+)>$/) || s.match(/^()([^<>\s]+@[^<>\s]+)$/);
    if (!m) throw new Error(`not an address: ${s}`);
    return m[1] ? { name: m[1], email: m[2] } : { email: m[2] };
  });
}

function setView(view) {
  document.body.dataset.view = view;
}

// ---- folders

// Pushes, clicks and keys can overlap loads; only the latest answer is rendered.
let mailboxSeq = 0;
let listSeq = 0;

async function loadMailboxes() {
  const seq = ++mailboxSeq;
  const r = await jmap.call([['Mailbox/get', {
    accountId: jmap.accountId, ids: null,
    properties: ['id', 'name', 'parentId', 'role', 'sortOrder', 'totalEmails', 'unreadEmails'],
  }, 'm']]);
  if (seq !== mailboxSeq) return;
  state.mailboxes = r.m.list;
  state.byId = new Map(state.mailboxes.map((m) => [m.id, m]));
  if (!state.byId.has(state.mailboxId) && !state.query) {
    state.mailboxId = (byRole('inbox') || state.mailboxes[0])?.id ?? null;
  }
  renderFolders();
}

function folderRank(m) {
  const i = ROLE_ORDER.indexOf(m.role);
  return i < 0 ? ROLE_ORDER.length : i;
}

function renderFolders() {
  const children = new Map();
  for (const m of state.mailboxes) {
    const p = state.byId.has(m.parentId) ? m.parentId : null;
    if (!children.has(p)) children.set(p, []);
    children.get(p).push(m);
  }
  const sorted = (list) => list.sort((a, b) => folderRank(a) - folderRank(b)
    || (a.sortOrder ?? 0) - (b.sortOrder ?? 0) || label(a).localeCompare(label(b)));
  const branch = (parent) => sorted(children.get(parent) || []).map((m) => {
    const unread = m.unreadEmails || 0;
    const current = !state.query && m.id === state.mailboxId;
    const sub = children.get(m.id);
    return el('li', {},
      el('button', {
        type: 'button', class: 'folder', 'data-id': m.id, 'aria-current': current ? 'page' : false,
        'aria-label': unread ? `${label(m)}, ${unread} unread` : label(m),
        onclick: () => openMailbox(m.id),
      }, el('span', { class: 'name' }, label(m)), unread ? el('span', { class: 'count', 'aria-hidden': 'true' }, String(unread)) : null),
      sub ? el('ul', {}, branch(m.id)) : null);
  });
  // A refresh from push must not steal focus from the folder the user is on.
  const focused = document.activeElement?.closest('#tree button')?.dataset.id;
  $('#tree').replaceChildren(...branch(null));
  if (focused) $(`#tree button[data-id="${CSS.escape(focused)}"]`)?.focus();
  updateTitle();

  // The move menu lists every folder by its full path.
  const path = (m) => (state.byId.has(m.parentId) ? `${path(state.byId.get(m.parentId))} / ` : '') + label(m);
  const options = state.mailboxes.map((m) => [m.id, path(m), m]).sort((a, b) => folderRank(a[2]) - folderRank(b[2]) || a[1].localeCompare(b[1]));
  const key = JSON.stringify(options.map(([id, name]) => [id, name]));
  if ($('#move').dataset.key === key) return; // unchanged: keep an open menu intact
  $('#move').dataset.key = key;
  $('#move').replaceChildren(el('option', { value: '' }, 'Choose folder'),
    ...options.map(([id, name]) => el('option', { value: id }, name)));
}

function openMailbox(id) {
  state.mailboxId = id;
  state.query = '';
  $('#q').value = '';
  state.position = 0;
  state.sel = -1;
  closeMessage();
  renderFolders();
  setView('list');
  loadList().then(() => $('#list').focus()).catch(fail);
}

// ---- message list

function listFilter() {
  if (state.query) return { text: state.query };
  return { inMailbox: state.mailboxId };
}

async function loadList({ keepSelection = false } = {}) {
  const seq = ++listSeq;
  $('#list').setAttribute('aria-busy', 'true');
  const [property, dir] = state.sort.split(':');
  const filter = listFilter();
  const calls = [
    ['Email/query', {
      accountId: jmap.accountId, filter, sort: [{ property, isAscending: dir === 'asc' }],
      collapseThreads: state.threads, position: state.position, limit: state.pageSize, calculateTotal: true,
    }, 'q'],
    ['Email/get', {
      accountId: jmap.accountId, '#ids': { resultOf: 'q', name: 'Email/query', path: '/ids' },
      properties: EMAIL_LIST_PROPS,
    }, 'g'],
  ];
  if (state.threads) {
    calls.push(['Thread/get', {
      accountId: jmap.accountId, '#ids': { resultOf: 'g', name: 'Email/get', path: '/list/*/threadId' },
    }, 't']);
  }
  if (state.query) {
    calls.push(['SearchSnippet/get', {
      accountId: jmap.accountId, filter, '#emailIds': { resultOf: 'q', name: 'Email/query', path: '/ids' },
    }, 's']);
  }
  const r = await jmap.call(calls).catch((e) => {
    if (seq === listSeq) $('#list').setAttribute('aria-busy', 'false');
    throw e;
  });
  if (seq !== listSeq) return;
  const emails = new Map(r.g.list.map((e) => [e.id, e]));
  const threads = new Map((r.t?.list || []).map((t) => [t.id, t.emailIds.length]));
  const snippets = new Map((r.s?.list || []).map((s) => [s.emailId, s]));
  const selectedId = state.rows[state.sel]?.email.id;
  state.total = r.q.total ?? r.q.ids.length;
  state.rows = r.q.ids.filter((id) => emails.has(id)).map((id) => {
    const email = emails.get(id);
    return { email, threadCount: threads.get(email.threadId) || 1, snippet: snippets.get(id) };
  });
  if (keepSelection && selectedId) {
    const i = state.rows.findIndex((row) => row.email.id === selectedId);
    state.sel = i >= 0 ? i : Math.min(state.sel, state.rows.length - 1);
  } else if (state.sel >= state.rows.length) {
    state.sel = state.rows.length - 1;
  }
  renderList();
  $('#list').setAttribute('aria-busy', 'false');
}

function updateTitle() {
  const box = state.query ? null : state.byId.get(state.mailboxId);
  const title = state.query ? `Search: ${state.query}` : (box ? label(box) : 'Mail');
  $('#list-title').textContent = title;
  document.title = box?.unreadEmails ? `${title} (${box.unreadEmails}) - Mail` : `${title} - Mail`;
}

function renderList() {
  updateTitle();
  const showTo = ['sent', 'drafts'].includes(state.byId.get(state.mailboxId)?.role) && !state.query;
  const items = state.rows.map((row, i) => {
    const e = row.email;
    const unread = !hasKw(e, '$seen');
    const flagged = hasKw(e, '$flagged');
    const subject = e.subject || '(no subject)';
    const snippet = row.snippet;
    const names = showTo ? `To: ${who(e.to)}` : who(e.from);
    return el('li', {
      id: `row-${e.id}`, role: 'option', 'data-id': e.id, 'aria-selected': String(i === state.sel),
      class: ['row', unread && 'unread', flagged && 'flagged'].filter(Boolean).join(' '),
      onclick: () => { select(i); openSelected(); },
    },
    el('span', { class: 'from' }, names,
      row.threadCount > 1 ? el('span', { class: 'tcount', 'aria-label': `${row.threadCount} messages` }, ` ${row.threadCount}`) : null),
    el('span', { class: 'date' }, el('time', { datetime: e.receivedAt }, shortDate(e.receivedAt))),
    el('span', { class: 'subject' },
      flagged ? el('span', { class: 'flag', 'aria-label': 'flagged' }, '\u2691 ') : null,
      unread ? el('span', { class: 'visually-hidden' }, 'Unread: ') : null,
      el('span', { class: 'stext' }, snippet?.subject ? snippetNodes(snippet.subject) : subject),
      e.hasAttachment ? el('span', { class: 'clip' }, 'attachment') : null),
    el('span', { class: 'preview' }, snippet?.preview ? snippetNodes(snippet.preview) : (e.preview || '')));
  });
  const list = $('#list');
  list.replaceChildren(...(items.length ? items : [el('li', { class: 'empty' }, state.query ? 'Nothing found.' : 'No messages.')]));
  if (state.sel >= 0 && state.rows[state.sel]) list.setAttribute('aria-activedescendant', `row-${state.rows[state.sel].email.id}`);
  else list.removeAttribute('aria-activedescendant');
  const first = state.rows.length ? state.position + 1 : 0;
  $('#range').textContent = `${first}\u2013${state.position + state.rows.length} of ${state.total}`;
  $('#prev').disabled = state.position === 0;
  $('#next').disabled = state.position + state.rows.length >= state.total;
}

function select(i) {
  if (i < 0 || i >= state.rows.length) return;
  state.sel = i;
  const list = $('#list');
  for (const li of list.querySelectorAll('[role=option]')) li.setAttribute('aria-selected', 'false');
  const li = $(`#row-${CSS.escape(state.rows[i].email.id)}`);
  li.setAttribute('aria-selected', 'true');
  list.setAttribute('aria-activedescendant', li.id);
  li.scrollIntoView({ block: 'nearest' });
}

const wide = () => window.matchMedia('(min-width: 50rem)').matches;

/** j/k: the next or previous row; with a message open on a wide screen, that message opens. */
async function move(delta) {
  if (!state.rows.length) return;
  const before = state.sel;
  select(Math.max(0, Math.min(state.rows.length - 1, (state.sel < 0 ? -1 : state.sel) + delta)));
  if (state.open && wide() && state.sel !== before) await openSelected();
}

async function page(delta) {
  state.position = Math.max(0, state.position + delta * state.pageSize);
  state.sel = -1;
  await loadList();
}

// ---- reading

function closeMessage() {
  state.open = null;
  state.allowImages = false;
  $('#toolbar').hidden = true;
  $('#message').replaceChildren(el('p', { class: 'empty' }, 'No message selected.'),
    el('p', { class: 'empty keys' }, 'Keys: j/k next/previous, Enter open, r reply, c write, # delete, ',
      's flag, u mark unread, / search, Esc back to the list.'));
}

let openSeq = 0;

async function openSelected() {
  const row = state.rows[state.sel];
  if (!row) return;
  // With j/k held down several opens overlap; only the last one renders.
  const seq = ++openSeq;
  state.allowImages = false;
  let ids = [row.email.id];
  if (state.threads && row.threadCount > 1) {
    const t = await jmap.call([['Thread/get', { accountId: jmap.accountId, ids: [row.email.threadId] }, 't']]);
    ids = t.t.list[0]?.emailIds ?? ids;
  }
  const r = await jmap.call([['Email/get', {
    accountId: jmap.accountId, ids, properties: EMAIL_READ_PROPS,
    fetchHTMLBodyValues: true, fetchTextBodyValues: true, maxBodyValueBytes: 1048576,
  }, 'g']]);
  const emails = r.g.list;
  if (seq !== openSeq) return;
  if (!emails.length) { status('That message is gone.'); await loadList(); return; }
  state.open = { id: row.email.id, emails };
  renderMessage();
  setView('message');
  $('#reader').focus({ preventScroll: true });
  const unseen = emails.filter((e) => !hasKw(e, '$seen'));
  if (unseen.length) {
    await setKeyword(unseen.map((e) => e.id), '$seen', true);
    for (const e of unseen) e.keywords = { ...e.keywords, $seen: true };
    row.email.keywords = { ...row.email.keywords, $seen: true };
    $(`#row-${CSS.escape(row.email.id)}`)?.classList.remove('unread');
    await loadMailboxes();
  }
}

/** The emails actions apply to: the open message, or its whole conversation in this folder. */
function actionIds() {
  if (!state.open) return [];
  const inHere = state.open.emails.filter((e) => state.query || e.mailboxIds[state.mailboxId]);
  return (inHere.length ? inHere : state.open.emails).map((e) => e.id);
}

function renderMessage() {
  const { emails } = state.open;
  const main = emails.find((e) => e.id === state.open.id) || emails[emails.length - 1];
  const flagged = emails.some((e) => hasKw(e, '$flagged'));
  $('#toolbar').hidden = false;
  $('#flag').setAttribute('aria-pressed', String(flagged));
  $('#flag').textContent = flagged ? 'Unflag' : 'Flag';
  $('#move').value = '';
  const parts = [el('h2', { id: 'subject', class: 'msubject' }, main.subject || '(no subject)')];
  for (const e of emails) {
    const body = renderBody(e);
    const header = el('header', { class: 'mhead' },
      el('div', {}, el('strong', { class: 'mfrom' }, addrs(e.from) || '(unknown sender)')),
      el('div', { class: 'mmeta' }, 'To: ', addrs(e.to) || '-'),
      e.cc?.length ? el('div', { class: 'mmeta' }, 'Cc: ', addrs(e.cc)) : null,
      el('div', { class: 'mmeta' }, el('time', { datetime: e.sentAt || e.receivedAt }, fullFmt.format(new Date(e.sentAt || e.receivedAt)))),
      hasKw(e, '$draft') ? el('button', { type: 'button', class: 'edit-draft', onclick: () => editDraft(e) }, 'Edit draft') : null);
    const article = el('article', { class: 'mail', 'data-id': e.id, 'aria-label': `From ${who(e.from)}` }, header, body);
    if (emails.length > 1) {
      parts.push(el('details', { open: e.id === main.id || e === emails[emails.length - 1] },
        el('summary', {}, `${who(e.from)} \u2013 ${shortDate(e.receivedAt)}`), article));
    } else {
      parts.push(article);
    }
  }
  $('#message').replaceChildren(...parts);
}

function renderBody(e) {
  const values = e.bodyValues || {};
  const text = (part) => values[part.partId]?.value ?? '';
  const hasHtml = (e.htmlBody || []).some((p) => p.type === 'text/html');
  const usedCids = new Set();
  const out = [];
  if (hasHtml) {
    const cids = new Map((e.attachments || []).filter((a) => a.cid).map((a) => [a.cid.replace(/^<|>$/g, ''), a]));
    const html = e.htmlBody.map((p) => {
      if (p.type === 'text/html') return text(p);
      if (p.type.startsWith('text/')) return `<pre>${escapeHtml(text(p))}</pre>`;
      return '';
    }).join('\n');
    // Inline image parts of the message itself are same-origin downloads, added after cleaning.
    const images = e.htmlBody.filter((p) => p.type.startsWith('image/'))
      .map((p) => `<img src="${escapeHtml(jmap.downloadUrl(p.blobId, p.name, p.type))}" alt="">`).join('');
    const { html: cleaned, blocked } = sanitize(html, {
      allowRemote: state.allowImages,
      cid: (id) => {
        const a = cids.get(id);
        if (!a) return null;
        usedCids.add(a.partId);
        return jmap.downloadUrl(a.blobId, a.name, a.type);
      },
    });
    if (blocked) {
      out.push(el('p', { class: 'notice' }, 'Remote images are blocked to protect your privacy. ',
        el('button', { type: 'button', class: 'show-images', onclick: () => { state.allowImages = true; renderMessage(); } }, 'Show images')));
    }
    const frame = el('iframe', {
      class: 'body-html', title: 'Message body',
      sandbox: 'allow-same-origin allow-popups allow-popups-to-escape-sandbox',
      referrerpolicy: 'no-referrer',
    });
    frame.srcdoc = frameDocument(cleaned + images, { origin: location.origin, allowRemote: state.allowImages });
    // Same-origin but script-less: the page sizes the frame to its content.
    const fit = () => {
      const doc = frame.contentDocument;
      // The root's box, not scrollHeight: that never drops below the frame's own height.
      if (doc?.documentElement) frame.style.height = `${Math.ceil(doc.documentElement.getBoundingClientRect().height) + 4}px`;
    };
    frame.fit = fit;
    frame.addEventListener('load', () => {
      fit();
      for (const img of frame.contentDocument?.images || []) img.addEventListener('load', fit);
    });
    out.push(frame);
  } else {
    const body = (e.textBody || []).filter((p) => p.type.startsWith('text/')).map(text).join('\n\n');
    out.push(el('div', { class: 'body-text' }, linkify(body)));
  }
  const files = (e.attachments || []).filter((a) => !usedCids.has(a.partId));
  if (files.length) {
    out.push(el('ul', { class: 'attachments', 'aria-label': 'Attachments' }, files.map((a) => el('li', {},
      el('a', { href: jmap.downloadUrl(a.blobId, a.name, a.type), download: a.name || 'attachment', class: 'attachment' },
        a.name || a.type), ` (${formatSize(a.size)})`))));
  }
  return el('div', { class: 'mbody' }, out);
}

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function linkify(text) {
  const nodes = [];
  let last = 0;
  for (const m of text.matchAll(/\bhttps?:\/\/[^\s<>"]+[^\s<>".,;:!?)]/g)) {
    nodes.push(text.slice(last, m.index));
    nodes.push(el('a', { href: m[0], target: '_blank', rel: 'noopener noreferrer' }, m[0]));
    last = m.index + m[0].length;
  }
  nodes.push(text.slice(last));
  return nodes;
}

function formatSize(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${Math.round(n / 1024)} KB`;
  return `${(n / 1048576).toFixed(1)} MB`;
}

// ---- actions

async function setKeyword(ids, kw, on) {
  const update = Object.fromEntries(ids.map((id) => [id, { [`keywords/${kw}`]: on ? true : null }]));
  const r = await jmap.call([['Email/set', { accountId: jmap.accountId, update }, 's']]);
  checkSet(r.s);
}

function checkSet(res, what = 'update') {
  const errors = Object.values({ ...res.notCreated, ...res.notUpdated, ...res.notDestroyed });
  if (errors.length) throw new JmapError(errors[0].type, errors[0].description || `could not ${what}`);
}

async function toggleFlag() {
  if (!state.open) return;
  const on = $('#flag').getAttribute('aria-pressed') !== 'true';
  const ids = actionIds();
  await setKeyword(ids, '$flagged', on);
  for (const e of state.open.emails) if (ids.includes(e.id)) e.keywords = { ...e.keywords, $flagged: on || undefined };
  renderMessage();
  status(on ? 'Flagged.' : 'Flag removed.');
  await loadList({ keepSelection: true });
}

async function markUnread() {
  if (!state.open) return;
  await setKeyword(actionIds(), '$seen', false);
  backToList();
  status('Marked unread.');
}

async function moveTo(target) {
  if (!state.open || !target) return;
  const ids = actionIds();
  const update = Object.fromEntries(ids.map((id) => [id, { mailboxIds: { [target]: true } }]));
  const r = await jmap.call([['Email/set', { accountId: jmap.accountId, update }, 's']]);
  checkSet(r.s, 'move');
  status(`Moved to ${state.byId.has(target) ? label(state.byId.get(target)) : 'folder'}.`);
  await afterRemoval();
}

async function deleteOpen() {
  if (!state.open) return;
  const trash = byRole('trash');
  const inTrash = trash && state.open.emails.every((e) => e.mailboxIds[trash.id]);
  if (trash && !inTrash) { await moveTo(trash.id); return; }
  const ids = actionIds();
  if (!confirm(ids.length > 1 ? `Delete ${ids.length} messages for good?` : 'Delete this message for good?')) return;
  const r = await jmap.call([['Email/set', { accountId: jmap.accountId, destroy: ids }, 's']]);
  checkSet(r.s, 'delete');
  status('Deleted.');
  await afterRemoval();
}

/** After a move or delete the next message (or the previous, at the end) opens. */
async function afterRemoval() {
  const sel = state.sel;
  closeMessage();
  await Promise.all([loadMailboxes(), loadList()]);
  if (state.rows.length) {
    select(Math.min(sel, state.rows.length - 1));
    if (wide()) await openSelected();
    else setView('list');
  } else {
    setView('list');
  }
}

function backToList() {
  closeMessage();
  setView('list');
  $('#list').focus();
}

// ---- compose

function openCompose(init = {}) {
  state.compose = { draftId: init.draftId ?? null, attachments: init.attachments ?? [],
    inReplyTo: init.inReplyTo ?? null, references: init.references ?? null };
  $('#compose-title').textContent = init.title || 'New message';
  $('#c-to').value = init.to || '';
  $('#c-cc').value = init.cc || '';
  $('#c-subject').value = init.subject || '';
  $('#c-body').value = init.body || '';
  $('#c-files').value = '';
  $('#c-status').textContent = '';
  renderAttachments();
  $('#composer').showModal();
  (init.to ? $('#c-body') : $('#c-to')).focus();
  $('#c-body').setSelectionRange(0, 0);
}

function reply() {
  const e = state.open?.emails.find((x) => x.id === state.open.id) || state.open?.emails.at(-1);
  if (!e) return;
  const textPart = (e.textBody || []).find((p) => p.type === 'text/plain');
  const quoted = (e.bodyValues?.[textPart?.partId]?.value ?? e.preview ?? '').split('\n').map((l) => `> ${l}`).join('\n');
  const subject = /^re:/i.test(e.subject || '') ? e.subject : `Re: ${e.subject || ''}`;
  openCompose({
    title: 'Reply',
    to: addrs(e.replyTo?.length ? e.replyTo : e.from),
    subject,
    body: `\n\nOn ${fullFmt.format(new Date(e.sentAt || e.receivedAt))}, ${who(e.from)} wrote:\n${quoted}\n`,
    inReplyTo: e.messageId || null,
    references: e.messageId ? [...(e.references || []), ...e.messageId] : null,
  });
}

function editDraft(e) {
  const textPart = (e.textBody || []).find((p) => p.type === 'text/plain');
  openCompose({
    title: 'Edit draft', draftId: e.id, to: addrs(e.to), cc: addrs(e.cc), subject: e.subject || '',
    body: e.bodyValues?.[textPart?.partId]?.value ?? '',
    attachments: (e.attachments || []).map((a) => ({ blobId: a.blobId, type: a.type, name: a.name, size: a.size })),
    inReplyTo: e.inReplyTo, references: e.references,
  });
}

function renderAttachments() {
  $('#c-attachments').replaceChildren(...state.compose.attachments.map((a, i) => el('li', {},
    `${a.name} (${formatSize(a.size)}) `,
    el('button', { type: 'button', 'aria-label': `Remove ${a.name}`, onclick: () => { state.compose.attachments.splice(i, 1); renderAttachments(); } }, 'Remove'))));
}

async function addFiles(files) {
  const max = jmap.session.capabilities?.[CORE]?.maxSizeUpload;
  for (const file of files) {
    if (max && file.size > max) throw new Error(`${file.name} is larger than the server accepts (${formatSize(max)})`);
    $('#c-status').textContent = `Uploading ${file.name}\u2026`;
    const up = await jmap.upload(file);
    state.compose.attachments.push({ blobId: up.blobId, type: up.type || file.type || 'application/octet-stream', name: file.name, size: up.size ?? file.size });
    renderAttachments();
  }
  $('#c-status').textContent = '';
  $('#c-files').value = '';
}

function draftEmail() {
  const drafts = byRole('drafts');
  if (!drafts) throw new Error('there is no Drafts folder');
  const to = parseAddrs($('#c-to').value);
  const cc = parseAddrs($('#c-cc').value);
  const id = state.identity;
  const email = {
    mailboxIds: { [drafts.id]: true },
    keywords: { $draft: true, $seen: true },
    from: [id ? (id.name ? { name: id.name, email: id.email } : { email: id.email }) : { email: jmap.username }],
    to, subject: $('#c-subject').value,
    textBody: [{ partId: 'body', type: 'text/plain' }],
    bodyValues: { body: { value: $('#c-body').value } },
  };
  if (cc.length) email.cc = cc;
  if (state.compose.inReplyTo) email.inReplyTo = state.compose.inReplyTo;
  if (state.compose.references) email.references = state.compose.references;
  if (state.compose.attachments.length) {
    email.attachments = state.compose.attachments.map((a) => ({ blobId: a.blobId, type: a.type, name: a.name, disposition: 'attachment' }));
  }
  return email;
}

/** Stores the draft (replacing the previous copy; emails are immutable in JMAP). */
async function saveDraft() {
  const email = draftEmail();
  const set = { accountId: jmap.accountId, create: { draft: email } };
  if (state.compose.draftId) set.destroy = [state.compose.draftId];
  const r = await jmap.call([['Email/set', set, 's']]);
  checkSet(r.s, 'save the draft');
  state.compose.draftId = r.s.created.draft.id;
  return state.compose.draftId;
}

async function send() {
  const sent = byRole('sent');
  const drafts = byRole('drafts');
  if (!state.identity) throw new Error('no identity to send as');
  const email = draftEmail();
  if (!email.to.length && !email.cc?.length) throw new Error('add at least one recipient');
  $('#c-status').textContent = 'Sending\u2026';
  const set = { accountId: jmap.accountId, create: { draft: email } };
  if (state.compose.draftId) set.destroy = [state.compose.draftId];
  const onSuccess = { 'keywords/$draft': null, [`mailboxIds/${drafts.id}`]: null };
  if (sent) onSuccess[`mailboxIds/${sent.id}`] = true;
  const r = await jmap.call([
    ['Email/set', set, 's'],
    ['EmailSubmission/set', {
      accountId: jmap.accountId,
      create: { send: { identityId: state.identity.id, emailId: '#draft' } },
      onSuccessUpdateEmail: { '#send': onSuccess },
    }, 'sub'],
  ]);
  checkSet(r.s, 'store the message');
  state.compose.draftId = r.s.created.draft.id;
  const err = r.sub.notCreated?.send;
  if (err) throw new JmapError(err.type, `${err.description || 'not sent'} (kept in Drafts)`);
  state.compose = null;
  $('#composer').close();
  status('Message sent.');
}

async function closeCompose({ discard }) {
  if (discard && state.compose?.draftId) {
    const r = await jmap.call([['Email/set', { accountId: jmap.accountId, destroy: [state.compose.draftId] }, 's']]);
    checkSet(r.s, 'discard the draft');
  }
  state.compose = null;
  $('#composer').close();
}

function composeAction(fn, done) {
  return () => fn().then(() => { if (done) status(done); }).catch((e) => {
    console.warn(e); // shown in the composer, where the user can fix it
    $('#c-status').textContent = `Error: ${e.message || e}`;
  });
}

// ---- live updates

let refreshTimer;
function onPush(changed) {
  if (!('Email' in changed) && !('Mailbox' in changed) && !('Thread' in changed)) return;
  // Several changes in a burst (a move touches both folders) become one refresh.
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    Promise.all([loadMailboxes(), loadList({ keepSelection: true })]).catch(fail);
  }, 200);
}

// ---- keyboard

function typing(target) {
  return target.closest('input, textarea, select, [contenteditable], dialog[open]');
}

function onKey(ev) {
  if (ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev.target) || $('#composer').open) return;
  const run = (p) => { ev.preventDefault(); Promise.resolve(p).catch(fail); };
  switch (ev.key) {
    case 'j': case 'ArrowDown':
      if (ev.key === 'ArrowDown' && ev.target !== $('#list')) return;
      run(move(1)); break;
    case 'k': case 'ArrowUp':
      if (ev.key === 'ArrowUp' && ev.target !== $('#list')) return;
      run(move(-1)); break;
    case 'Enter': case 'o':
      if (ev.target.closest('button, a')) return;
      run(openSelected()); break;
    case 'r': run(reply()); break;
    case 'c': run(openCompose()); break;
    case '#': case 'Delete': run(deleteOpen()); break;
    case 's': run(toggleFlag()); break;
    case 'u': run(state.open ? markUnread() : null); break;
    case 'Escape': if (state.open) run(backToList()); break;
    case '/': run($('#q').focus()); break;
    default:
  }
}

// ---- start

async function start() {
  let signedIn;
  try {
    // Without the CSRF cookie there is no session, and asking would draw the browser's own
    // Basic-auth prompt (the JMAP endpoints answer 401 with a Basic challenge).
    signedIn = csrfToken() !== '' && await jmap.connect();
  } catch (e) {
    document.body.replaceChildren(el('p', { class: 'notice error' }, `The mail server cannot be reached: ${e.message}`));
    return;
  }
  if (!signedIn) {
    $('#login').hidden = false;
    const err = new URLSearchParams(location.search).get('error');
    $('#login-error').hidden = err !== 'login';
    if (err) history.replaceState(null, '', '/');
    $('#username').focus();
    return;
  }
  $('#app').hidden = false;
  closeMessage();
  $('#whoami').textContent = jmap.username;

  $('#tree').addEventListener('keydown', (ev) => {
    // Arrow keys walk the folder buttons like a tree.
    if (ev.key !== 'ArrowDown' && ev.key !== 'ArrowUp') return;
    const buttons = [...document.querySelectorAll('#tree button')];
    const i = buttons.indexOf(document.activeElement);
    const next = buttons[i + (ev.key === 'ArrowDown' ? 1 : -1)];
    if (next) { ev.preventDefault(); next.focus(); }
  });
  $('#menu').addEventListener('click', () => setView(document.body.dataset.view === 'folders' ? 'list' : 'folders'));
  $('#search').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.query = $('#q').value.trim();
    state.position = 0;
    state.sel = -1;
    closeMessage();
    renderFolders();
    setView('list');
    loadList().then(() => $('#list').focus()).catch(fail);
  });
  $('#sort').addEventListener('change', () => { state.sort = $('#sort').value; state.position = 0; state.sel = -1; loadList().catch(fail); });
  $('#threads').addEventListener('change', () => { state.threads = $('#threads').checked; state.position = 0; state.sel = -1; loadList().catch(fail); });
  $('#prev').addEventListener('click', () => page(-1).catch(fail));
  $('#next').addEventListener('click', () => page(1).catch(fail));
  $('#list').addEventListener('focus', () => { if (state.sel < 0) select(0); });
  $('#back').addEventListener('click', backToList);
  $('#reply').addEventListener('click', reply);
  $('#flag').addEventListener('click', () => toggleFlag().catch(fail));
  $('#unread').addEventListener('click', () => markUnread().catch(fail));
  $('#move').addEventListener('change', () => moveTo($('#move').value).catch(fail));
  $('#delete').addEventListener('click', () => deleteOpen().catch(fail));
  $('#compose').addEventListener('click', () => openCompose());
  $('#logout').addEventListener('click', async () => {
    await fetch('/logout', { method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': csrfToken() } }).catch(() => {});
    location.replace('/');
  });
  $('#c-files').addEventListener('change', composeAction(() => addFiles([...$('#c-files').files])));
  $('#c-save').addEventListener('click', composeAction(async () => { await saveDraft(); $('#c-status').textContent = 'Draft saved.'; }));
  $('#c-send').addEventListener('click', composeAction(send));
  $('#c-discard').addEventListener('click', composeAction(() => closeCompose({ discard: true }), 'Discarded.'));
  $('#composer').addEventListener('cancel', () => { state.compose = null; });
  document.addEventListener('keydown', onKey);
  // A narrower window makes mail text wrap into more lines: refit the message frames.
  window.addEventListener('resize', () => { for (const f of document.querySelectorAll('iframe.body-html')) f.fit?.(); });

  try {
    const r = await jmap.call([['Identity/get', { accountId: jmap.accountId, ids: null }, 'i']]);
    state.identity = r.i.list[0] ?? null;
  } catch (e) {
    console.warn('no identities', e);
  }
  await loadMailboxes();
  await loadList();
  jmap.listen(onPush);
  document.body.dataset.ready = 'true';
}

start().catch(fail);
