// Shared by the pages: the API's paths, its problem+json errors, the CSRF token.

/** The API path of a domain (names are percent-encoded). */
export function domainPath(name) {
  return '/v1/domains/' + encodeURIComponent(name);
}

/** The WebSocket URL of a domain's console (`vnc` or `serial`) on this gateway (`ws:` only
 * where `virtgate web` serves the pages on http://127.0.0.1 through an SSH connection). */
export function consoleUrl(name, kind) {
  const scheme = location.protocol === 'http:' ? 'ws://' : 'wss://';
  return scheme + location.host + domainPath(name) + '/' + kind;
}

/** The domain a console page is about (written by the gateway into `data-domain`). */
export function pageDomain() {
  return document.body.dataset.domain;
}

/** A failed answer in words: the problem's title, detail and hint when there is one. */
export async function problemText(resp) {
  try {
    const p = await resp.json();
    return [p.title, p.detail, p.hint && 'Hint: ' + p.hint].filter(Boolean).join('. ');
  } catch {
    return 'HTTP ' + resp.status + ' ' + resp.statusText;
  }
}

let session;

/**
 * The browser session (`GET /v1/web/session`: `{user, csrf}`), fetched once. Null when the
 * gateway has none to give (then requests go without a CSRF header and the API says why
 * when it refuses them).
 */
export async function webSession() {
  if (session === undefined) {
    try {
      const r = await fetch('/v1/web/session', { credentials: 'same-origin' });
      session = r.ok ? await r.json() : null;
    } catch {
      session = null;
    }
  }
  return session;
}

/** POST to the API with the CSRF header when there is a token; resolves to the Response. */
export async function post(path, body) {
  const headers = { 'Content-Type': 'application/json' };
  const s = await webSession();
  if (s && s.csrf) {
    headers['X-Virtgate-CSRF'] = s.csrf;
  }
  return fetch(path, {
    method: 'POST',
    headers,
    body: body === undefined ? '' : JSON.stringify(body),
    credentials: 'same-origin',
  });
}

/** Show `text` in a status element; `kind` is 'ok', 'busy' or 'error' (for the styles). */
export function setStatus(el, text, kind) {
  el.textContent = text;
  el.dataset.kind = kind || 'ok';
}
