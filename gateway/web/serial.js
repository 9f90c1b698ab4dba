// /ui/serial/{domain}: xterm.js on the domain's serial WebSocket (bytes both ways).
import '/ui/assets/xterm-styles.js';
import { Terminal } from '/ui/assets/xterm/lib/xterm.mjs';
import { consoleUrl, pageDomain, setStatus } from '/ui/assets/common.js';

const domain = pageDomain();
const box = document.getElementById('terminal');
const status = document.getElementById('status');
const reconnect = document.getElementById('reconnect');
const encoder = new TextEncoder();

const term = new Terminal({ convertEol: false, cursorBlink: true, scrollback: 5000 });
term.open(box);
let ws = null;

/** Fit the terminal to its box: cell size from what xterm.js drew, then whole cells. */
function fit() {
  const drawn = box.querySelector('.xterm-screen');
  if (!drawn || !term.cols || !term.rows) {
    return;
  }
  const rect = drawn.getBoundingClientRect();
  const cellW = rect.width / term.cols;
  const cellH = rect.height / term.rows;
  if (!cellW || !cellH) {
    return;
  }
  const cols = Math.max(2, Math.floor(box.clientWidth / cellW));
  const rows = Math.max(1, Math.floor(box.clientHeight / cellH));
  if (cols !== term.cols || rows !== term.rows) {
    term.resize(cols, rows);
  }
}

function send(bytes) {
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(bytes);
  }
}

term.onData((s) => send(encoder.encode(s)));
// input xterm.js reports as binary (some mouse reports): one byte per character
term.onBinary((s) => send(Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff)));

function connect() {
  setStatus(status, 'Connecting…', 'busy');
  reconnect.hidden = true;
  ws = new WebSocket(consoleUrl(domain, 'serial'), ['binary']);
  ws.binaryType = 'arraybuffer';
  ws.addEventListener('open', () => {
    setStatus(status, 'Connected', 'ok');
    term.focus();
  });
  ws.addEventListener('message', (e) => {
    term.write(typeof e.data === 'string' ? e.data : new Uint8Array(e.data));
  });
  ws.addEventListener('close', (e) => {
    const why = e.reason ? ': ' + e.reason : e.wasClean ? '' : ' (the gateway refused or closed it)';
    setStatus(status, 'Disconnected' + why, 'error');
    reconnect.hidden = false;
    ws = null;
  });
}

reconnect.addEventListener('click', connect);
window.addEventListener('resize', fit);
window.addEventListener('keydown', (e) => {
  if (e.ctrlKey && e.altKey && e.shiftKey && e.code === 'KeyQ') {
    e.preventDefault();
    e.stopImmediatePropagation();
    term.blur();
    document.querySelector('header a').focus();
  }
}, true);
requestAnimationFrame(fit);
connect();
