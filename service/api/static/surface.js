// What a 1- or 2-input model learned, computed in the browser from its own predictions over
// a grid spanning the inputs it was trained on (the model's input_min..input_max), drawn like
// the seed notebook's panels: a line for one input, a heatmap for two.

import { post } from "./api.js";
import { lineChart } from "./chart.js";
import { h, number } from "./format.js";

const GRID = 64; // heatmap cells per side: 4096 rows in one predict call
const LINE_POINTS = 200;
// Viridis, sampled at five stops: perceptually even and readable in grey.
const STOPS = [
  [68, 1, 84],
  [59, 82, 139],
  [33, 145, 140],
  [94, 201, 98],
  [253, 231, 37],
];
const CLASS_COLOURS = [
  [47, 91, 211], [230, 120, 30], [40, 160, 80], [200, 50, 60], [140, 90, 190],
  [130, 90, 70], [220, 110, 180], [120, 120, 120], [180, 180, 40], [30, 180, 200],
];

function colour(share) {
  const t = Math.min(1, Math.max(0, share)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(t));
  const f = t - i;
  return STOPS[i].map((c, k) => Math.round(c + (STOPS[i + 1][k] - c) * f));
}

function linspace(low, high, count) {
  return Array.from({ length: count }, (_, i) => low + ((high - low) * i) / (count - 1));
}

/** The value each prediction is coloured or plotted by: the first output, or the class. */
function values(model, answer) {
  if (model.task === "classification") {
    return answer.predictions.map((label) => model.classes.indexOf(label));
  }
  return answer.predictions.map((row) => (Array.isArray(row) ? row[0] : row));
}

function inputName(model, index) {
  return model.feature_names ? model.feature_names[index] : `x${index + 1}`;
}

async function lineFigure(model, data) {
  const [low] = model.scalers.input_min;
  const [high] = model.scalers.input_max;
  const xs = linspace(low, high, LINE_POINTS);
  const ys = values(model, await post(`/models/${model.id}/predict`, { inputs: xs.map((x) => [x]) }));
  const series = [];
  if (data) {
    series.push({ label: "training data", className: "data", xs: data.x.map((r) => r[0]), ys: data.y, dots: true });
  }
  series.push({ label: "model", className: "fit", xs, ys });
  return h(
    "figure",
    { class: "surface", "data-kind": "line" },
    lineChart({ series, xLabel: inputName(model, 0), yLabel: "prediction", xRange: [low, high] }),
    h("figcaption", {}, `Prediction over the trained range of ${inputName(model, 0)}`),
  );
}

function heatmap(cells, side, low, high, classification) {
  const canvas = h("canvas", { width: side, height: side, class: "heatmap" });
  const context = canvas.getContext("2d");
  const image = context.createImageData(side, side);
  cells.forEach((value, index) => {
    // Rows of the grid run up the y axis; the canvas's rows run down.
    const column = index % side;
    const row = side - 1 - Math.floor(index / side);
    const rgb = classification
      ? CLASS_COLOURS[value % CLASS_COLOURS.length]
      : colour((value - low) / (high - low || 1));
    image.data.set([...rgb, 255], (row * side + column) * 4);
  });
  context.putImageData(image, 0, 0);
  return canvas;
}

function scatter(model, data, low, high) {
  const size = 256;
  const canvas = h("canvas", { width: size, height: size, class: "heatmap scatter" });
  const context = canvas.getContext("2d");
  const [x0, y0] = model.scalers.input_min;
  const [x1, y1] = model.scalers.input_max;
  const classification = model.task === "classification";
  data.x.forEach((row, i) => {
    const value = classification ? model.classes.indexOf(data.y[i]) : data.y[i];
    const rgb = classification ? CLASS_COLOURS[Math.max(0, value) % CLASS_COLOURS.length] : colour((value - low) / (high - low || 1));
    context.fillStyle = `rgb(${rgb.join(",")})`;
    const x = ((row[0] - x0) / (x1 - x0 || 1)) * (size - 4) + 2;
    const y = (1 - (row[1] - y0) / (y1 - y0 || 1)) * (size - 4) + 2;
    context.fillRect(x - 2, y - 2, 4, 4);
  });
  return canvas;
}

function panel(title, canvas, model) {
  const [x0, y0] = model.scalers.input_min;
  const [x1, y1] = model.scalers.input_max;
  return h(
    "div",
    { class: "panel" },
    h("div", { class: "panel-title" }, title),
    h(
      "div",
      { class: "panel-body" },
      h("div", { class: "y-range" }, h("span", {}, number(y1, 3)), h("span", { class: "axis-name" }, inputName(model, 1)), h("span", {}, number(y0, 3))),
      canvas,
    ),
    h("div", { class: "x-range" }, h("span", {}, number(x0, 3)), h("span", { class: "axis-name" }, inputName(model, 0)), h("span", {}, number(x1, 3))),
  );
}

function legend(model, low, high) {
  if (model.task === "classification") {
    return h(
      "div",
      { class: "legend-classes" },
      model.classes.map((label, i) => {
        const swatch = h("span", { class: "swatch" });
        swatch.style.background = `rgb(${CLASS_COLOURS[i % CLASS_COLOURS.length].join(",")})`;
        return h("span", { class: "legend-class" }, swatch, String(label));
      }),
    );
  }
  return h("div", { class: "colour-bar" }, h("span", {}, number(low, 3)), h("span", { class: "ramp" }), h("span", {}, number(high, 3)));
}

async function heatmapFigure(model, data) {
  const [xl, yl] = model.scalers.input_min;
  const [xh, yh] = model.scalers.input_max;
  const xs = linspace(xl, xh, GRID);
  const ys = linspace(yl, yh, GRID);
  const inputs = ys.flatMap((y) => xs.map((x) => [x, y]));
  const cells = values(model, await post(`/models/${model.id}/predict`, { inputs }));
  const classification = model.task === "classification";
  let low = Math.min(...cells);
  let high = Math.max(...cells);
  if (data && !classification) {
    low = Math.min(low, ...data.y);
    high = Math.max(high, ...data.y);
  }
  const panels = [];
  if (data) panels.push(panel("Training data", scatter(model, data, low, high), model));
  panels.push(panel("Model prediction", heatmap(cells, GRID, low, high, classification), model));
  return h(
    "figure",
    { class: "surface", "data-kind": "heatmap" },
    h("div", { class: "panels" }, panels),
    legend(model, low, high),
  );
}

/** The fitted-function figure of a model with 1 or 2 inputs (null for more). `data` is the
 * training data when this tab submitted the job (the API does not serve it back). */
export async function surfaceFigure(model, data) {
  if (model.n_features === 1) return lineFigure(model, data);
  if (model.n_features === 2) return heatmapFigure(model, data);
  return null;
}
