// Groups: create one for a vendor and module model chosen from those the engine knows (then
// locked), rename it, list its devices (paged on the server) with remove and test-device
// toggles, and add devices of its model that are not in it yet.

import { api, get } from "./api.js";
import { action, badge, fill, form, h, link, notify, pager, table, time } from "./ui.js";

const PAGE = 50;
const groupPath = (id) => `/v1/groups/${encodeURIComponent(id)}`;

export async function render(view, [id]) {
  if (id) return renderGroup(view, id);
  const [groups, models] = await Promise.all([get("/v1/groups"), get("/v1/models")]);
  const create = form({ id: "new-group" }, [
    h("label", {}, "Name", h("input", { name: "name", required: true })),
    h("label", {}, "Vendor and model", h("select", { name: "model", required: true },
      models.map((m, i) => h("option", { value: i }, `${m.vendor} · ${m.model} (${m.devices} devices)`)))),
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "auto_join" }), "devices join by themselves"),
    h("button", { type: "submit" }, "Create group"),
  ], async (values) => {
    const model = models[Number(values.get("model"))];
    if (!model) throw new Error("choose a vendor and model (none is known yet: devices register, or upload firmware)");
    const group = await api("POST", "/v1/groups", {
      name: values.get("name"), vendor: model.vendor, model: model.model,
      auto_join: values.get("auto_join") === "on",
    });
    notify(`Group ${group.name} created.`, "ok");
    location.hash = `#/groups/${encodeURIComponent(group.id)}`;
  });
  const columns = [
    ["Name", (g) => link(`#/groups/${encodeURIComponent(g.id)}`, g.name)],
    ["Vendor", (g) => g.vendor], ["Model", (g) => g.model],
    ["Devices", (g) => g.device_count], ["Test devices", (g) => g.test_device_count],
    ["Auto join", (g) => (g.auto_join ? "yes" : "no")], ["Created", (g) => time(g.created_at)],
  ];
  fill(view, h("h1", {}, "Groups"),
    h("div", { class: "card" }, h("h2", {}, "New group"), create,
      h("p", { class: "muted" }, "A group's vendor and model are locked once it is made.")),
    table(columns, groups, (g) => g.id));
}

async function renderGroup(view, id) {
  // A group comes with the number of its devices, never the devices: they are paged below,
  // each saying whether it is one of the group's test devices.
  let group = await get(groupPath(id));
  const title = h("h1", {}, `Group ${group.name}`);
  const rename = form({ id: "rename-group" }, [
    h("label", {}, "Name", h("input", { name: "name", value: group.name, required: true })),
    h("button", { type: "submit" }, "Rename"),
  ], async (values) => {
    group = await api("PATCH", groupPath(id), { name: values.get("name") });
    title.textContent = `Group ${group.name}`;
    notify("Renamed.", "ok");
  });
  const isTest = (d) => d.groups.some((g) => g.id === id && g.test);
  const change = async (method, path, endpoint) => {
    group = await api(method, `${groupPath(id)}/${path}`, { endpoints: [endpoint] });
    members.reload();
    candidates.reload();
  };
  const memberList = h("div", { id: "group-members" });
  const members = pager(
    (cursor) => get("/v1/devices", { group: id, limit: PAGE, cursor }),
    (page) => fill(memberList, table([
      ["Endpoint", (d) => link(`#/devices/${encodeURIComponent(d.endpoint)}`, d.endpoint)],
      ["Version", (d) => d.firmware_version], ["Online", (d) => badge(d.online ? "online" : "offline")],
      ["Test device", (d) => (isTest(d) ? badge("test", "ok") : "")],
      ["", (d) => h("span", { class: "actions" },
        isTest(d)
          ? action("Unmark test", () => change("DELETE", "test-devices", d.endpoint), { class: "secondary" })
          : action("Mark test", () => change("POST", "test-devices", d.endpoint), { class: "secondary" }),
        action("Remove", () => change("DELETE", "devices", d.endpoint), { class: "danger" }))],
    ], page.items, (d) => d.endpoint)),
  );
  const candidateList = h("div");
  const candidates = pager(
    (cursor) => get("/v1/devices", { vendor: group.vendor, model: group.model, limit: PAGE, cursor }),
    (page) => fill(candidateList, table([
      ["Endpoint", (d) => d.endpoint], ["Version", (d) => d.firmware_version], ["Cell", (d) => d.cell_id],
      ["", (d) => action("Add", () => change("POST", "devices", d.endpoint), { class: "secondary" })],
    ], page.items, (d) => d.endpoint)),
  );
  const addMany = form({ id: "add-devices" }, [
    h("label", {}, "Endpoints (one a line)", h("textarea", { name: "endpoints" })),
    h("button", { type: "submit" }, "Add these"),
  ], async (values, el) => {
    const endpoints = values.get("endpoints").split(/\s+/).filter(Boolean);
    group = await api("POST", `${groupPath(id)}/devices`, { endpoints });
    el.reset();
    notify(`${endpoints.length} added.`, "ok");
    members.reload();
    candidates.reload();
  });
  const remove = action("Delete group", async () => {
    if (!confirm(`Delete group ${group.name}?`)) return;
    await api("DELETE", groupPath(id));
    location.hash = "#/groups";
  }, { class: "danger" });
  fill(view, title,
    h("div", { class: "card" }, h("p", {}, `${group.vendor} · ${group.model} (locked)`), rename,
      h("div", { class: "actions" }, remove)),
    h("div", { class: "row" },
      h("div", { class: "card" }, h("h2", {}, "Devices in the group"), memberList, members.bar),
      h("div", { class: "card" }, h("h2", {}, `Devices of ${group.vendor} ${group.model}`),
        candidateList, candidates.bar, addMany)));
  await Promise.all([members.go(null), candidates.go(null)]);
}
