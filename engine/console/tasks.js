// Upgrade tasks: the list (paged on the server, newest first), a form with every field of a
// task (retries, retry interval, execution time, deadline, pacing, weak-signal pause, failure
// rate, start jitter, airtime, maintenance windows, rollout stages), to create one or edit one
// that has not started, and a task's page: its actions under the status rules, its figures
// and charts (progress over time, failures by reason, progress per cell, from
// GET /v1/tasks/{id}/summary), its stages, and the devices table of List 9-4 paged on the
// server; all kept live from /v1/events.

import { api, get } from "./api.js";
import { action, badge, fill, form, h, later, link, notify, pager, percent, select, table, tableRow, time } from "./ui.js";
import { bars, legend, progressOverTime, stacked } from "./charts.js";

const PAGE = 50;
const taskPath = (id) => `/v1/tasks/${encodeURIComponent(id)}`;
/**
 * Shortest time between two reads of a task's summary while events come: a second, and a
 * second more per 100,000 devices (the engine counts every device of the task for it).
 */
const summaryEveryMs = (devices) => 1000 * (1 + Math.floor((devices || 0) / 100000));
/** Shortest time between two reads of a page of devices whose events came while it was read. */
const PAGE_AGAIN_MS = 1000;

export async function render(view, [id, verb], { onEvent }) {
  if (id === "new") return renderForm(view, null);
  if (id && verb === "edit") return renderForm(view, await get(taskPath(id)));
  if (id) return renderTask(view, id, onEvent);
  const list = h("div");
  const columns = [
    ["Name", (t) => link(`#/tasks/${encodeURIComponent(t.id)}`, t.spec.name)],
    ["Status", (t) => badge(t.status)], ["Success rate", (t) => percent(t.success_rate)],
    ["Retries", (t) => t.spec.retries], ["Execution time", (t) => time(t.spec.execution_time) || "--"],
    ["Deadline", (t) => time(t.spec.deadline)], ["Created", (t) => time(t.created_at)],
    ["Finished", (t) => time(t.finished_at)],
  ];
  const pages = pager(
    (cursor) => get("/v1/tasks", { sort: "-created_at", limit: PAGE, cursor }),
    (page) => fill(list, table(columns, page.items, (t) => t.id)),
  );
  onEvent((event) => { if (event.name === "task") pages.reload(); });
  fill(view, h("h1", {}, "Upgrade tasks"),
    h("div", { class: "actions" }, link("#/tasks/new", "New task")), list, pages.bar);
  await pages.go(null);
}

/** Milliseconds of a datetime-local input's value (local time), or null. */
function millis(value) {
  return value ? new Date(value).getTime() : null;
}

function number(values, name) {
  const text = values.get(name);
  return text === null || text === "" ? null : Number(text);
}

/** "22:00-06:00, 12:00-13:00" as daily windows. */
function windows(text) {
  return (text || "").split(",").map((w) => w.trim()).filter(Boolean).map((w) => {
    const [start, end] = w.split("-").map((t) => t.trim());
    if (!start || !end) throw new Error(`a window is HH:MM-HH:MM, not "${w}"`);
    return { start, end };
  });
}

/** A stage's fields, holding `stage` (a task's, when it is edited) or the defaults. */
function stageRow(stage = null) {
  const percent = stage?.devices?.up_to_percent;
  const row = h("fieldset", { class: "stage" }, h("legend", {}, "Stage"),
    h("label", {}, "Name", h("input", { name: "stage_name", required: true, value: stage?.name ?? "" })),
    select("Devices", "stage_devices", [["percent", "up to % of the group"], ["test_devices", "test devices"]]),
    h("label", {}, "Up to %", h("input", { name: "stage_percent", type: "number", min: 0, max: 100, step: "any", value: percent ?? 100 })),
    h("label", {}, "Success threshold", h("input", { name: "stage_success", type: "number", min: 0, max: 1, step: "any", value: stage?.success_threshold ?? 1 })),
    h("label", {}, "Max failure rate", h("input", { name: "stage_failure", type: "number", min: 0, max: 1, step: "any", value: stage?.max_failure_rate ?? "" })),
    select("Approval before next", "stage_approval", [["", "default"], ["true", "yes"], ["false", "no"]]),
  );
  if (stage) {
    row.querySelector("[name=stage_devices]").value = stage.devices === "test_devices" ? "test_devices" : "percent";
    row.querySelector("[name=stage_approval]").value = stage.manual_approval === null || stage.manual_approval === undefined ? "" : String(stage.manual_approval);
  }
  row.append(h("button", { type: "button", class: "danger", onclick: () => row.remove() }, "Remove"));
  return row;
}

function stageOf(row) {
  const value = (name) => row.querySelector(`[name=${name}]`).value;
  const stage = {
    name: value("stage_name"),
    devices: value("stage_devices") === "test_devices" ? "test_devices" : { up_to_percent: Number(value("stage_percent")) },
    success_threshold: Number(value("stage_success")),
  };
  if (value("stage_failure") !== "") stage.max_failure_rate = Number(value("stage_failure"));
  if (value("stage_approval") !== "") stage.manual_approval = value("stage_approval") === "true";
  return stage;
}

function specOf(values, stages) {
  const spec = {
    name: values.get("name"), group_id: values.get("group_id"), package_id: values.get("package_id"),
    retries: number(values, "retries"), retry_interval_secs: number(values, "retry_interval_secs"),
    execution_time: millis(values.get("execution_time")), deadline: millis(values.get("deadline")),
    pacing: { max_concurrent: number(values, "max_concurrent"), max_per_cell: number(values, "max_per_cell") },
    min_signal_dbm: number(values, "min_signal_dbm"), cell_pause_secs: number(values, "cell_pause_secs"),
    max_failure_rate: number(values, "max_failure_rate"), failure_sample: number(values, "failure_sample"),
    start_jitter_secs: number(values, "start_jitter_secs"),
    cell_airtime_bytes_per_sec: number(values, "cell_airtime_bytes_per_sec"),
    stages: [...stages.querySelectorAll("fieldset.stage")].map(stageOf),
  };
  const download = windows(values.get("download_windows"));
  const update = windows(values.get("update_windows"));
  if (download.length || update.length) {
    spec.windows = { time_zone: values.get("time_zone") || "UTC", download, update };
  }
  return spec;
}

/** A datetime-local input's value (local time, to the second) for `millis`; empty for none. */
function localTime(millis) {
  if (!millis) return "";
  const offset = new Date(millis).getTimezoneOffset() * 60000;
  return new Date(millis - offset).toISOString().slice(0, 19);
}

/** Puts `spec` (the task being edited) into the form's fields and stage rows. */
function prefill(el, stages, spec) {
  const set = (name, value) => { el.elements[name].value = value ?? ""; };
  const windowText = (list) => (list || []).map((w) => `${w.start}-${w.end}`).join(", ");
  for (const name of ["name", "group_id", "package_id", "retries", "retry_interval_secs", "start_jitter_secs",
    "cell_airtime_bytes_per_sec", "min_signal_dbm", "cell_pause_secs", "max_failure_rate", "failure_sample"]) {
    set(name, spec[name]);
  }
  set("execution_time", localTime(spec.execution_time));
  set("deadline", localTime(spec.deadline));
  set("max_concurrent", spec.pacing.max_concurrent);
  set("max_per_cell", spec.pacing.max_per_cell);
  if (spec.windows) {
    set("time_zone", spec.windows.time_zone);
    set("download_windows", windowText(spec.windows.download));
    set("update_windows", windowText(spec.windows.update));
  }
  for (const stage of spec.stages) stages.append(stageRow(stage));
}

/** The form of a new task, or of `task` (not started yet) to edit. */
async function renderForm(view, task) {
  const [groups, packages] = await Promise.all([get("/v1/groups"), get("/v1/packages")]);
  const num = (label, name, value, props = {}) => h("label", {}, label, h("input", { name, type: "number", value, ...props }));
  const stages = h("div");
  const el = form({ id: "new-task" }, [
    h("fieldset", {}, h("legend", {}, "Task"),
      h("label", {}, "Name", h("input", { name: "name", required: true })),
      select("Group", "group_id", groups.map((g) => [g.id, `${g.name} (${g.vendor} ${g.model}, ${g.device_count} devices)`]), { required: true }),
      select("Package", "package_id", packages.map((p) => [p.id,
        `${p.vendor} ${p.model} ${p.kind} ${p.from_version ? `${p.from_version}→` : ""}${p.to_version}`]), { required: true })),
    h("fieldset", {}, h("legend", {}, "Retries and times"),
      num("Retries", "retries", 3, { min: 0 }), num("Retry interval (s)", "retry_interval_secs", 60, { min: 0 }),
      h("label", {}, "Execution time (empty: now)", h("input", { name: "execution_time", type: "datetime-local", step: 1 })),
      h("label", {}, "Deadline", h("input", { name: "deadline", type: "datetime-local", step: 1 })),
      num("Start jitter (s)", "start_jitter_secs", 0, { min: 0 })),
    h("fieldset", {}, h("legend", {}, "Pacing and automatic pauses"),
      num("Devices at once", "max_concurrent", 1000, { min: 1 }), num("Per cell at once", "max_per_cell", 50, { min: 1 }),
      num("Cell airtime (B/s)", "cell_airtime_bytes_per_sec", "", { min: 1 }),
      num("Weak signal below (dBm)", "min_signal_dbm", ""), num("Cell pause (s)", "cell_pause_secs", 600, { min: 0 }),
      num("Pause at failure rate (0–1)", "max_failure_rate", "", { min: 0, max: 1, step: "any" }),
      num("…after devices finished", "failure_sample", 20, { min: 1 })),
    h("fieldset", {}, h("legend", {}, "Maintenance windows (daily, HH:MM-HH:MM, comma separated)"),
      h("label", {}, "Time zone", h("input", { name: "time_zone", value: "UTC" })),
      h("label", {}, "Downloads", h("input", { name: "download_windows", placeholder: "22:00-06:00" })),
      h("label", {}, "Installs", h("input", { name: "update_windows", placeholder: "02:00-04:00" }))),
    h("fieldset", {}, h("legend", {}, "Rollout stages (none: the whole group at once)"), stages,
      h("button", { type: "button", class: "secondary", id: "add-stage", onclick: () => stages.append(stageRow()) }, "Add stage")),
    h("button", { type: "submit" }, task ? "Save task" : "Create task"),
  ], async (values) => {
    const spec = specOf(values, stages);
    const saved = task ? await api("PATCH", taskPath(task.id), spec) : await api("POST", "/v1/tasks", spec);
    notify(`Task ${saved.spec.name} ${task ? "saved" : "created"}.`, "ok");
    location.hash = `#/tasks/${encodeURIComponent(saved.id)}`;
  });
  if (task) prefill(el, stages, task.spec);
  fill(view, h("h1", {}, task ? `Edit task ${task.spec.name}` : "New upgrade task"), h("div", { class: "card" }, el));
}

/** Which actions the status rules allow (the engine checks them again). */
function allowed(task) {
  const s = task.status;
  return {
    edit: s === "not_started", start: s === "not_started", pause: s === "upgrading", resume: s === "paused",
    approve: !!task.awaiting_approval, cancel: s === "upgrading" || s === "paused",
    delete: s !== "upgrading" && s !== "paused",
  };
}

/** List 9-4's columns. */
const DEVICE_COLUMNS = [
  ["Device name", (d) => link(`#/devices/${encodeURIComponent(d.endpoint)}`, d.name)],
  ["IMEI", (d) => d.imei], ["Retry", (d) => d.retry],
  ["Online", (d) => badge(d.online ? "online" : "offline")],
  ["Download", (d) => badge(d.download)], ["Upgrade", (d) => badge(d.upgrade)],
  ["State", (d) => badge(d.result ?? d.phase)], ["Cell", (d) => d.cell_id],
  ["Note", (d) => d.note],
];

const RESULTS_FAILED = (results) => Object.entries(results).filter(([name]) => name !== "successful");

function figure(label, value, id) {
  return h("div", { class: "figure" }, h("b", { id }, value), label);
}

function drawSummary(el, summary) {
  const phases = summary.phases;
  const upgraded = summary.results.successful ?? 0;
  const failed = RESULTS_FAILED(summary.results).reduce((sum, [, n]) => sum + n, 0);
  const finished = upgraded + failed;
  fill(el,
    h("div", { class: "figures" },
      figure("devices", summary.devices, "fig-devices"), figure("upgraded", upgraded, "fig-upgraded"),
      figure("failed", failed, "fig-failed"), figure("in an attempt", phases.active ?? 0, "fig-active"),
      figure("waiting", phases.waiting ?? 0, "fig-waiting"), figure("removed", phases.removed ?? 0, "fig-removed")),
    h("progress", { id: "task-progress", max: Math.max(1, summary.devices - (phases.removed ?? 0)), value: finished }),
    h("div", { class: "row" },
      h("div", { class: "card" }, h("h2", {}, "Progress over time"),
        legend([["up", "upgraded"], ["down", "failed"]]),
        progressOverTime(summary.timeline, summary.devices)),
      h("div", { class: "card" }, h("h2", {}, "Failures by reason"),
        bars(RESULTS_FAILED(summary.results).sort((a, b) => b[1] - a[1]), "failures by reason"))),
    h("div", { class: "card" }, h("h2", {}, "Progress per cell (busiest first)"),
      legend([["up", "upgraded"], ["down", "failed"], ["busy", "in an attempt"], ["rest", "to do"]]),
      stacked(summary.cells.map((c) => ({
        label: c.cell_id === null ? "unknown" : `cell ${c.cell_id}`,
        parts: [["up", c.upgraded], ["down", c.failed], ["busy", c.active],
          ["rest", c.devices - c.upgraded - c.failed - c.active]],
      })), "progress per cell"),
      summary.other_cells_devices ? h("p", { class: "muted" }, `${summary.other_cells_devices} devices in other cells.`) : null));
}

/** The names a task's page shows for its group and package (their ids when gone). */
async function labelsOf(spec) {
  const [group, pkg] = await Promise.all([
    get(`/v1/groups/${encodeURIComponent(spec.group_id)}`).catch(() => null),
    get(`/v1/packages/${encodeURIComponent(spec.package_id)}`).catch(() => null),
  ]);
  return {
    group: group ? `${group.name} (${group.vendor} ${group.model})` : spec.group_id,
    package: pkg ? `${pkg.kind} ${pkg.from_version ? `${pkg.from_version} → ` : ""}${pkg.to_version} (${pkg.id})` : spec.package_id,
  };
}

function drawHead(el, task, reload, labels) {
  const can = allowed(task);
  const act = (label, path, ok, props = {}) => action(label, async () => {
    await api("POST", `${taskPath(task.id)}/${path}`);
    await reload();
  }, { disabled: !ok, id: `task-${path}`, ...props });
  const spec = task.spec;
  fill(el,
    h("h1", {}, `Task ${spec.name} `, h("span", { id: "task-status", class: `badge ${task.status}` }, task.status)),
    task.pause_reason ? h("p", { class: "error" }, `Paused: ${task.pause_reason}`) : null,
    task.awaiting_approval ? h("p", {}, `Waiting for approval: ${task.awaiting_approval}`) : null,
    h("div", { class: "actions" },
      action("Edit", () => { location.hash = `#/tasks/${encodeURIComponent(task.id)}/edit`; },
        { disabled: !can.edit, class: "secondary", id: "task-edit" }),
      act("Start", "start", can.start), act("Pause", "pause", can.pause), act("Resume", "resume", can.resume),
      act("Approve next stage", "approve", can.approve), act("Cancel", "cancel", can.cancel, { class: "danger" }),
      action("Delete", async () => {
        if (!confirm(`Delete task ${spec.name}?`)) return;
        await api("DELETE", taskPath(task.id));
        location.hash = "#/tasks";
      }, { disabled: !can.delete, class: "danger", id: "task-delete" })),
    h("dl", { class: "fields wide" }, [
      ["Success rate", percent(task.success_rate)], ["Group", link(`#/groups/${encodeURIComponent(spec.group_id)}`, labels.group)],
      ["Package", labels.package], ["Retries / interval", `${spec.retries} / ${spec.retry_interval_secs} s`],
      ["Execution time", spec.execution_time ? time(spec.execution_time) : "--"], ["Deadline", time(spec.deadline)],
      ["Pacing", `${spec.pacing.max_concurrent} at once, ${spec.pacing.max_per_cell} per cell`],
      ["Weak-signal pause", spec.min_signal_dbm === null ? "—" : `below ${spec.min_signal_dbm} dBm for ${spec.cell_pause_secs} s`],
      ["Failure-rate pause", spec.max_failure_rate === null ? "—" : `${percent(spec.max_failure_rate)} after ${spec.failure_sample}`],
      ["Paused cells", Object.keys(task.paused_cells).join(", ") || "—"],
      ["Created / started / finished", `${time(task.created_at)} / ${time(task.started_at)} / ${time(task.finished_at)}`],
    ].flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    spec.stages.length ? table([
      ["Stage", (s) => s.name], ["Open", (s) => (s.open ? "yes" : "no")], ["Devices", (s) => s.devices],
      ["Upgraded", (s) => s.upgraded], ["Failed", (s) => s.failed],
    ], task.stage_progress) : null);
}

async function renderTask(view, id, onEvent) {
  const head = h("div", { class: "card", id: "task-head" });
  const summaryEl = h("div", { id: "task-summary" });
  const list = h("div", { id: "task-devices" });
  let rows = new Map();
  let labels = { group: "", package: "" };
  // Task events come in order, so the last one drawn is the newest state; a task read by GET
  // is drawn only when no event was drawn since the GET went out (else it may be older).
  let eventsDrawn = 0;
  const reloadHead = async () => {
    const before = eventsDrawn;
    const task = await get(taskPath(id));
    if (eventsDrawn === before) drawHead(head, task, reloadHead, labels);
  };
  // A device's event that came while its page was read may be older or newer than the page:
  // such a page is read again a moment later (events then update its rows as they come).
  let deviceEvents = 0;
  let pageDue = null;
  const pages = pager(
    async (cursor) => {
      const before = deviceEvents;
      const page = await get(`${taskPath(id)}/devices`, { limit: PAGE, cursor });
      return { ...page, stale: deviceEvents !== before };
    },
    (page) => {
      rows = new Map(page.items.map((d) => [d.endpoint, d]));
      fill(list, table(DEVICE_COLUMNS, page.items, (d) => d.endpoint));
      if (page.stale && !pageDue) {
        pageDue = later(() => { pageDue = null; return pages.reload(); }, PAGE_AGAIN_MS);
      }
    },
  );
  let summaryDue = null;
  let devices = 0;
  const readSummary = async () => {
    const summary = await get(`${taskPath(id)}/summary`);
    devices = summary.devices;
    drawSummary(summaryEl, summary);
  };
  const refreshSummary = () => {
    if (summaryDue) return;
    summaryDue = later(() => {
      summaryDue = null;
      return readSummary();
    }, summaryEveryMs(devices));
  };
  onEvent((event) => {
    const data = event.data || {};
    if (data.id === id || data.task_id === id) head.dataset.liveEvents = Number(head.dataset.liveEvents || 0) + 1;
    if (event.name === "task" && data.id === id) {
      eventsDrawn += 1;
      drawHead(head, data, reloadHead, labels);
      refreshSummary();
    } else if ((event.name === "device" || event.name === "device_failed") && data.task_id === id) {
      deviceEvents += 1;
      updateRow(list, rows, data);
      refreshSummary();
    } else if ((event.name === "failure_rate_alarm" || event.name === "cell_paused") && data.task_id === id) {
      notify(event.name === "cell_paused" ? `Cell ${data.cell_id} paused: ${data.reason}`
        : `Paused: ${percent(data.failure_rate)} of stage ${data.stage} failed`);
    }
  });
  fill(view, head, summaryEl, h("div", { class: "card" }, h("h2", {}, "Devices"), list, pages.bar));
  labels = await labelsOf((await get(taskPath(id))).spec);
  await reloadHead();
  await readSummary();
  refreshSummary(); // again once the events that came while the page loaded are counted
  await pages.go(null);
}

/** Redraws a device's row of the page shown when its progress changed. */
function updateRow(list, rows, progress) {
  const shown = rows.get(progress.endpoint);
  if (!shown) return;
  const retries = shown.retry.split("/")[1];
  const merged = { ...shown, ...progress, retry: `${progress.attempts}/${retries}` };
  rows.set(progress.endpoint, merged);
  const old = list.querySelector(`tr[data-key="${CSS.escape(progress.endpoint)}"]`);
  old?.replaceWith(tableRow(DEVICE_COLUMNS, merged, (d) => d.endpoint));
}
