// Small DOM helpers for the console's views: elements built with properties, never HTML
// strings (a device name cannot inject markup), tables, a cursor pager, forms, notices, and
// formatting of sizes and times.

import { session } from "./api.js";

/** An element `tag` with attributes/properties `props` and `children` (nodes or text). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value") el.value = value;
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function badge(text, kind = text) {
  return h("span", { class: `badge ${kind ?? ""}` }, text ?? "—");
}

/**
 * A table of `rows` with `columns` ([title, row => cell]); `key(row)` names each row
 * (data-key), so a view can find and redraw one when an event comes.
 */
export function table(columns, rows, key) {
  const head = h("tr", {}, columns.map(([title]) => h("th", {}, title)));
  const body = h("tbody", {}, rows.map((row) => tableRow(columns, row, key)));
  if (!rows.length) body.append(h("tr", {}, h("td", { colSpan: columns.length, class: "muted" }, "Nothing here.")));
  return h("div", { class: "scroll" }, h("table", {}, h("thead", {}, head), body));
}

export function tableRow(columns, row, key) {
  const tr = h("tr", key ? { dataset: { key: key(row) } } : {});
  for (const [, cell] of columns) tr.append(h("td", {}, cell(row) ?? "—"));
  return tr;
}

/**
 * A server-side pager: `load(cursor)` fetches a page ({items, total, offset, next_cursor});
 * `render(page)` draws it. Keeps the cursors of the pages before for "Previous".
 */
export function pager(load, render) {
  const before = [];
  let current = null;
  const status = h("span");
  const prev = h("button", { type: "button", class: "secondary", onclick: () => go(before.pop() ?? null, false) }, "Previous");
  const next = h("button", { type: "button", class: "secondary" }, "Next");
  const bar = h("div", { class: "pager" }, prev, next, status);
  let nextCursor = null;
  next.addEventListener("click", () => { before.push(current); go(nextCursor, false); });
  async function go(cursor, reset = true) {
    if (reset) before.length = 0;
    current = cursor;
    try {
      const page = await load(cursor);
      nextCursor = page.next_cursor;
      prev.disabled = before.length === 0;
      next.disabled = !page.next_cursor;
      const first = page.items.length ? page.offset + 1 : 0;
      status.textContent = `${first}–${page.offset + page.items.length} of ${page.total}`;
      render(page);
    } catch (error) {
      notify(error);
    }
  }
  return { bar, go, reload: () => go(current, false) };
}

/** Views shown so far: what a view left behind (a timer, a redraw) stops once another shows. */
let viewsShown = 0;

/** Another view is being shown. */
export function showingNewView() {
  viewsShown += 1;
}

/** Whether the view shown now is still the one shown, asked later. */
function stillShown() {
  const view = viewsShown;
  return () => view === viewsShown;
}

/** A function drawing the view again with `draw`, unless another view is shown by then. */
export function redrawer(draw) {
  const shown = stillShown();
  return () => (shown() ? draw() : undefined);
}

/**
 * Runs `task` in `ms` if the view shown now is still shown then, and tells its error only if
 * it still is: a view left (a task just deleted) does not read again or report.
 */
export function later(task, ms) {
  const shown = stillShown();
  return setTimeout(async () => {
    if (!shown()) return;
    try {
      await task();
    } catch (error) {
      if (shown()) notify(error);
    }
  }, ms);
}

let noticeTimer = null;
/** Shows an error (or a message) at the top of the page. */
export function notify(message, kind = "error") {
  const notice = document.getElementById("notice");
  notice.textContent = message instanceof Error ? message.message : String(message);
  notice.className = kind;
  notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { notice.hidden = true; }, kind === "error" ? 15000 : 4000);
}

export function clearNotice() {
  document.getElementById("notice").hidden = true;
}

/** A button for a write: disabled for a viewer; `action` runs with errors shown. */
export function action(label, run, props = {}) {
  const button = h("button", { type: "button", ...props }, label);
  button.disabled = !session.canWrite || props.disabled;
  button.addEventListener("click", () => guarded(run, button));
  return button;
}

/** Runs `run`, showing its error; `button` is disabled meanwhile. */
export async function guarded(run, button) {
  if (button) button.disabled = true;
  try {
    await run();
  } catch (error) {
    notify(error);
  } finally {
    if (button && session.canWrite) button.disabled = false;
  }
}

/** A form whose submit calls `submit(values)`; viewers see it disabled. */
export function form(props, children, submit) {
  const el = h("form", { class: "inline", ...props }, children);
  el.addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(() => submit(new FormData(el), el), el.querySelector("button[type=submit]"));
  });
  if (!session.canWrite) for (const control of el.elements) control.disabled = true;
  return el;
}

export function field(label, props) {
  return h("label", {}, label, h("input", props));
}

export function select(label, name, options, props = {}) {
  return h("label", {}, label, h("select", { name, ...props },
    options.map(([value, text]) => h("option", { value }, text))));
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = n, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

export function time(millis) {
  if (!millis) return "—";
  return new Date(millis).toLocaleString();
}

export function percent(share) {
  return share === null || share === undefined ? "—" : `${(share * 100).toFixed(1)} %`;
}

export function link(href, text) {
  return h("a", { href }, text);
}

/** A file chooser with a progress bar: `send(file, progress)` uploads it. */
export function uploader(name, label) {
  const input = h("input", { type: "file", name, required: true });
  const bar = h("progress", { max: 1, value: 0, hidden: true });
  const text = h("span", { class: "muted" });
  return {
    el: h("div", { class: "upload" }, h("label", {}, label, input), bar, text),
    input,
    progress(sent, total) {
      bar.hidden = false;
      bar.max = total || 1;
      bar.value = sent;
      text.textContent = `${bytes(sent)} of ${bytes(total)}`;
    },
    done(message) { text.textContent = message; },
  };
}
