// The console's only way to the engine: the public /v1 API, with the token the person typed
// sent as `Authorization: Bearer` (kept in sessionStorage: this tab only, never in a URL).
// Errors come back as ApiError with the problem's detail. Uploads go through
// XMLHttpRequest for their progress; /v1/events is read with fetch() streaming (EventSource
// cannot send a header) and followed again after a cut with Last-Event-ID.

const TOKEN_KEY = "fota.token";

export class ApiError extends Error {
  constructor(status, problem) {
    const detail = problem && (problem.detail || problem.title);
    super(detail ? `${detail} (${status})` : `the engine answered ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export const session = {
  token: sessionStorage.getItem(TOKEN_KEY),
  role: null,
  get canWrite() { return this.role === "operator"; },
  remember(token) { this.token = token; sessionStorage.setItem(TOKEN_KEY, token); },
  forget() { this.token = null; this.role = null; sessionStorage.removeItem(TOKEN_KEY); },
};

function headers(extra = {}) {
  return { Authorization: `Bearer ${session.token}`, ...extra };
}

/** The path with `query`'s non-empty values added. */
export function withQuery(path, query = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === "") continue;
    for (const one of Array.isArray(value) ? value : [value]) params.append(key, one);
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

async function answer(response) {
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = { detail: text }; }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

/** `method path` with a JSON body (or none); the answer's JSON. */
export async function api(method, path, json) {
  const init = { method, headers: headers(), cache: "no-store" };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  return answer(await fetch(path, init));
}

export const get = (path, query) => api("GET", withQuery(path, query));

/** POSTs `file` to `path`, calling `progress(sent, total)` as it goes; the answer's JSON. */
export function upload(path, file, progress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [key, value] of Object.entries(headers({ "Content-Type": "application/octet-stream" }))) {
      xhr.setRequestHeader(key, value);
    }
    xhr.upload.onprogress = (e) => progress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onerror = () => reject(new ApiError(0, { detail: "the upload did not reach the engine" }));
    xhr.onload = () => {
      let body = null;
      try { body = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch { body = null; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body));
    };
    xhr.send(file);
  });
}

/** Parses one server-sent event block into {id, name, data}. */
function parseEvent(block) {
  const event = { id: null, name: "message", data: "" };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") event.id = value;
    else if (field === "event") event.name = value;
    else if (field === "data") event.data += value;
  }
  try { event.data = event.data ? JSON.parse(event.data) : null; } catch { /* kept as text */ }
  return event;
}

/**
 * Follows /v1/events until `signal` aborts, calling `onEvent(event)` for each and
 * `onState(live)` when the stream opens or breaks; reconnects after a second with
 * Last-Event-ID so nothing is missed.
 */
export async function follow(onEvent, onState, signal) {
  let last = null;
  while (!signal.aborted) {
    try {
      const extra = last ? { "Last-Event-ID": last } : {};
      const response = await fetch("/v1/events", { headers: headers(extra), signal, cache: "no-store" });
      if (!response.ok) throw new ApiError(response.status, null);
      onState(true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r/g, "");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (event.id) last = event.id;
          if (event.name !== "message") onEvent(event);
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status === 401) { onState(false); return; }
    }
    onState(false);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}
