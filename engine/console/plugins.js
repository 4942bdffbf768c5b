// Plugins: the bindings of each kind (the defaults, and those per vendor and model) with their
// settings, editable; a component uploaded and bound; a model's plugin unbound or a default
// reset to the embedded one. And the package format bound to each model.

import { api, get, upload, withQuery } from "./api.js";
import { action, fill, form, h, notify, redrawer, select, table, uploader } from "./ui.js";

const KINDS = ["policy", "capability", "differ", "packager"];

/** The binding's own URL: its kind, and its vendor and model when it has them. */
function bindingPath(b) {
  const parts = [b.kind, b.vendor, b.model].filter((p) => p !== null && p !== undefined);
  return `/v1/plugins/${parts.map(encodeURIComponent).join("/")}`;
}

/** `key=value` lines as settings. */
function settingsOf(text) {
  const settings = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`a setting is key=value, not "${line}"`);
    settings[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return settings;
}

const settingsText = (settings) => Object.entries(settings).map(([k, v]) => `${k}=${v}`).join("\n");

function settingsEditor(binding, done) {
  return form({ class: "inline settings" }, [
    h("textarea", { name: "settings", value: settingsText(binding.settings), rows: 2 }),
    h("button", { type: "submit", class: "secondary" }, "Save"),
  ], async (values) => {
    await api("PATCH", bindingPath(binding), { settings: settingsOf(values.get("settings")) });
    notify("Settings saved.", "ok");
    done();
  });
}

export async function render(view) {
  const [bindings, formats] = await Promise.all([get("/v1/plugins"), get("/v1/formats")]);
  const redraw = redrawer(() => render(view));
  const file = uploader("component", "Component (.wasm)");
  const install = form({ id: "upload-plugin" }, [
    select("Kind", "kind", KINDS.map((k) => [k, k])),
    h("label", {}, "Name", h("input", { name: "name", required: true })),
    h("label", {}, "Vendor (empty: default)", h("input", { name: "vendor" })),
    h("label", {}, "Model", h("input", { name: "model" })),
    h("label", {}, "Settings (key=value a line)", h("textarea", { name: "settings", rows: 2 })),
    file.el,
    h("button", { type: "submit" }, "Upload and bind"),
  ], async (values) => {
    const component = file.input.files[0];
    if (!component) throw new Error("choose a .wasm component");
    const setting = Object.entries(settingsOf(values.get("settings"))).map(([k, v]) => `${k}=${v}`);
    const query = { kind: values.get("kind"), name: values.get("name"), vendor: values.get("vendor"), model: values.get("model"), setting };
    await upload(withQuery("/v1/plugins", query), component, file.progress);
    notify("Plugin bound.", "ok");
    redraw();
  });
  const unbind = (b) => action(b.vendor ? "Unbind" : "Reset to embedded", async () => {
    await api("DELETE", bindingPath(b));
    redraw();
  }, { class: "danger" });
  const format = form({ id: "bind-format" }, [
    h("label", {}, "Vendor", h("input", { name: "vendor", required: true })),
    h("label", {}, "Model", h("input", { name: "model", required: true })),
    select("Format", "format", [["raw", "raw"], ["signed", "signed"], ["packager", "packager"]]),
    h("button", { type: "submit" }, "Bind format"),
  ], async (values) => {
    const path = `/v1/formats/${encodeURIComponent(values.get("vendor"))}/${encodeURIComponent(values.get("model"))}`;
    await api("PUT", path, { format: values.get("format") });
    redraw();
  });
  fill(view, h("h1", {}, "Plugins"),
    h("div", { class: "card" }, h("h2", {}, "Bindings"), table([
      ["Kind", (b) => b.kind], ["Vendor", (b) => b.vendor ?? "(default)"], ["Model", (b) => b.model ?? ""],
      ["Plugin", (b) => b.name], ["Settings", (b) => settingsEditor(b, redraw)], ["", unbind],
    ], bindings, (b) => bindingPath(b))),
    h("div", { class: "card" }, h("h2", {}, "Upload a plugin"), install),
    h("div", { class: "card" }, h("h2", {}, "Package formats per model"), table([
      ["Vendor", (f) => f.vendor], ["Model", (f) => f.model], ["Format", (f) => f.format],
      ["", (f) => action("Unbind", async () => {
        await api("DELETE", `/v1/formats/${encodeURIComponent(f.vendor)}/${encodeURIComponent(f.model)}`);
        redraw();
      }, { class: "danger" })],
    ], formats, (f) => `${f.vendor}/${f.model}`), format));
}
