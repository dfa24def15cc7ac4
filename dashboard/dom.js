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
  text = text.replace(/\s+/g, ' ').trim();
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
  return h('pre', { class: `block ${cls}`, text: text ?? '' });
}

// An expandable section (native <details>: works without script state).
export function details(summary, body, open = false) {
  return h('details', { open }, h('summary', {}, summary), body);
}

export function message(text, cls = 'notice') {
  return h('p', { class: cls, text });
}
