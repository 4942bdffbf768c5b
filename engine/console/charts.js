// Hand-written SVG charts (nothing fetched from elsewhere): a line chart of counts over
// time, horizontal bars, and stacked bars per category. Colours come from the stylesheet
// (classes), since the policy allows no inline style.

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
  for (const child of children) el.append(child instanceof Node ? child : String(child));
  return el;
}

function frame(width, height, label) {
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": label });
}

/** The largest of `values` rounded up to a readable step, at least 1. */
function scaleTop(values) {
  const top = Math.max(1, ...values);
  const magnitude = 10 ** Math.floor(Math.log10(top));
  return Math.ceil(top / magnitude) * magnitude;
}

function clock(millis) {
  const d = new Date(millis);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}:${String(d.getSeconds()).padStart(2, "0")}`;
}

/**
 * Cumulative upgraded and failed devices over time: `points` [{at, upgraded, failed}],
 * `total` devices for the scale.
 */
export function progressOverTime(points, total, label = "progress over time") {
  const [w, h, left, bottom] = [640, 220, 44, 24];
  const chart = frame(w, h, label);
  if (points.length < 2) {
    chart.append(svg("text", { x: w / 2, y: h / 2, "text-anchor": "middle" }, "No device has finished yet."));
    return chart;
  }
  const top = scaleTop([total, ...points.map((p) => p.upgraded + p.failed)]);
  const [t0, t1] = [points[0].at, points[points.length - 1].at];
  const x = (at) => left + ((at - t0) / Math.max(1, t1 - t0)) * (w - left - 10);
  const y = (n) => h - bottom - (n / top) * (h - bottom - 10);
  for (const n of [0, top / 2, top]) {
    chart.append(svg("line", { x1: left, x2: w - 10, y1: y(n), y2: y(n), class: "grid" }));
    chart.append(svg("text", { x: left - 4, y: y(n) + 3, "text-anchor": "end" }, Math.round(n)));
  }
  chart.append(svg("text", { x: left, y: h - 6 }, clock(t0)));
  chart.append(svg("text", { x: w - 10, y: h - 6, "text-anchor": "end" }, clock(t1)));
  const line = (key) => points.map((p, i) => `${i ? "L" : "M"}${x(p.at).toFixed(1)},${y(p[key]).toFixed(1)}`).join("");
  chart.append(svg("path", { d: line("upgraded"), class: "up" }));
  chart.append(svg("path", { d: line("failed"), class: "down" }));
  return chart;
}

/** Horizontal bars: `items` [[label, value]]. */
export function bars(items, label) {
  const [w, row, left] = [640, 22, 150];
  const chart = frame(w, Math.max(row, items.length * row) + 4, label);
  if (!items.length) {
    chart.append(svg("text", { x: w / 2, y: 14, "text-anchor": "middle" }, "Nothing to show."));
    return chart;
  }
  const top = scaleTop(items.map(([, v]) => v));
  items.forEach(([name, value], i) => {
    const y = i * row + 2;
    const width = (value / top) * (w - left - 60);
    chart.append(svg("text", { x: left - 6, y: y + 14, "text-anchor": "end" }, name));
    chart.append(svg("rect", { x: left, y, width: Math.max(1, width), height: row - 6, class: "bar down" }));
    chart.append(svg("text", { x: left + width + 4, y: y + 14 }, value));
  });
  return chart;
}

/**
 * Stacked bars per category: `items` [{label, parts: [[class, value]]}], each bar as long
 * as its total share of the largest.
 */
export function stacked(items, label) {
  const [w, row, left] = [640, 22, 110];
  const chart = frame(w, Math.max(row, items.length * row) + 4, label);
  if (!items.length) {
    chart.append(svg("text", { x: w / 2, y: 14, "text-anchor": "middle" }, "Nothing to show."));
    return chart;
  }
  const totals = items.map((item) => item.parts.reduce((sum, [, v]) => sum + v, 0));
  const top = Math.max(1, ...totals);
  items.forEach((item, i) => {
    const y = i * row + 2;
    let x = left;
    chart.append(svg("text", { x: left - 6, y: y + 14, "text-anchor": "end" }, item.label));
    for (const [kind, value] of item.parts) {
      const width = (value / top) * (w - left - 70);
      if (width > 0) chart.append(svg("rect", { x, y, width, height: row - 6, class: kind }, svg("title", {}, `${kind}: ${value}`)));
      x += width;
    }
    chart.append(svg("text", { x: x + 4, y: y + 14 }, totals[i]));
  });
  return chart;
}

/** A legend: `entries` [[class, text]]. */
export function legend(entries) {
  const el = document.createElement("div");
  el.className = "legend";
  for (const [kind, text] of entries) {
    const key = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.className = kind;
    key.append(swatch, text);
    el.append(key);
  }
  return el;
}
