// Markup from tagged templates. Every value interpolated into html`…` is escaped, unless it
// is markup already: the result of another html`…`, or raw() for the few constant strings
// this code writes itself. Data (anything from Core) is never passed to raw(). Arrays are
// joined, and null, undefined and false render as nothing, so `${cond && html`…`}` and
// `${list.map(...)}` read naturally.

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' };

export class Html {
  constructor(text) {
    this.text = text;
  }

  toString() {
    return this.text;
  }
}

function piece(value) {
  if (value instanceof Html) return value.text;
  if (Array.isArray(value)) return value.map(piece).join('');
  if (value === null || value === undefined || value === false) return '';
  return String(value).replace(/[&<>"'`]/g, (c) => ESCAPES[c]);
}

export function html(strings, ...values) {
  let out = strings[0];
  values.forEach((value, i) => {
    out += piece(value) + strings[i + 1];
  });
  return new Html(out);
}

// Trusted markup: constant strings of this code only, never data.
export function raw(text) {
  return new Html(String(text));
}

// The one way markup goes into the page: only html`…` is accepted, so a plain string (which
// could carry data) cannot become markup by mistake.
export function put(element, markup) {
  if (!(markup instanceof Html)) throw new TypeError('put() takes html`…` markup');
  element.innerHTML = markup.text;
}

// The first element of some markup, e.g. one table row.
export function element(markup, selector) {
  const template = document.createElement('template');
  put(template, markup);
  return template.content.querySelector(selector);
}
