// Building the page: every text goes in as text (textContent), never as markup, so nothing a
// model, a tool or a client wrote can become HTML or script here.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === 'text') el.textContent = String(value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) if (child) el.append(child);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function time(ms) {
  if (!ms) return '-';
  const d = new Date(ms);
  const today = new Date();
  const same = d.toDateString() === today.toDateString();
  return same ? d.toLocaleTimeString() : d.toLocaleString();
}

export function duration(ms) {
  if (ms === undefined || ms === null || ms < 0 || Number.isNaN(ms)) return '-';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function count(n) {
  if (n === undefined || n === null) return '-';
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return String(n);
}

export function excerpt(value, chars = 120) {
  let text = typeof value === 'string' ? value : value === undefined ? '' : JSON.stringify(value);
  if (value && typeof value === 'object' && 'preview' in value) text = String(value.preview);
  text = visible(text.replace(/\s+/g, ' ').trim());
  return text.length > chars ? `${text.slice(0, chars)}…` : text;
}

export function pretty(value) {
  return typeof value === 'string' ? value : JSON.stringify(value, null, 2);
}

export function statusBadge(status) {
  return h('span', { class: `status status-${status}`, text: status });
}

// A block of text as the terminal would show it: pre-formatted, scrollable, copyable.
export function pre(text, cls = '') {
  return h('pre', { class: `block ${cls}`, text: visible(text ?? '') });
}

// An expandable section (native <details>: works without script state).
export function details(summary, body, open = false) {
  return h('details', { open }, h('summary', {}, summary), body);
}

export function message(text, cls = 'notice') {
  return h('p', { class: cls, text });
}

// A field of an approval form as a person must see it (the same rule as the terminal's,
// sandbox/text.cpp): every character that changes how text reads without showing itself
// (controls, bidi embeddings and isolates, zero-width characters, word joiner, BOM, line and
// paragraph separators, spaces other than U+0020, Hangul fillers, variation selectors, tags) is
// shown as an escape; a run of more than 8 spaces is shown by its count; past `max` characters
// the start and the end show, with the count of what is between.
const hidden = /[\u0000-\u0008\u000b-\u001f\u007f-\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f\u2800\u3000\u3164\ufe00-\ufe0f\ufeff\ufff9-\ufffb\uffa0]|\ud804[\udcbd\udccd]|\ud834[\udd73-\udd7a]|\udb40[\udc00-\udfff]|\udb43[\udc00-\udfff]/g;

function escapeHidden(ch) {
  const code = ch.codePointAt(0);
  if (code < 0x80) return `\\x${code.toString(16).padStart(2, '0')}`;
  return code > 0xffff ? `\\U${code.toString(16).padStart(8, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

// Text of a block (an output, a message, JSON) with its lines and indentation kept and every
// hidden character escaped.
export function visible(value) {
  return String(value ?? '').replace(/\r/g, '\\r').replace(hidden, escapeHidden);
}

export function shown(value, max = 2000, keepLines = false) {
  let text = String(value ?? '').replace(/\t/g, '\\t').replace(/\r/g, '\\r');
  if (!keepLines) text = text.replace(/\n/g, '\\n');
  text = text.replace(hidden, escapeHidden).replace(/ {9,}/g, (run) => `[${run.length} spaces]`);
  const chars = Array.from(text);
  if (chars.length <= max) return text;
  const head = Math.floor(max / 2);
  const tail = max - head;
  return `${chars.slice(0, head).join('')} [... ${chars.length - head - tail} characters not shown ...] ${chars.slice(chars.length - tail).join('')}`;
}
