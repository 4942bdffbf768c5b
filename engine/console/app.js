// The console's shell: log in (the token is checked with GET /v1/session, which also says
// whether it may change anything), the navigation, a hash router (#/tasks/ID: nothing
// secret in it), and one /v1/events stream per tab shared by the views that listen.

import { ApiError, follow, get, session } from "./api.js";
import { clearNotice, fill, h, notify, showingNewView } from "./ui.js";
import * as devices from "./devices.js";
import * as groups from "./groups.js";
import * as firmware from "./firmware.js";
import * as tasks from "./tasks.js";
import * as stats from "./stats.js";
import * as plugins from "./plugins.js";

const routes = { devices, groups, firmware, tasks, stats, plugins };

/** Listeners of /v1/events: the view shown adds its own and they go when it changes. */
const listeners = new Set();
let stream = null;

export function onEvent(listener) {
  listeners.add(listener);
}

function startEvents() {
  stream = new AbortController();
  const live = document.getElementById("live");
  follow(
    (event) => {
      // Events the engine no longer kept were missed: the view is read again whole.
      if (event.name === "lagged") return show();
      for (const listener of listeners) listener(event);
    },
    (on) => { live.className = `live ${on ? "on" : "off"}`; live.dataset.state = on ? "on" : "off"; },
    stream.signal,
  );
}

async function logIn(token) {
  session.remember(token);
  try {
    const answer = await get("/v1/session");
    session.role = answer.role;
  } catch (error) {
    session.forget();
    throw error;
  }
  document.getElementById("role").textContent = session.role;
  document.getElementById("nav").hidden = false;
  document.getElementById("session").hidden = false;
  startEvents();
  if (!location.hash || location.hash === "#/") location.hash = "#/devices";
  else show();
}

function logOut() {
  stream?.abort();
  session.forget();
  location.hash = "";
  location.reload();
}

let loginForm = null;

function showLogin(message) {
  const view = document.getElementById("view");
  fill(view, loginForm);
  const error = document.getElementById("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  document.getElementById("token").focus();
}

/** Draws the view the hash names (#/name/arg...). */
async function show() {
  if (!session.role) return;
  showingNewView();
  clearNotice();
  listeners.clear();
  const [name, ...args] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const route = routes[name] ? name : "devices";
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("current", a.dataset.view === route);
  }
  // Each view draws into its own page: one still loading when another is shown (the first
  // view after logging in, left at once) draws into a page no longer in the document.
  const view = h("div", { class: "page" }, h("p", { class: "muted" }, "Loading…"));
  fill(document.getElementById("view"), view);
  try {
    await routes[route].render(view, args, { onEvent });
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return logOut();
    fill(view, h("p", { class: "error" }, error.message));
    notify(error);
  }
}

function start() {
  loginForm = document.getElementById("login");
  loginForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = document.getElementById("token").value.trim();
    try {
      await logIn(token);
    } catch (error) {
      showLogin(error instanceof ApiError && error.status === 401
        ? "This token is not one the engine accepts." : error.message);
    }
  });
  document.getElementById("logout").addEventListener("click", logOut);
  window.addEventListener("hashchange", show);
  if (session.token) logIn(session.token).catch(() => showLogin());
  else showLogin();
}

start();
