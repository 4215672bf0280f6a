// The form that submits a job: a CSV pasted or uploaded (parsed here, sent as inline data
// with its column names), the network and the training settings.

import { ApiError, post } from "./api.js";
import { isNumeric, parseCsv } from "./csv.js";
import { h } from "./format.js";
import { remember } from "./submitted.js";

const ACTIVATIONS = ["tanh", "relu", "gelu", "sigmoid", "silu", "leaky_relu", "elu", "softplus", "identity"];

function field(label, control, hint) {
  return h("label", { class: "field" }, h("span", { class: "field-label" }, label), control, hint ? h("span", { class: "hint" }, hint) : null);
}

function select(id, options, chosen) {
  return h("select", { id, name: id }, options.map(([value, text]) => h("option", { value, selected: value === chosen }, text)));
}

function numberInput(id, value, attributes = {}) {
  return h("input", { id, name: id, type: "number", value, required: true, ...attributes });
}

/** The job body from the parsed CSV and the form's values; throws an Error on a bad value. */
function jobBody(table, form) {
  const target = table.header.indexOf(form.target.value);
  const inputs = table.header.map((_, i) => i).filter((i) => i !== target);
  if (inputs.length === 0) throw new Error("the CSV needs at least one input column besides the target");
  for (const i of inputs) {
    if (!isNumeric(table.rows, i)) throw new Error(`input column "${table.header[i]}" must hold numbers only`);
  }
  const numericTarget = isNumeric(table.rows, target);
  const task = form.task.value === "auto" ? (numericTarget ? "regression" : "classification") : form.task.value;
  if (task === "regression" && !numericTarget) throw new Error(`target column "${table.header[target]}" must hold numbers for regression`);
  const x = table.rows.map((row) => inputs.map((i) => Number(row[i])));
  const labels = table.rows.map((row) => row[target]);
  const allInts = numericTarget && labels.every((v) => Number.isInteger(Number(v)));
  const y = task === "regression" ? labels.map((v) => [Number(v)]) : labels.map((v) => (allInts ? Number(v) : v));
  const layers = form.layers.value.split(/[\s,]+/).filter(Boolean).map(Number);
  if (layers.length === 0 || layers.some((n) => !Number.isInteger(n) || n < 1)) throw new Error("hidden layers: whole numbers such as 80 or 64, 64");
  const body = {
    task,
    data: { x, y, feature_names: inputs.map((i) => table.header[i]) },
    model: {
      hidden_layers: layers,
      activation: form.activation.value,
      output_activation: task === "classification" || form.output.value === "none" ? null : form.output.value,
    },
    training: {
      optimizer: form.optimizer.value,
      epochs: Number(form.epochs.value),
      learning_rate: Number(form.learning_rate.value),
      batch_size: Number(form.batch_size.value),
      validation_fraction: Number(form.validation_fraction.value),
      seed: Number(form.seed.value),
    },
    preprocessing: { inputs: "standard", targets: task === "regression" && form.scale_targets.checked ? "standard" : "none" },
  };
  if (form.job_name.value.trim()) body.name = form.job_name.value.trim();
  return body;
}

export function submitView(root, showError) {
  const csv = h("textarea", { id: "csv", name: "csv", rows: 10, spellcheck: "false", placeholder: "x1,x2,y\n0.5,-1.0,0.84\n…" });
  const file = h("input", { type: "file", id: "csv-file", accept: ".csv,text/csv" });
  const target = h("select", { id: "target", name: "target" });
  const preview = h("p", { id: "csv-preview", class: "muted" }, "Paste a CSV with a header row, or choose a file.");
  const message = h("p", { id: "submit-message", class: "error", hidden: true });
  const submit = h("button", { type: "submit", id: "submit-job" }, "Submit job");
  let table = null;

  const reparse = () => {
    try {
      table = parseCsv(csv.value);
      const previous = target.value;
      target.replaceChildren(...table.header.map((name) => h("option", { value: name }, name)));
      target.value = table.header.includes(previous) ? previous : table.header[table.header.length - 1];
      preview.textContent = `${table.rows.length} rows; columns: ${table.header.join(", ")}`;
    } catch (error) {
      table = null;
      target.replaceChildren();
      preview.textContent = csv.value.trim() ? `Cannot read the CSV: ${error.message}` : "Paste a CSV with a header row, or choose a file.";
    }
  };
  csv.addEventListener("input", reparse);
  file.addEventListener("change", async () => {
    if (!file.files.length) return;
    csv.value = await file.files[0].text();
    reparse();
  });

  const form = h(
    "form",
    { id: "job-form", class: "card job-form" },
    h("h2", {}, "New training job"),
    h("div", { class: "columns" },
      h("div", { class: "wide" },
        field("Training data (CSV with a header row)", csv),
        h("div", { class: "row" }, file, field("Target column", target)),
        preview,
      ),
      h("div", { class: "form-grid" },
        field("Name", h("input", { id: "job_name", name: "job_name", type: "text", maxlength: 200, placeholder: "optional" })),
        field("Task", select("task", [["auto", "auto (from the target)"], ["regression", "regression"], ["classification", "classification"]], "auto")),
        field("Hidden layers", h("input", { id: "layers", name: "layers", type: "text", value: "80", required: true }), "widths, e.g. 64, 64"),
        field("Activation", select("activation", ACTIVATIONS.map((a) => [a, a]), "tanh")),
        field("Output activation", select("output", [["none", "none (identity)"], ...ACTIVATIONS.map((a) => [a, a])], "none"), "regression only"),
        field("Optimizer", select("optimizer", [["adam", "adam"], ["adamw", "adamw"], ["sgd", "sgd"]], "adam")),
        field("Epochs", numberInput("epochs", 400, { min: 1, step: 1 })),
        field("Learning rate", numberInput("learning_rate", 0.01, { min: 0, step: "any" })),
        field("Batch size", numberInput("batch_size", 200, { min: 1, step: 1 })),
        field("Validation fraction", numberInput("validation_fraction", 0, { min: 0, max: 0.95, step: "any" })),
        field("Seed", numberInput("seed", 0, { min: 0, step: 1 })),
        h("label", { class: "field check" }, h("input", { type: "checkbox", id: "scale_targets", name: "scale_targets" }), " standardise targets (regression)"),
      ),
    ),
    message,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.hidden = true;
    try {
      if (!table) throw new Error("paste or choose a CSV first");
      const body = jobBody(table, form.elements);
      submit.disabled = true;
      const job = await post("/jobs", body);
      remember(job.id, { x: body.data.x, y: body.data.y.map((v) => (Array.isArray(v) ? v[0] : v)) });
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      message.textContent = error instanceof ApiError ? `${error.kind}: ${error.message}` : error.message;
      message.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  root.replaceChildren(form);
  return () => {};
}
