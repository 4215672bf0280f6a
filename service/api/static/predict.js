// The box to try a model: raw input rows in, POST /models/{id}/predict, predictions out.

import { ApiError, post } from "./api.js";
import { h, number } from "./format.js";

function parseRows(text) {
  return text
    .split(/\n/)
    .map((line) => line.trim())
    .filter((line) => line.length > 0)
    .map((line) => line.split(/[\s,;]+/).map((cell) => (cell.trim() === "" ? NaN : Number(cell))));
}

function resultTable(model, inputs, answer) {
  const names = model.feature_names || inputs[0].map((_, i) => `x${i + 1}`);
  const body = inputs.map((row, i) => {
    const prediction = answer.predictions[i];
    const shown = Array.isArray(prediction) ? prediction.map((v) => number(v, 5)).join(", ") : String(prediction);
    const probability = answer.probabilities ? number(Math.max(...answer.probabilities[i]), 3) : null;
    return h("tr", {}, row.map((v) => h("td", { class: "num" }, String(v))), h("td", { class: "num prediction" }, shown), probability === null ? null : h("td", { class: "num" }, probability));
  });
  const headings = [...names, "prediction", ...(answer.probabilities ? ["probability"] : [])];
  return h("table", { class: "predictions" }, h("thead", {}, h("tr", {}, headings.map((t) => h("th", {}, t)))), h("tbody", {}, body));
}

export function predictBox(model) {
  const middle = model.scalers.input_min.map((low, i) => Number(((low + model.scalers.input_max[i]) / 2).toPrecision(4)));
  const names = model.feature_names || middle.map((_, i) => `x${i + 1}`);
  const input = h("textarea", { id: "predict-input", rows: 4, spellcheck: "false" });
  input.value = [model.scalers.input_min.map((v) => Number(v.toPrecision(4))), middle].map((r) => r.join(", ")).join("\n");
  const result = h("div", { id: "predict-result" });
  const form = h(
    "form",
    { class: "predict", id: "predict-form" },
    h("h3", {}, "Try a prediction"),
    h("p", { class: "muted" }, `One row per line: ${names.join(", ")} (raw values, separated by commas or spaces).`),
    input,
    h("div", {}, h("button", { type: "submit" }, "Predict")),
    result,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const inputs = parseRows(input.value);
    if (inputs.length === 0 || inputs.some((row) => row.some(Number.isNaN))) {
      result.replaceChildren(h("p", { class: "error" }, "Every line needs numbers only."));
      return;
    }
    try {
      const answer = await post(`/models/${model.id}/predict`, { inputs });
      result.replaceChildren(resultTable(model, inputs, answer));
    } catch (error) {
      result.replaceChildren(h("p", { class: "error" }, error instanceof ApiError ? error.message : String(error)));
    }
  });
  return form;
}
