// Statistics (white paper List 9-5) per vendor and module model and per package: devices,
// successes, failures, bytes sent first and again, CoAP bytes on the wire, downloads not
// installed; with the outcome per model and per package as bars.

import { get } from "./api.js";
import { bytes, fill, h, later, percent, redrawer, table } from "./ui.js";
import { legend, stacked } from "./charts.js";

const COUNTERS = [
  ["Devices", (s) => s.devices], ["Successes", (s) => s.successes], ["Failures", (s) => s.failures],
  ["Success rate", (s) => (s.devices ? percent(s.successes / s.devices) : "—")],
  ["Bytes sent", (s) => bytes(s.bytes_first)], ["Bytes sent again", (s) => bytes(s.bytes_resent)],
  ["On the wire", (s) => bytes(s.wire_bytes)], ["Downloaded, not installed", (s) => s.downloads_not_installed],
];

function outcomes(items, label) {
  return stacked(items.map(([name, s]) => ({
    label: name,
    parts: [["up", s.successes], ["down", s.failures], ["rest", Math.max(0, s.devices - s.successes - s.failures)]],
  })), label);
}

export async function render(view, _args, { onEvent }) {
  // Drawn again, at most every two seconds, while progress comes and this view is shown.
  const redraw = redrawer(() => draw(view));
  let due = null;
  onEvent((event) => {
    if (!["task", "device", "device_failed"].includes(event.name) || due) return;
    due = later(() => { due = null; return redraw(); }, 2000);
  });
  await draw(view);
}

async function draw(view) {
  const statistics = await get("/v1/stats");
  const models = statistics.models;
  const packages = statistics.packages;
  const key = [["up", "upgraded"], ["down", "failed"], ["rest", "not finished"]];
  fill(view, h("h1", {}, "Statistics"),
    h("div", { class: "row" },
      h("div", { class: "card" }, h("h2", {}, "Per vendor and model"), legend(key),
        outcomes(models.map((m) => [`${m.vendor} ${m.model}`, m]), "outcome per model")),
      h("div", { class: "card" }, h("h2", {}, "Per package"), legend(key),
        outcomes(packages.map((p) => [`${p.model} → ${p.to_version}`, p]), "outcome per package"))),
    h("div", { class: "card", id: "stats-models" }, h("h2", {}, "Vendors and models"),
      table([["Vendor", (m) => m.vendor], ["Model", (m) => m.model], ...COUNTERS], models, (m) => `${m.vendor}/${m.model}`)),
    h("div", { class: "card", id: "stats-packages" }, h("h2", {}, "Packages"),
      table([["Package", (p) => h("code", {}, p.package_id)], ["Vendor", (p) => p.vendor], ["Model", (p) => p.model],
        ["To version", (p) => p.to_version], ...COUNTERS], packages, (p) => p.package_id)));
}
