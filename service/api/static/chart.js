// Line charts drawn as SVG by hand (no plotting library, so the page works offline): the loss
// curve of a job, and a 1-input model's fitted function.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 640;
const HEIGHT = 300;
const MARGIN = { left: 64, right: 16, top: 14, bottom: 40 };
// More points than pixels add nothing but work: long histories are thinned to about this many.
const MAX_POINTS = 1500;

function svg(tag, attributes = {}, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

function extent(values) {
  let low = Infinity;
  let high = -Infinity;
  for (const value of values) {
    if (value === null || !Number.isFinite(value)) continue;
    if (value < low) low = value;
    if (value > high) high = value;
  }
  if (low === Infinity) return [0, 1];
  if (low === high) return [low - (Math.abs(low) || 1) * 0.5, high + (Math.abs(high) || 1) * 0.5];
  return [low, high];
}

function linearTicks(low, high, count = 6) {
  const step0 = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= step0) || step0;
  const ticks = [];
  for (let t = Math.ceil(low / step) * step; t <= high + step * 1e-9; t += step) ticks.push(t);
  return ticks;
}

function logTicks(low, high) {
  const ticks = [];
  const first = Math.floor(Math.log10(low));
  const last = Math.ceil(Math.log10(high));
  // Within a decade or two, 1-2-5 steps; across many, powers of ten only.
  const multiples = last - first <= 2 ? [1, 2, 5] : [1];
  for (let p = first; p <= last; p++) {
    for (const m of multiples) {
      const t = m * 10 ** p;
      if (t >= low * 0.999 && t <= high * 1.001) ticks.push(t);
    }
  }
  return ticks.length >= 2 ? ticks : [low, high];
}

function tickLabel(value) {
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e4 || magnitude < 1e-2) return value.toExponential(0);
  return String(Number(value.toPrecision(3)));
}

function thinned(xs, ys) {
  if (xs.length <= MAX_POINTS) return [xs, ys];
  const stride = Math.ceil(xs.length / MAX_POINTS);
  const keepX = [];
  const keepY = [];
  for (let i = 0; i < xs.length; i += stride) {
    keepX.push(xs[i]);
    keepY.push(ys[i]);
  }
  keepX.push(xs[xs.length - 1]);
  keepY.push(ys[ys.length - 1]);
  return [keepX, keepY];
}

/**
 * A chart of one or more series ({label, className, xs, ys, dots, attributes}) on shared axes;
 * `logY` puts the y axis on a log scale (non-positive values are left out there). Series are
 * drawn in order, so the last lies on top; `attributes` go on the series' element (a page
 * finds its lines by them). `legend: false` leaves the legend to the page: a sweep's dozens of
 * trials would not fit in the corner of the plot.
 */
export function lineChart({ series, logY = false, xLabel = "", yLabel = "", xRange = null, legend: withLegend = true }) {
  const root = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: "chart",
    role: "img",
    "aria-label": yLabel,
  });
  const usable = (y) => y !== null && Number.isFinite(y) && (!logY || y > 0);
  const allX = series.flatMap((s) => s.xs);
  const allY = series.flatMap((s) => s.ys.filter(usable));
  const [x0, x1] = xRange || extent(allX);
  let [y0, y1] = extent(logY ? allY.map(Math.log10) : allY);
  if (!logY) {
    const pad = (y1 - y0) * 0.05;
    y0 -= pad;
    y1 += pad;
  }
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const px = (x) => MARGIN.left + ((x - x0) / (x1 - x0 || 1)) * plotW;
  const py = (y) => {
    const v = logY ? Math.log10(y) : y;
    return MARGIN.top + (1 - (v - y0) / (y1 - y0 || 1)) * plotH;
  };

  const axes = svg("g", { class: "axes" });
  const yTicks = logY ? logTicks(10 ** y0, 10 ** y1) : linearTicks(y0, y1, 5);
  for (const t of yTicks) {
    const y = py(t);
    axes.append(svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y, y2: y, class: "grid" }));
    axes.append(svg("text", { x: MARGIN.left - 6, y: y + 4, class: "tick y" }, tickLabel(t)));
  }
  for (const t of linearTicks(x0, x1, 6)) {
    const x = px(t);
    axes.append(svg("line", { x1: x, x2: x, y1: MARGIN.top, y2: HEIGHT - MARGIN.bottom, class: "grid" }));
    axes.append(svg("text", { x, y: HEIGHT - MARGIN.bottom + 16, class: "tick x" }, tickLabel(t)));
  }
  axes.append(svg("rect", { x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH, class: "frame" }));
  axes.append(svg("text", { x: MARGIN.left + plotW / 2, y: HEIGHT - 6, class: "axis-label" }, xLabel));
  const yText = svg("text", { x: 14, y: MARGIN.top + plotH / 2, class: "axis-label" }, yLabel);
  yText.setAttribute("transform", `rotate(-90 14 ${MARGIN.top + plotH / 2})`);
  axes.append(yText);
  root.append(axes);

  const legend = svg("g", { class: "legend" });
  series.forEach((s, index) => {
    const points = [];
    const [xs, ys] = s.dots ? [s.xs, s.ys] : thinned(s.xs, s.ys);
    for (let i = 0; i < xs.length; i++) {
      if (usable(ys[i])) points.push([px(xs[i]), py(ys[i])]);
    }
    if (s.dots) {
      const group = svg("g", { class: `dots ${s.className}`, "data-count": points.length, ...s.attributes });
      for (const [x, y] of points) group.append(svg("circle", { cx: x, cy: y, r: 2.5 }));
      root.append(group);
    } else {
      root.append(
        svg("polyline", {
          class: `line ${s.className}`,
          points: points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "),
          "data-count": s.xs.length,
          ...s.attributes,
        }),
      );
    }
    if (!withLegend) return;
    const ly = MARGIN.top + 14 + index * 16;
    const lx = WIDTH - MARGIN.right - 110;
    legend.append(svg("line", { x1: lx, x2: lx + 18, y1: ly - 4, y2: ly - 4, class: `line ${s.className}` }));
    legend.append(svg("text", { x: lx + 24, y: ly, class: "legend-label" }, s.label));
  });
  if (withLegend) root.append(legend);
  return root;
}
