// The dashboard's only way to the node: fetch() to its own origin, with
// the signed-in token as a bearer header (never in a URL), and live
// streams read from fetch() too, since an EventSource cannot send a header.

const TOKEN_KEY = "drover.token";

/** The token secret this tab signed in with, or "" without one. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(secret) {
  if (secret) sessionStorage.setItem(TOKEN_KEY, secret);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** A refusal or failure of the API, carrying its problem document. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
  /** The token is missing, wrong or revoked: sign in (again). */
  get signIn() { return this.status === 401; }
  get forbidden() { return this.status === 403; }
}

function headers(extra) {
  const h = { Accept: "application/json", ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return { title: response.statusText, detail: `HTTP ${response.status}` };
  }
}

/** Listeners told about every 401/403 (the app shows sign-in or a message). */
const refusalListeners = [];
export function onRefusal(fn) { refusalListeners.push(fn); }

/** One JSON call; resolves to the body, rejects with an ApiError. */
export async function call(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, { title: "Unreachable", detail: `this node did not answer (${e.message})` });
  }
  if (!response.ok) {
    const error = new ApiError(response.status, await problemOf(response));
    if (error.signIn || error.forbidden) refusalListeners.forEach((fn) => fn(error));
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);

/** Query string of the non-empty values of `params`. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "" && v !== false) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/**
 * Follows a Server-Sent Events stream at `path`, reconnecting after a
 * dropped connection with `Last-Event-ID` (the last `id:` seen), so no event
 * is missed. `onEvent(name, data, id)` gets each event with its JSON data;
 * `onState("open"|"retrying"|"ended", detail)` is told how the stream is.
 * A stream that ends by itself after an `end` event is not reopened, nor
 * one whose server answered with a problem (`onError(ApiError)`).
 * Returns a function that stops it.
 */
export function stream(path, { onEvent, onState = () => {}, onError = () => {}, lastEventId = "" }) {
  const abort = new AbortController();
  let lastId = lastEventId;
  let stopped = false;
  const stop = () => { stopped = true; abort.abort(); };

  const run = async () => {
    let delay = 500;
    while (!stopped) {
      let finished = false;
      try {
        const extra = { Accept: "text/event-stream" };
        if (lastId) extra["Last-Event-ID"] = lastId;
        const response = await fetch(path, {
          headers: headers(extra), signal: abort.signal, credentials: "omit", cache: "no-store",
        });
        if (!response.ok) {
          const error = new ApiError(response.status, await problemOf(response));
          if (error.signIn || error.forbidden) refusalListeners.forEach((fn) => fn(error));
          onError(error);
          // A refusal stays a refusal; a node that is not ready may recover.
          if (response.status < 500) { onState("ended", error.message); return; }
          throw error;
        }
        onState("open");
        delay = 500;
        finished = await pump(response.body, (name, data, id) => {
          if (id) lastId = id;
          if (name === "error") { onError(new ApiError(data.status || 500, data)); return; }
          onEvent(name, data, id);
        });
        if (finished) { onState("ended"); return; }
      } catch (e) {
        if (stopped) return;
        onState("retrying", e.message);
      }
      if (stopped) return;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  };
  run();
  return stop;
}

/** Reads SSE frames off a byte stream; true when an `end` event closed it. */
async function pump(body, deliver) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let ended = false;
  let event = { name: "message", data: [], id: "" };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.search(/\r?\n/)) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer[nl] === "\r" ? 2 : 1));
      if (line === "") {
        if (event.data.length) {
          let data;
          try { data = JSON.parse(event.data.join("\n")); } catch { data = event.data.join("\n"); }
          // After `end` (or an `error`, which ends a stream too) the
          // server closes: that is not a cut connection to resume.
          if (event.name === "end" || event.name === "error") ended = true;
          deliver(event.name, data, event.id);
        }
        event = { name: "message", data: [], id: "" };
        continue;
      }
      if (line.startsWith(":")) continue; // keep-alive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let text = colon < 0 ? "" : line.slice(colon + 1);
      if (text.startsWith(" ")) text = text.slice(1);
      if (field === "event") event.name = text;
      else if (field === "data") event.data.push(text);
      else if (field === "id") event.id = text;
    }
  }
  if (!ended) throw new Error("the stream was cut");
  return true;
}
