// xterm.js writes its cell sizes and colours into <style> elements it creates at run time,
// which the page's Content-Security-Policy (style-src 'self') refuses. Give such elements
// a constructable stylesheet (CSSOM, which the policy allows) and route their text there.
// Import this module before xterm.js.

const createElement = Document.prototype.createElement;

Document.prototype.createElement = function (tag, options) {
  const el = createElement.call(this, tag, options);
  if (String(tag).toLowerCase() !== 'style') {
    return el;
  }
  const doc = this;
  const sheet = new CSSStyleSheet();
  let text = '';
  doc.adoptedStyleSheets = [...doc.adoptedStyleSheets, sheet];
  Object.defineProperty(el, 'textContent', {
    get: () => text,
    set: (v) => {
      text = String(v);
      sheet.replaceSync(text);
    },
  });
  const remove = el.remove.bind(el);
  el.remove = () => {
    doc.adoptedStyleSheets = doc.adoptedStyleSheets.filter((s) => s !== sheet);
    remove();
  };
  return el;
};
