// xterm.js writes its cell sizes and colours into <style> elements it creates at run time,
// and true colours into `style` attributes; the page's Content-Security-Policy (style-src
// 'self') refuses both. Route them through the CSSOM instead, which the policy allows: a
// constructable stylesheet per <style> element asked for (a <template> stands in for it),
// `style.cssText` for the attribute.
// Import this module before xterm.js (only the serial console page does).

const createElement = Document.prototype.createElement;

Document.prototype.createElement = function (tag, options) {
  if (String(tag).toLowerCase() !== 'style') {
    return createElement.call(this, tag, options);
  }
  // an inert stand-in: even an empty <style> in the page is reported as a violation
  const el = createElement.call(this, 'template');
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

const setAttribute = Element.prototype.setAttribute;

Element.prototype.setAttribute = function (name, value) {
  if (String(name).toLowerCase() === 'style' && this.style) {
    this.style.cssText = String(value);
    return;
  }
  setAttribute.call(this, name, value);
};
