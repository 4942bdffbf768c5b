// Devices: the catalog filtered by vendor, model, version, online, cell and group, paged on
// the server; and one device's page: its LwM2M objects 3, 4 and 5 as last surveyed, its
// registration (online, last seen) and its upgrade history (its progress in every task).

import { get } from "./api.js";
import { badge, fill, h, link, pager, table, time } from "./ui.js";

const PAGE = 50;

const online = (d) => badge(d.online ? "online" : "offline");
const deviceLink = (d) => link(`#/devices/${encodeURIComponent(d.endpoint)}`, d.endpoint);

const COLUMNS = [
  ["Endpoint", deviceLink],
  ["Name", (d) => d.name],
  ["IMEI", (d) => d.imei],
  ["Vendor", (d) => d.manufacturer],
  ["Model", (d) => d.model],
  ["Version", (d) => d.firmware_version],
  ["Online", online],
  ["Cell", (d) => d.cell_id],
  ["Signal dBm", (d) => d.signal_dbm],
  ["Last seen", (d) => time(d.last_seen)],
];

export async function render(view, [endpoint]) {
  if (endpoint) return renderDevice(view, endpoint);
  const groups = await get("/v1/groups");
  const filters = h("form", { class: "inline", id: "device-filters" },
    h("label", {}, "Vendor", h("input", { name: "vendor" })),
    h("label", {}, "Model", h("input", { name: "model" })),
    h("label", {}, "Version", h("input", { name: "version" })),
    h("label", {}, "Online", h("select", { name: "online" },
      h("option", { value: "" }, "any"), h("option", { value: "true" }, "online"),
      h("option", { value: "false" }, "offline"))),
    h("label", {}, "Cell", h("input", { name: "cell", type: "number", min: 0 })),
    h("label", {}, "Group", h("select", { name: "group" },
      h("option", { value: "" }, "any"),
      groups.map((g) => h("option", { value: g.id }, `${g.name} (${g.vendor} ${g.model})`)))),
    h("button", { type: "submit" }, "Filter"));
  const list = h("div");
  const pages = pager(
    (cursor) => get("/v1/devices", { ...Object.fromEntries(new FormData(filters)), limit: PAGE, cursor }),
    (page) => fill(list, table(COLUMNS, page.items, (d) => d.endpoint)),
  );
  filters.addEventListener("submit", (event) => { event.preventDefault(); pages.go(null); });
  fill(view, h("h1", {}, "Devices"), h("div", { class: "card" }, filters), list, pages.bar);
  await pages.go(null);
}

function fields(entries) {
  return h("dl", { class: "fields" }, entries.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value ?? "—")]));
}

const HISTORY = [
  ["Task", (p) => link(`#/tasks/${encodeURIComponent(p.task_id)}`, p.task_id)],
  ["Attempts", (p) => p.attempts],
  ["Phase", (p) => badge(p.phase)],
  ["Download", (p) => badge(p.download)],
  ["Upgrade", (p) => badge(p.upgrade)],
  ["Result", (p) => p.result && badge(p.result)],
  ["Note", (p) => p.note],
  ["Finished", (p) => time(p.finished_at)],
];

/** A resource's value as read: a single value, or its instances' values. */
function valueOf(resource) {
  if (resource.values) return Object.values(resource.values).map((v) => v.value).join(", ");
  return String(resource.value);
}

/**
 * A button reading `object`'s instance 0 from the device now (a GET: a viewer may too),
 * its resources shown below it; the device must be reachable (a sleeping one is waited for).
 */
function reader(endpoint, object) {
  const out = h("div", { class: "read" });
  const button = h("button", { type: "button", class: "secondary", id: `read-${object}` }, `Read /${object}/0 now`);
  button.addEventListener("click", async () => {
    button.disabled = true;
    fill(out, h("span", { class: "muted" }, "Reading…"));
    try {
      const data = await get(`/v1/devices/${encodeURIComponent(endpoint)}/data`, { path: `/${object}/0`, timeout: 10 });
      const rows = Object.entries(data.resources || {}).map(([id, resource]) => [`/${object}/0/${id}`, valueOf(resource)]);
      fill(out, fields(rows));
    } catch (error) {
      fill(out, h("span", { class: "error" }, error.message));
    } finally {
      button.disabled = false;
    }
  });
  return [button, out];
}

async function renderDevice(view, endpoint) {
  const d = await get(`/v1/devices/${encodeURIComponent(endpoint)}`);
  const registration = d.registration;
  fill(view,
    h("h1", {}, `Device ${d.name}`),
    h("div", { class: "row" },
      h("div", { class: "card" }, h("h2", {}, "Status"), fields([
        ["Endpoint", d.endpoint], ["IMEI", d.imei], ["Online", online(d)],
        ["Last seen", time(d.last_seen)], ["Last surveyed", time(d.last_surveyed)],
        ["Binding", registration?.binding], ["Address", registration?.address],
        ["LwM2M", registration?.lwm2m_version],
        ["Objects", registration?.objects?.join(" ")],
        ["Groups", d.groups.length ? h("span", {}, ...d.groups.map((g) =>
          h("span", {}, link(`#/groups/${encodeURIComponent(g.id)}`, g.id), g.test ? " (test) " : " "))) : null],
      ])),
      h("div", { class: "card" }, h("h2", {}, "Object 3 · Device"), fields([
        ["Manufacturer /3/0/0", d.manufacturer], ["Model /3/0/1", d.model],
        ["Firmware /3/0/3", d.firmware_version], ["Power sources /3/0/6", d.power_sources?.join(", ")],
        ["Battery /3/0/9", d.battery === null ? null : `${d.battery} %`],
        ["Memory free /3/0/10", d.memory_free_kb === null ? null : `${d.memory_free_kb} KiB`],
      ]), reader(d.endpoint, 3)),
      h("div", { class: "card" }, h("h2", {}, "Object 4 · Connectivity"), fields([
        ["Signal /4/0/2", d.signal_dbm === null ? null : `${d.signal_dbm} dBm`],
        ["Cell /4/0/8", d.cell_id],
      ]), reader(d.endpoint, 4)),
      h("div", { class: "card" }, h("h2", {}, "Object 5 · Firmware update"), fields([
        ["Delivery /5/0/9", d.delivery],
      ]), reader(d.endpoint, 5))),
    h("h2", {}, "Upgrade history"),
    table(HISTORY, d.tasks, (p) => p.task_id),
    h("p", { class: "muted" }, "Objects 3, 4 and 5 as the engine read them in its last survey of the device; "
      + "\u201cRead now\u201d asks the device itself."));
}
