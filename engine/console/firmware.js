// Firmware and packages (white paper List 9-2): upload firmware with a progress bar, make a
// full or delta package from it, upload a package a module maker made, and list both with
// sizes, the delta's ratio to its target image, creation time, and delete where allowed
// (the engine refuses a firmware a package is made from, or a package an unfinished task
// uses, and says so).

import { api, get, upload, withQuery } from "./api.js";
import { action, badge, bytes, fill, form, h, notify, percent, redrawer, select, table, time, uploader } from "./ui.js";

const version = (f) => `${f.vendor} · ${f.model} · ${f.version}`;

export async function render(view) {
  const [firmware, packages] = await Promise.all([get("/v1/firmware"), get("/v1/packages")]);
  const byId = new Map(firmware.map((f) => [f.id, f]));
  const redraw = redrawer(() => render(view));
  fill(view, h("h1", {}, "Firmware and packages"),
    h("div", { class: "row" },
      h("div", { class: "card" }, h("h2", {}, "Upload firmware"), firmwareForm(redraw)),
      h("div", { class: "card" }, h("h2", {}, "Make a package"), packageForm(firmware, redraw))),
    h("div", { class: "card" }, h("h2", {}, "Firmware"), firmwareTable(firmware, redraw)),
    h("div", { class: "card", id: "packages" }, h("h2", {}, "Packages"), packageTable(packages, byId, redraw)),
    h("div", { class: "card" }, h("h2", {}, "Upload a module maker's package"), vendorPackageForm(redraw)));
}

function firmwareForm(done) {
  const file = uploader("image", "Image");
  const el = form({ id: "upload-firmware" }, [
    h("label", {}, "Vendor", h("input", { name: "vendor", required: true })),
    h("label", {}, "Model", h("input", { name: "model", required: true })),
    h("label", {}, "Version", h("input", { name: "version", required: true })),
    h("label", {}, "Reported /3/0/3 (if not the version)", h("input", { name: "reported_version" })),
    file.el,
    h("button", { type: "submit" }, "Upload"),
  ], async (values) => {
    const image = file.input.files[0];
    if (!image) throw new Error("choose an image file");
    const query = Object.fromEntries(["vendor", "model", "version", "reported_version"].map((k) => [k, values.get(k)]));
    const made = await upload(withQuery("/v1/firmware", query), image, file.progress);
    file.done(`Uploaded ${made.version} (${bytes(made.size)}).`);
    notify(`Firmware ${version(made)} uploaded.`, "ok");
    done();
  });
  return el;
}

function packageForm(firmware, done) {
  const options = [["", "—"], ...firmware.map((f) => [f.id, version(f)])];
  return form({ id: "make-package" }, [
    select("Kind", "kind", [["delta", "delta"], ["full", "full"]]),
    select("From (delta base)", "from_firmware", options),
    select("To", "to_firmware", options.slice(1), { required: true }),
    select("Format", "format", [["", "the model's"], ["raw", "raw"], ["signed", "signed"], ["packager", "packager"]]),
    h("button", { type: "submit" }, "Make package"),
  ], async (values) => {
    const body = { kind: values.get("kind"), to_firmware: values.get("to_firmware") };
    if (body.kind === "delta") body.from_firmware = values.get("from_firmware") || null;
    if (values.get("format")) body.format = values.get("format");
    const made = await api("POST", "/v1/packages", body);
    notify(`Package ${made.id} made (${bytes(made.size)}).`, "ok");
    done();
  });
}

function vendorPackageForm(done) {
  const file = uploader("package", "Package file");
  return form({ id: "upload-package" }, [
    h("label", {}, "Vendor", h("input", { name: "vendor", required: true })),
    h("label", {}, "Model", h("input", { name: "model", required: true })),
    select("Kind", "kind", [["full", "full"], ["delta", "delta"]]),
    h("label", {}, "From version (delta)", h("input", { name: "from_version" })),
    h("label", {}, "To version", h("input", { name: "to_version", required: true })),
    file.el,
    h("button", { type: "submit" }, "Upload package"),
  ], async (values) => {
    const bytesFile = file.input.files[0];
    if (!bytesFile) throw new Error("choose a package file");
    const query = Object.fromEntries(["vendor", "model", "kind", "from_version", "to_version"].map((k) => [k, values.get(k)]));
    const made = await upload(withQuery("/v1/packages/upload", query), bytesFile, file.progress);
    file.done(`Kept: ${made.uploaded?.check ?? ""}`);
    notify(`Package ${made.id} uploaded.`, "ok");
    done();
  });
}

function remover(path, what, done) {
  return action("Delete", async () => {
    if (!confirm(`Delete ${what}?`)) return;
    await api("DELETE", path);
    notify(`${what} deleted.`, "ok");
    done();
  }, { class: "danger" });
}

function firmwareTable(firmware, done) {
  return table([
    ["Vendor", (f) => f.vendor], ["Model", (f) => f.model], ["Version", (f) => f.version],
    ["Reports", (f) => f.reported_version ?? f.version], ["Size", (f) => bytes(f.size)],
    ["sha256", (f) => h("code", { title: f.sha256 }, f.sha256.slice(0, 12))],
    ["Uploaded", (f) => time(f.created_at)],
    ["", (f) => remover(`/v1/firmware/${encodeURIComponent(f.id)}`, `firmware ${version(f)}`, done)],
  ], firmware, (f) => f.id);
}

/** A delta's size as a share of its target image (the bytes a device is spared). */
function ratio(p, byId) {
  const target = byId.get(p.to_firmware);
  if (p.kind !== "delta" || !target) return "—";
  return percent(p.size / target.size);
}

function packageTable(packages, byId, done) {
  return table([
    ["Id", (p) => h("code", {}, p.id)], ["Kind", (p) => badge(p.kind)],
    ["Vendor", (p) => p.vendor], ["Model", (p) => p.model],
    ["From", (p) => p.from_version], ["To", (p) => p.to_version], ["Format", (p) => p.format],
    ["Size", (p) => bytes(p.size)], ["Delta / full", (p) => ratio(p, byId)],
    ["Made by", (p) => (p.uploaded ? `module maker${p.uploaded.verified ? " (verified)" : ""}` : "platform")],
    ["Created", (p) => time(p.created_at)],
    ["", (p) => remover(`/v1/packages/${encodeURIComponent(p.id)}`, `package ${p.id}`, done)],
  ], packages, (p) => p.id);
}
