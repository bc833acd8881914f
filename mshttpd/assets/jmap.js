// A small JMAP client (RFC 8620, RFC 8621) over the page's own cookie session.

export const CORE = 'urn:ietf:params:jmap:core';
export const MAIL = 'urn:ietf:params:jmap:mail';
export const SUBMISSION = 'urn:ietf:params:jmap:submission';

export class JmapError extends Error {
  constructor(type, description) {
    super(description ? `${type}: ${description}` : type);
    this.type = type;
  }
}

/** The CSRF token the server set as a JS-readable cookie; sent on every non-GET request. */
export function csrfToken() {
  for (const part of document.cookie.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === 'msg_csrf') return decodeURIComponent(v.join('='));
  }
  return '';
}

/** The session is gone (expired, or the server restarted): back to the sign-in form. */
export function signedOut() {
  // The CSRF cookie is what tells the page a session may exist; without it the page shows
  // the form instead of asking the server (and drawing its Basic-auth prompt) again.
  document.cookie = 'msg_csrf=; Max-Age=0; Path=/; SameSite=Strict';
  location.replace('/');
}

function expand(template, vars) {
  return template.replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent(vars[k] ?? ''));
}

export class Jmap {
  /** Loads the session resource; false when not signed in. */
  async connect() {
    const r = await fetch('/jmap/session', { credentials: 'same-origin', cache: 'no-store' });
    if (r.status === 401) {
      document.cookie = 'msg_csrf=; Max-Age=0; Path=/; SameSite=Strict';
      return false;
    }
    if (!r.ok) throw new JmapError('session', `HTTP ${r.status}`);
    this.session = await r.json();
    this.accountId = this.session.primaryAccounts[MAIL];
    return true;
  }

  get username() { return this.session.username; }

  /** Runs one request of method calls; returns the responses as [name, args, callId]. */
  async request(methodCalls) {
    const r = await fetch(this.session.apiUrl, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrfToken() },
      body: JSON.stringify({ using: [CORE, MAIL, SUBMISSION], methodCalls }),
    });
    if (r.status === 401) { signedOut(); throw new JmapError('unauthorized'); }
    const body = await r.json().catch(() => null);
    if (!r.ok || !body) throw new JmapError(body?.type ?? 'http', body?.detail ?? `HTTP ${r.status}`);
    return body.methodResponses;
  }

  /** Like request, but throws on the first method-level error; returns args by call id. */
  async call(methodCalls) {
    const out = {};
    for (const [name, args, id] of await this.request(methodCalls)) {
      if (name === 'error') throw new JmapError(args.type, args.description);
      out[id] = args;
    }
    return out;
  }

  async upload(file) {
    const url = expand(this.session.uploadUrl, { accountId: this.accountId });
    const r = await fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': file.type || 'application/octet-stream', 'X-CSRF-Token': csrfToken() },
      body: file,
    });
    const body = await r.json().catch(() => null);
    if (!r.ok || !body) throw new JmapError(body?.type ?? 'upload', body?.detail ?? `HTTP ${r.status}`);
    return body;
  }

  downloadUrl(blobId, name, type) {
    return expand(this.session.downloadUrl, {
      accountId: this.accountId, blobId, name: name || 'attachment', type: type || 'application/octet-stream',
    });
  }

  /** Push: calls onChange(changedTypes) for every StateChange of this account. */
  listen(onChange) {
    const url = expand(this.session.eventSourceUrl, { types: '*', closeafter: 'no', ping: '30' });
    const es = new EventSource(url, { withCredentials: true });
    es.addEventListener('state', (ev) => {
      try {
        const changed = JSON.parse(ev.data).changed?.[this.accountId];
        if (changed) onChange(changed);
      } catch { /* a malformed event is ignored; the next one carries the full state */ }
    });
    return es;
  }
}
