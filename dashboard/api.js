// The HTTP API (docs/HTTP.md) and the live stream of a run. The token comes once in the address
// `keel dev` prints (after '#token=', a fragment no server sees), or from the prompt; this origin
// keeps it (localStorage: other tabs of the dashboard have it too) and sends it as a bearer token.

const TOKEN_KEY = 'keel-token';

// Taken from the address and removed from it at once, so that it is not bookmarked or shared.
(function tokenFromAddress() {
  const match = /(?:^#|&)token=([A-Za-z0-9_-]{1,200})(?:&|$)/.exec(location.hash);
  if (!match) return;
  localStorage.setItem(TOKEN_KEY, match[1]);
  history.replaceState(null, '', location.pathname + location.search);
})();

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra = {}) {
  const out = { ...extra };
  const token = localStorage.getItem(TOKEN_KEY) || sessionStorage.getItem(TOKEN_KEY);
  if (token) out.Authorization = `Bearer ${token}`;
  return out;
}

export function setToken(token) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

// Calls the API; an error answer throws ApiError with the protocol's code. A 401 asks the page
// for a token (the `keel-token-needed` event) and throws.
export async function api(path, { method = 'GET', body } = {}) {
  // Whatever changes something goes as JSON: the gateway takes nothing else for it.
  if (method !== 'GET' && body === undefined) body = {};
  let response;
  try {
    response = await fetch(`/api/v1${path}`, {
      method,
      headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, 'unavailable', `the gateway cannot be reached (${e.message})`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401) window.dispatchEvent(new CustomEvent('keel-token-needed'));
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.code || 'internal', error.message || `HTTP ${response.status}`);
  }
  return data;
}

// Every stored event of a run, in order, a page at a time (`after` = the last seq while `more`).
// At most `pagesMax` pages of 1000: a run longer than that is shown by its start, and `cut` says so.
export async function allEvents(runId, pagesMax = 200) {
  const events = [];
  let after = 0;
  for (let page = 0; page < pagesMax; page++) {
    const got = await api(`/runs/${encodeURIComponent(runId)}/events?after=${after}&limit=1000`);
    events.push(...got.events);
    if (!got.more || !got.events.length) return { events, cut: false };
    after = got.events[got.events.length - 1].seq;
  }
  return { events, cut: true };
}

// Follows a run over Server-Sent Events from after `after`: stored events (with their seq) go to
// onEvent in order and once each, streamed model text to onDelta, the end to onEnd. A broken
// connection is opened again from the last seq seen, so nothing is missed or shown twice.
// fetch() rather than EventSource: it can send the token.
export function followRun(runId, after, { onEvent, onDelta, onEnd, onState }) {
  let last = after;
  let stopped = false;
  let controller = null;
  let retryMs = 2000;

  const handleFrame = (frame) => {
    let event = 'message';
    let id = null;
    const data = [];
    for (const line of frame.split('\n')) {
      if (!line || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'id') id = value;
      else if (field === 'data') data.push(value);
      else if (field === 'retry' && /^\d+$/.test(value)) retryMs = Number(value);
    }
    if (!data.length) return;
    let payload;
    try {
      payload = JSON.parse(data.join('\n'));
    } catch {
      return;
    }
    if (event === 'message') {
      const seq = Number(id);
      if (!(seq > last)) return;  // never twice
      last = seq;
      onEvent(payload);
    } else if (event === 'delta') onDelta?.(payload);
    else if (event === 'end') {
      stopped = true;
      onEnd?.(payload);
    } else if (event === 'stream_error') onState?.('error', payload.message);
  };

  const connect = async () => {
    while (!stopped) {
      controller = new AbortController();
      try {
        onState?.('connecting');
        const response = await fetch(`/api/v1/runs/${encodeURIComponent(runId)}/stream?after=${last}`, {
          headers: headers({ Accept: 'text/event-stream' }),
          signal: controller.signal,
          cache: 'no-store',
        });
        if (!response.ok) {
          let message = `HTTP ${response.status}`;
          try {
            message = (await response.json()).error.message;
          } catch {}
          if (response.status === 401) window.dispatchEvent(new CustomEvent('keel-token-needed'));
          onState?.('error', message);
          if (response.status === 404 || response.status === 400 || response.status === 401) return;
        } else {
          onState?.('live');
          const reader = response.body.getReader();
          const decoder = new TextDecoder();
          let buffer = '';
          while (!stopped) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
            let end;
            while ((end = buffer.indexOf('\n\n')) >= 0) {
              handleFrame(buffer.slice(0, end));
              buffer = buffer.slice(end + 2);
            }
          }
        }
      } catch (e) {
        if (stopped) return;
        onState?.('error', e.message);
      }
      if (stopped) break;
      onState?.('reconnecting');
      await new Promise((resolve) => setTimeout(resolve, retryMs));
    }
    onState?.('closed');
  };
  connect();
  return {
    close() {
      stopped = true;
      controller?.abort();
    },
    lastSeq: () => last,
  };
}
