// One job's page: live status and loss curve while it trains, its settings and error, a
// cancel button, and once it succeeded, the fitted function and a prediction box. It follows
// a running job through its event stream (GET /jobs/{id}/events), or polls where there is none.

import { get, post } from "./api.js";
import { lineChart } from "./chart.js";
import { h, loss, number, progress, runtime, seconds, shortId, statusBadge, when } from "./format.js";
import { readEvents } from "./events.js";
import { poll } from "./poll.js";
import { predictBox } from "./predict.js";
import { trainingData } from "./submitted.js";
import { surfaceFigure } from "./surface.js";

const POLL_MS = 500; // without the event stream
const DRAW_MS = 200;
const ACTIVE = new Set(["queued", "running"]);

/** The loss history so far, grown page by page from /loss?from_epoch=N. */
class LossHistory {
  constructor(jobId) {
    this.jobId = jobId;
    this.epochs = [];
    this.train = [];
    this.val = [];
    this.hasVal = false;
  }

  async fetchNew() {
    let grew = false;
    for (;;) {
      const from = this.lastEpoch() + 1;
      const page = await get(`/models/${this.jobId}/loss?from_epoch=${from}`);
      if (page.epochs.length) grew = true;
      this.epochs.push(...page.epochs);
      this.train.push(...page.train_loss);
      this.val.push(...(page.val_loss || page.epochs.map(() => null)));
      this.hasVal = this.hasVal || Boolean(page.val_loss);
      if (page.next_from_epoch === null || page.next_from_epoch === undefined) return grew;
    }
  }

  lastEpoch() {
    return this.epochs.length ? this.epochs[this.epochs.length - 1] : 0;
  }

  /** One epoch from the event stream. */
  append({ epoch, train_loss, val_loss }) {
    this.epochs.push(epoch);
    this.train.push(train_loss);
    this.val.push(val_loss);
    this.hasVal = this.hasVal || (val_loss !== null && val_loss !== undefined);
  }
}

function settingsList(job) {
  const spec = job.spec;
  const t = spec.training;
  const rows = [
    ["task", spec.task],
    ["data", job.dataset_id ? `dataset ${job.dataset_id} (${job.n_rows} rows)` : `${job.n_rows} rows × ${job.n_features} inputs, inline`],
    ["hidden layers", spec.model.hidden_layers.join(", ")],
    ["activation", `${spec.model.activation} (output: ${spec.model.output_activation || "identity"})`],
    ["optimizer", `${t.optimizer}, learning rate ${t.learning_rate}${t.optimizer === "sgd" ? `, momentum ${t.momentum}` : ""}`],
    ["loss", t.loss],
    ["epochs", t.epochs],
    ["batch size", t.batch_size],
    ["validation", t.validation_fraction ? `${t.validation_fraction * 100}% of rows` : "none"],
    ["early stopping", t.early_stopping_patience ? `after ${t.early_stopping_patience} epochs` : "off"],
    ["weight decay", t.weight_decay],
    ["seed", t.seed],
    ["scaling", `inputs ${spec.preprocessing.inputs}, targets ${spec.preprocessing.targets}`],
    ["device", spec.resources.device],
  ];
  return h("dl", { class: "settings", id: "settings" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]));
}

function summary(job) {
  const facts = [
    ["status", statusBadge(job.status)],
    ["progress", progress(job)],
    ["train loss", loss(job.train_loss)],
    ["val loss", loss(job.val_loss)],
    ["time", seconds(runtime(job))],
    ["device", job.device || "–"],
    ["attempts", `${job.attempts}/${job.max_attempts}`],
    ["submitted", when(job.created_at)],
  ];
  return h("div", { class: "facts" }, facts.map(([k, v]) => h("div", { class: "fact" }, h("div", { class: "fact-label" }, k), h("div", { class: "fact-value" }, v))));
}

function metricsList(metrics) {
  const shown = Object.entries(metrics).filter(([, v]) => typeof v === "number" || typeof v === "string");
  return h("dl", { class: "settings metrics" }, shown.flatMap(([k, v]) => [h("dt", {}, k.replaceAll("_", " ")), h("dd", {}, typeof v === "number" ? number(v) : v)]));
}

export function jobView(root, jobId, showError) {
  const title = h("h1", {}, shortId(jobId));
  const cancel = h("button", { type: "button", class: "danger", id: "cancel", hidden: true }, "Cancel job");
  const summaryBox = h("div", { id: "summary" });
  const errorBox = h("div", { id: "job-error", class: "card error-card", hidden: true });
  const warningsBox = h("ul", { class: "warnings", hidden: true });
  const logToggle = h("input", { type: "checkbox", id: "log-scale", checked: true });
  const chartBox = h("div", { id: "loss-chart", class: "chart-box" }, h("p", { class: "empty" }, "Waiting for the first epoch…"));
  const settingsBox = h("div", {});
  const modelBox = h("section", { id: "model", class: "card", hidden: true });
  root.replaceChildren(
    h("div", { class: "page-head" }, h("div", {}, h("a", { href: "#/", class: "muted" }, "← all jobs"), title, h("div", { class: "muted mono" }, jobId)), cancel),
    h("section", { class: "card" }, summaryBox, warningsBox),
    errorBox,
    h(
      "div",
      { class: "columns" },
      h("section", { class: "card wide" }, h("div", { class: "card-head" }, h("h2", {}, "Loss"), h("label", { class: "toggle" }, logToggle, " log scale")), chartBox),
      h("section", { class: "card" }, h("h2", {}, "Settings"), settingsBox),
    ),
    modelBox,
  );

  const history = new LossHistory(jobId);
  const drawChart = () => {
    if (!history.epochs.length) return;
    const series = [{ label: "train", className: "train", xs: history.epochs, ys: history.train }];
    if (history.hasVal) series.push({ label: "validation", className: "val", xs: history.epochs, ys: history.val });
    chartBox.replaceChildren(lineChart({ series, logY: logToggle.checked, xLabel: "epoch", yLabel: "loss" }));
  };
  logToggle.addEventListener("change", drawChart);

  let job = null;
  let modelShown = false;
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      job = await post(`/jobs/${jobId}/cancel`);
    } catch (error) {
      showError(error);
    }
  });

  // The data this tab did not submit comes from the service (a sample of at most 2,000 rows);
  // a job whose data is no longer kept is drawn without it.
  const servedTrainingData = async (id) => {
    try {
      const sample = await get(`/jobs/${id}/data?max_rows=2000`);
      return { x: sample.x, y: sample.y.map((v) => (Array.isArray(v) ? v[0] : v)) };
    } catch (error) {
      return null;
    }
  };

  const showModel = async () => {
    modelShown = true;
    const model = await get(`/models/${jobId}`);
    modelBox.hidden = false;
    modelBox.replaceChildren(h("h2", {}, "Model"), h("div", { class: "columns" }, h("div", { class: "wide", id: "surface-box" }), h("div", {}, h("h3", {}, "Metrics"), metricsList(model.metrics))), predictBox(model));
    const figure = await surfaceFigure(model, trainingData(jobId) || (await servedTrainingData(jobId)));
    const box = modelBox.querySelector("#surface-box");
    if (figure) box.replaceChildren(h("h3", {}, "Fitted function"), figure);
    else box.replaceChildren(h("p", { class: "muted" }, `${model.n_features} inputs: the fitted function is drawn for models with 1 or 2 inputs.`));
  };

  const render = () => {
    title.textContent = job.name || shortId(jobId);
    summaryBox.replaceChildren(summary(job));
    if (!settingsBox.firstChild) settingsBox.replaceChildren(settingsList(job));
    cancel.hidden = !ACTIVE.has(job.status);
    warningsBox.hidden = job.warnings.length === 0;
    warningsBox.replaceChildren(...job.warnings.map((w) => h("li", {}, w)));
    errorBox.hidden = !job.error;
    if (job.error) errorBox.replaceChildren(h("h2", {}, "Error"), h("pre", {}, job.error));
  };
  // The job and any epochs not drawn yet; whether the job is still active.
  const refresh = async () => {
    job = await get(`/jobs/${jobId}`);
    // The epochs first, so the page never shows an ended job beside a curve a few epochs short.
    const grew = await history.fetchNew();
    render();
    if (grew) drawChart();
    showError(null);
    if (job.status === "succeeded" && !modelShown) await showModel();
    return ACTIVE.has(job.status);
  };

  // Epochs stream in faster than a chart needs redrawing: at most a few redraws a second.
  let drawPending = false;
  const scheduleDraw = () => {
    if (drawPending) return;
    drawPending = true;
    setTimeout(() => {
      drawPending = false;
      drawChart();
      render();
    }, DRAW_MS);
  };
  const onEvent = ({ event, data }) => {
    if (event === "epoch" && data.epoch > history.lastEpoch()) {
      history.append(data);
      Object.assign(job, { epoch: data.epoch, train_loss: data.train_loss, val_loss: data.val_loss });
      scheduleDraw();
    } else if (event === "status") {
      refresh().catch(showError);
    }
  };

  let stopped = false;
  let stopPolling = () => {};
  const abort = new AbortController();
  const pollForChanges = () => {
    chartBox.dataset.live = "polling";
    stopPolling = poll(refresh, POLL_MS, showError);
  };
  const follow = async () => {
    try {
      if (!(await refresh())) return; // an ended job changes no more
    } catch (error) {
      if (error.status === 404) {
        root.replaceChildren(h("section", { class: "card" }, h("h2", {}, "No such job"), h("p", {}, error.message), h("a", { href: "#/" }, "← all jobs")));
        return;
      }
      showError(error);
      pollForChanges();
      return;
    }
    chartBox.dataset.live = "events";
    try {
      // The history so far came from /loss, compactly; the stream goes on after its last epoch
      // (its ids are "epoch:status position"; status changes are few, so all are replayed).
      await readEvents(`/jobs/${jobId}/events`, {
        lastEventId: `${history.lastEpoch()}:0`,
        onEvent,
        abort: abort.signal,
      });
      await refresh();
    } catch (error) {
      // No stream (a refused key, a proxy that buffers, an older server): poll instead.
      if (!stopped) pollForChanges();
    }
  };
  follow();
  return () => {
    stopped = true;
    abort.abort();
    stopPolling();
  };
}
