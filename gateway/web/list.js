// /ui/: the domains this user may see, their screens, and the actions their role allows.
import { domainPath, post, problemText, setStatus, webSession } from '/ui/assets/common.js';

const REFRESH_MS = 5000;
const ROLES = ['viewer', 'operator', 'admin'];
const ACTIONS = [
  { name: 'start', label: 'Start', when: (s) => s !== 'running' && s !== 'paused' },
  { name: 'shutdown', label: 'Shut down', when: (s) => s === 'running' || s === 'paused' },
  { name: 'reboot', label: 'Reboot', when: (s) => s === 'running' },
  { name: 'destroy', label: 'Destroy', when: (s) => s !== 'shut_off', confirm: true },
];

const tbody = document.getElementById('domains');
const status = document.getElementById('status');
/** name → { row, cells…, thumbUrl } */
const rows = new Map();

function mayOperate(role) {
  return ROLES.indexOf(role) >= ROLES.indexOf('operator');
}

function cell(row, cls) {
  const td = document.createElement('td');
  td.className = cls;
  row.appendChild(td);
  return td;
}

function consoleLink(name, kind, label) {
  const a = document.createElement('a');
  a.href = '/ui/' + kind + '/' + encodeURIComponent(name);
  a.textContent = label;
  a.setAttribute('aria-label', label + ' of ' + name);
  return a;
}

function makeRow(d) {
  const row = document.createElement('tr');
  const r = { row };
  const screen = cell(row, 'screen');
  r.img = document.createElement('img');
  r.img.width = 160;
  r.img.height = 100;
  r.img.alt = 'Screen of ' + d.name;
  r.placeholder = document.createElement('span');
  r.placeholder.className = 'placeholder';
  screen.append(r.img, r.placeholder);
  const name = document.createElement('th');
  name.scope = 'row';
  name.textContent = d.name;
  row.appendChild(name);
  r.state = cell(row, 'state');
  r.role = cell(row, 'role');
  r.consoles = cell(row, 'consoles');
  r.actions = cell(row, 'actions');
  r.buttons = new Map();
  if (mayOperate(d.role)) {
    for (const a of ACTIONS) {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = a.label;
      b.dataset.action = a.name;
      b.setAttribute('aria-label', a.label + ' ' + d.name);
      b.addEventListener('click', () => act(d.name, a));
      r.actions.appendChild(b);
      r.buttons.set(a.name, b);
    }
  } else {
    r.actions.textContent = 'none (viewer)';
  }
  rows.set(d.name, r);
  return r;
}

function update(r, d) {
  r.domain = d;
  r.state.textContent = d.state.replace('_', ' ') + (d.state_reason ? ' (' + d.state_reason + ')' : '');
  r.role.textContent = d.role || '';
  r.consoles.replaceChildren();
  const consoles = d.consoles || [];
  if (mayOperate(d.role) && consoles.includes('vnc')) {
    r.consoles.appendChild(consoleLink(d.name, 'vnc', 'VNC console'));
  }
  if (mayOperate(d.role) && consoles.includes('serial')) {
    r.consoles.appendChild(consoleLink(d.name, 'serial', 'Serial console'));
  }
  if (!r.consoles.firstChild) {
    r.consoles.textContent = '—';
  }
  for (const a of ACTIONS) {
    const b = r.buttons.get(a.name);
    if (b && !b.dataset.busy) {
      b.disabled = !a.when(d.state);
    }
  }
  if (d.state !== 'running') {
    showPlaceholder(r, d.state === 'shut_off' ? 'off' : d.state.replace('_', ' '));
  }
}

function showPlaceholder(r, text) {
  r.img.hidden = true;
  r.placeholder.hidden = false;
  r.placeholder.textContent = text;
}

async function refreshScreen(r) {
  try {
    const resp = await fetch(domainPath(r.domain.name) + '/screenshot', { cache: 'no-store', credentials: 'same-origin' });
    if (!resp.ok) {
      throw new Error(String(resp.status));
    }
    const url = URL.createObjectURL(await resp.blob());
    r.img.onload = () => {
      if (r.thumbUrl) {
        URL.revokeObjectURL(r.thumbUrl);
      }
      r.thumbUrl = url;
    };
    r.img.src = url;
    r.img.hidden = false;
    r.placeholder.hidden = true;
  } catch {
    showPlaceholder(r, 'no screen');
  }
}

async function act(name, a) {
  if (a.confirm && !window.confirm(a.label + ' ' + name + '? The guest is powered off at once, without shutting down.')) {
    return;
  }
  const r = rows.get(name);
  const b = r && r.buttons.get(a.name);
  if (b) {
    b.dataset.busy = '1';
    b.disabled = true;
  }
  setStatus(status, a.label + ' ' + name + '…', 'busy');
  try {
    const resp = await post(domainPath(name) + '/' + a.name);
    if (resp.ok) {
      setStatus(status, a.label + ' ' + name + ': done.', 'ok');
    } else {
      setStatus(status, a.label + ' ' + name + ' failed: ' + await problemText(resp), 'error');
    }
  } catch (e) {
    setStatus(status, a.label + ' ' + name + ' failed: ' + e.message, 'error');
  } finally {
    if (b) {
      delete b.dataset.busy;
    }
    refresh();
  }
}

let listFailed = false;

async function refresh() {
  let list;
  try {
    const resp = await fetch('/v1/domains', { cache: 'no-store', credentials: 'same-origin' });
    if (!resp.ok) {
      setStatus(status, 'Cannot list the domains: ' + await problemText(resp), 'error');
      listFailed = true;
      return;
    }
    list = (await resp.json()).domains;
  } catch (e) {
    setStatus(status, 'Cannot reach the gateway: ' + e.message, 'error');
    listFailed = true;
    return;
  }
  const seen = new Set();
  for (const d of list) {
    seen.add(d.name);
    const r = rows.get(d.name) || makeRow(d);
    if (!r.row.parentNode) {
      tbody.appendChild(r.row);
    }
    update(r, d);
  }
  for (const [name, r] of rows) {
    if (!seen.has(name)) {
      r.row.remove();
      rows.delete(name);
    }
  }
  if (listFailed || status.textContent.startsWith('Loading')) {
    setStatus(status, list.length ? list.length + ' domain(s).' : 'No domain is visible to you.', 'ok');
    listFailed = false;
  }
}

async function refreshScreens() {
  for (const r of rows.values()) {
    if (r.domain && r.domain.state === 'running') {
      await refreshScreen(r);
    }
  }
}

async function who() {
  const el = document.getElementById('who');
  try {
    const resp = await fetch('/v1/whoami', { credentials: 'same-origin' });
    if (!resp.ok) {
      el.textContent = await problemText(resp);
      return;
    }
    const w = await resp.json();
    el.textContent = 'Signed in as ' + w.user + ' (' + w.method + ')';
  } catch (e) {
    el.textContent = e.message;
  }
}

/** End the browser session (its cookie, from a `virtgate web` login). */
async function logout() {
  const s = await webSession();
  const resp = await fetch('/ui/logout', {
    method: 'POST',
    headers: s && s.csrf ? { 'X-Virtgate-CSRF': s.csrf } : {},
    redirect: 'manual',
    credentials: 'same-origin',
  });
  if (resp.type === 'opaqueredirect' || resp.ok) {
    document.querySelector('main').replaceChildren();
    setStatus(document.getElementById('who'), 'Logged out. Run `virtgate web` for a new login link.', 'ok');
    document.getElementById('logout').hidden = true;
    stopped = true;
  } else {
    setStatus(status, 'Log out failed: ' + await problemText(resp), 'error');
  }
}

let stopped = false;

async function loop() {
  if (stopped) {
    return;
  }
  await refresh();
  await refreshScreens();
  setTimeout(loop, REFRESH_MS);
}

document.getElementById('logout').addEventListener('click', logout);
who();
// Log out only where there is something to end: a session cookie (`virtgate web`)
webSession().then((s) => {
  document.getElementById('logout').hidden = !(s && s.session === true);
});
loop();
