// /ui/vnc/{domain}: noVNC's RFB on the domain's VNC WebSocket, with a small toolbar.
import RFB from '/ui/assets/novnc/core/rfb.js';
import keysyms from '/ui/assets/novnc/core/input/keysymdef.js';
import { consoleUrl, pageDomain, setStatus } from '/ui/assets/common.js';

const XK_RETURN = 0xff0d;
const XK_TAB = 0xff09;

const domain = pageDomain();
const screen = document.getElementById('screen');
const status = document.getElementById('status');
const scale = document.getElementById('scale');
const resize = document.getElementById('resize');
const reconnect = document.getElementById('reconnect');
const pasteBox = document.querySelector('details');
const pasteText = document.getElementById('paste-text');
let rfb = null;

function connect() {
  setStatus(status, 'Connecting…', 'busy');
  reconnect.hidden = true;
  rfb = new RFB(screen, consoleUrl(domain, 'vnc'), { wsProtocols: ['binary'], shared: true });
  rfb.scaleViewport = scale.checked;
  rfb.resizeSession = resize.checked;
  rfb.focusOnClick = true;
  rfb.addEventListener('connect', () => {
    setStatus(status, 'Connected', 'ok');
    rfb.focus();
  });
  rfb.addEventListener('disconnect', (e) => {
    setStatus(status, e.detail.clean ? 'Disconnected' : 'Connection lost (the gateway refused or closed it)', 'error');
    reconnect.hidden = false;
    rfb = null;
  });
  rfb.addEventListener('securityfailure', (e) => {
    setStatus(status, 'The VNC server refused: ' + (e.detail.reason || 'security failure'), 'error');
  });
  rfb.addEventListener('credentialsrequired', () => {
    setStatus(status, 'The VNC server asks for a password, which the gateway does not pass on', 'error');
  });
  rfb.addEventListener('desktopname', (e) => {
    document.title = domain + ' (' + e.detail.name + ') · VNC console · virtgate';
  });
}

function ctrlAltDel() {
  if (rfb) {
    rfb.sendCtrlAltDel();
    rfb.focus();
  }
}

function toggleFullscreen() {
  if (document.fullscreenElement) {
    document.exitFullscreen();
  } else {
    screen.requestFullscreen().then(() => rfb && rfb.focus(), () => {});
  }
}

function setScale(on) {
  scale.checked = on;
  if (rfb) {
    rfb.scaleViewport = on;
  }
}

/** Type `text` into the guest, one key press per character (US keysyms). */
function typeText(text) {
  if (!rfb) {
    return;
  }
  for (const ch of text.replace(/\r\n?/g, '\n')) {
    let sym;
    if (ch === '\n') {
      sym = XK_RETURN;
    } else if (ch === '\t') {
      sym = XK_TAB;
    } else {
      sym = keysyms.lookup(ch.codePointAt(0));
    }
    rfb.sendKey(sym);
  }
  rfb.focus();
}

document.getElementById('cad').addEventListener('click', ctrlAltDel);
document.getElementById('fullscreen').addEventListener('click', toggleFullscreen);
document.getElementById('paste').addEventListener('click', () => typeText(pasteText.value));
reconnect.addEventListener('click', connect);
scale.addEventListener('change', () => setScale(scale.checked));
resize.addEventListener('change', () => {
  if (rfb) {
    rfb.resizeSession = resize.checked;
  }
});

// The page's shortcuts, before noVNC sends the keys to the guest (capture phase).
window.addEventListener('keydown', (e) => {
  if (!(e.ctrlKey && e.altKey && e.shiftKey)) {
    return;
  }
  const act = {
    Delete: ctrlAltDel,
    KeyF: toggleFullscreen,
    KeyS: () => setScale(!scale.checked),
    KeyV: () => {
      pasteBox.open = true;
      pasteText.focus();
    },
    KeyQ: () => {
      if (rfb) {
        rfb.blur();
      }
      document.getElementById('cad').focus();
    },
  }[e.code];
  if (act) {
    e.preventDefault();
    e.stopImmediatePropagation();
    act();
  }
}, true);

connect();
