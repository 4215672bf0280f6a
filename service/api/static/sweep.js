// One sweep's page: every trial's loss curve on one chart, the best trial marked, a table of
// the trials with their parameters and final losses, and a cancel button while it runs. It
// polls: a sweep has no event stream of its own, and one stream per trial would not scale to
// hundreds of trials.

import { get, post } from "./api.js";
import { lineChart } from "./chart.js";
import { h, loss, progress, shortId, statusBadge, when } from "./format.js";
import { poll } from "./poll.js";

const POLL_MS = 1000;
const ACTIVE = new Set(["queued", "running"]);
// Distinct colours (style.css .series-N); trials beyond them reuse the palette, and the legend
// and the table still tell them apart.
const COLOURS = 10;
// The chart is 640 units wide: a few hundred points per curve keep its shape. With many trials
// each gets fewer, so one redraw stays light.
const CURVE_POINTS = 400;
const ALL_POINTS = 8000;
const MIN_CURVE_POINTS = 20;
/** A parameter's short name: the last part of its dotted path ("training.seed" → "seed"). */
function shortName(path) {
  return path.slice(path.lastIndexOf(".") + 1);
}

function paramValue(value) {
  // 0.001, not 0.00100: a value as the user wrote it; random draws cut to 3 digits.
  if (typeof value === "number") return String(Number(value.toPrecision(3)));
  if (Array.isArray(value)) return `[${value.map(paramValue).join(", ")}]`;
  if (value !== null && typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** The parameter paths worth naming: those whose value differs between trials (all of them
 * when none does), in the order the search lists them. */
export function paramKeys(trials) {
  const keys = [...new Set(trials.flatMap((t) => Object.keys(t.params)))];
  const varying = keys.filter((k) => new Set(trials.map((t) => JSON.stringify(t.params[k]))).size > 1);
  return varying.length ? varying : keys;
}

/** The parameter paths a search varies: a grid's keys with more than one value (all of
 * them when none has), a random search's every key. */
export function searchKeys(search) {
  if (search.grid) {
    const keys = Object.keys(search.grid);
    const varying = keys.filter((k) => search.grid[k].length > 1);
    return varying.length ? varying : keys;
  }
  return search.random ? Object.keys(search.random.space) : [];
}

/** A trial named by its parameters, e.g. "learning_rate 0.01, seed 1". */
export function describeParams(params, keys = Object.keys(params)) {
  // Short names unless two paths end alike (model.dropout and training.dropout).
  const short = new Set(keys.map(shortName)).size === keys.length;
  return keys
    .filter((k) => k in params)
    .map((k) => `${short ? shortName(k) : k} ${paramValue(params[k])}`)
    .join(", ");
}

export function countsText(counts) {
  const order = ["succeeded", "running", "queued", "failed", "cancelled"];
  const parts = order.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`);
  return parts.join(" · ") || "no trials";
}

function searchText(search) {
  if (search.grid) return `grid over ${Object.keys(search.grid).join(", ")}`;
  if (search.random) return `random, ${search.random.n} draws over ${Object.keys(search.random.space).join(", ")}`;
  return "–";
}

/** Every trial's thinned loss curve, fetched in one request (GET /sweeps/{id}/loss) while
 * some curve can still change. */
class Curves {
  constructor(sweepId) {
    this.sweepId = sweepId;
    this.byTrial = new Map(); // trial id → {epochs, train, val, status}
  }

  /** Whether the curve held for a trial is behind what the sweep says of it. */
  stale(trial) {
    const curve = this.byTrial.get(trial.id);
    if (!curve) return trial.epoch > 0 || !ACTIVE.has(trial.status);
    // The answer's own status says whether its epochs are final: an ended job writes no more.
    if (!ACTIVE.has(curve.status)) return false;
    const last = curve.epochs.length ? curve.epochs[curve.epochs.length - 1] : 0;
    return trial.epoch > last || trial.status !== curve.status;
  }

  /** Fetches every curve when one is behind; whether any was. */
  async refresh(trials) {
    if (!trials.some((t) => this.stale(t))) return false;
    const points = Math.max(MIN_CURVE_POINTS, Math.min(CURVE_POINTS, Math.floor(ALL_POINTS / Math.max(1, trials.length))));
    const answer = await get(`/sweeps/${this.sweepId}/loss?max_points=${points}`);
    for (const page of answer.trials) {
      this.byTrial.set(page.id, { epochs: page.epochs, train: page.train_loss, val: page.val_loss, status: page.status });
    }
    return true;
  }

  /** Whether some curve may still grow (so polling goes on after the sweep ended). */
  pending(trials) {
    return trials.some((t) => this.stale(t));
  }

  get(trialId) {
    return this.byTrial.get(trialId);
  }
}

function summaryFacts(sweep, keys) {
  const best = sweep.best;
  const facts = [
    ["status", statusBadge(sweep.status)],
    ["trials", `${sweep.n_trials}: ${countsText(sweep.counts)}`],
    ["best trial", best ? describeParams(best.params, keys) : "–"],
    [{ val_loss: "best val loss", train_loss: "best train loss" }[sweep.best_by] || "best loss", best ? loss(best[sweep.best_by]) : "–"],
    ["search", searchText(sweep.search)],
    ["submitted", when(sweep.created_at)],
  ];
  return h("div", { class: "facts" }, facts.map(([k, v]) => h("div", { class: "fact" }, h("div", { class: "fact-label" }, k), h("div", { class: "fact-value" }, v))));
}

function colourClass(index) {
  return `series-${index % COLOURS}`;
}

function trialRow(trial, index, keys, bestId) {
  const isBest = trial.id === bestId;
  return h(
    "tr",
    { "data-trial": trial.id, "data-status": trial.status, class: isBest ? "best" : null },
    h("td", {}, h("span", { class: `swatch ${colourClass(index)}` }), String(index + 1), isBest ? h("span", { class: "badge best-badge" }, "best") : null),
    keys.map((k) => h("td", { class: "num", "data-param": k }, k in trial.params ? paramValue(trial.params[k]) : "–")),
    h("td", { title: trial.error || null }, statusBadge(trial.status)),
    h("td", {}, progress(trial)),
    h("td", { class: "num final-train" }, loss(trial.train_loss)),
    h("td", { class: "num final-val" }, loss(trial.val_loss)),
    h("td", {}, h("a", { href: `#/jobs/${trial.id}` }, shortId(trial.id))),
  );
}

function trialTable(sweep, keys) {
  const bestId = sweep.best ? sweep.best.id : null;
  const headings = ["trial", ...keys.map(shortName), "status", "epochs", "train loss", "val loss", "job"];
  return h(
    "table",
    { id: "trials" },
    h("thead", {}, h("tr", {}, headings.map((t, i) => h("th", { title: i >= 1 && i <= keys.length ? keys[i - 1] : null }, t)))),
    h("tbody", {}, sweep.trials.map((t, i) => trialRow(t, i, keys, bestId))),
  );
}

function legendList(sweep, keys) {
  const bestId = sweep.best ? sweep.best.id : null;
  // Each trial's loss by the measure that picks the best, so the ranking reads off the legend.
  const by = sweep.best_by || (sweep.trials.some((t) => t.val_loss !== null) ? "val_loss" : "train_loss");
  return h(
    "ul",
    { class: "series-legend", id: "trial-legend", title: by === "val_loss" ? "final validation loss" : "final training loss" },
    sweep.trials.map((t, i) =>
      h(
        "li",
        { "data-trial": t.id, class: t.id === bestId ? "best" : null },
        h("span", { class: `swatch ${colourClass(i)}` }),
        h("span", { class: "legend-name" }, describeParams(t.params, keys), t.id === bestId ? h("span", { class: "best-mark" }, " ★ best") : null),
        h("span", { class: "legend-loss" }, loss(t[by])),
      ),
    ),
  );
}

export function sweepView(root, sweepId, showError) {
  const title = h("h1", {}, shortId(sweepId));
  const cancel = h("button", { type: "button", class: "danger", id: "cancel-sweep", hidden: true }, "Cancel sweep");
  const summaryBox = h("div", { id: "sweep-summary" });
  const logToggle = h("input", { type: "checkbox", id: "log-scale", checked: true });
  const curveChoice = h(
    "select",
    { id: "curve-kind", class: "inline-select", hidden: true },
    h("option", { value: "train" }, "training loss"),
    h("option", { value: "val" }, "validation loss"),
  );
  const chartBox = h("div", { id: "sweep-chart", class: "chart-box", "data-live": "polling" }, h("p", { class: "empty" }, "Waiting for the first epoch…"));
  const legendBox = h("div", {});
  const tableBox = h("div", {});
  root.replaceChildren(
    h("div", { class: "page-head" }, h("div", {}, h("a", { href: "#/", class: "muted" }, "← all jobs and sweeps"), title, h("div", { class: "muted mono" }, sweepId)), cancel),
    h("section", { class: "card" }, summaryBox),
    h(
      "div",
      { class: "columns" },
      h(
        "section",
        { class: "card wide" },
        h("div", { class: "card-head" }, h("h2", {}, "Loss per trial"), h("div", { class: "chart-controls" }, curveChoice, h("label", { class: "toggle" }, logToggle, " log scale"))),
        chartBox,
      ),
      // Beside the chart rather than inside it: a sweep's dozens of names would cover the plot.
      h("section", { class: "card" }, h("h2", {}, "Trials"), legendBox),
    ),
    h("section", { class: "card" }, h("h2", {}, "Parameters and final losses"), tableBox),
  );

  let sweep = null;
  let keys = [];
  const curves = new Curves(sweepId);
  // The trial under the pointer (in the legend or the table): its curve stands out.
  let focused = null;

  const applyFocus = () => {
    const chart = chartBox.querySelector("svg.chart");
    if (!chart) return;
    chart.classList.toggle("focus", focused !== null);
    for (const line of chart.querySelectorAll(".line[data-trial]")) line.classList.toggle("focused", line.dataset.trial === focused);
  };
  const focusOn = (event) => {
    const item = event.target.closest("[data-trial]");
    const next = item ? item.dataset.trial : null;
    if (next !== focused) {
      focused = next;
      applyFocus();
    }
  };
  for (const box of [legendBox, tableBox]) {
    box.addEventListener("mouseover", focusOn);
    box.addEventListener("mouseleave", () => {
      focused = null;
      applyFocus();
    });
  }

  const drawChart = () => {
    const kind = curveChoice.value === "val" && !curveChoice.hidden ? "val" : "train";
    const bestId = sweep.best ? sweep.best.id : null;
    const series = [];
    sweep.trials.forEach((trial, index) => {
      const curve = curves.get(trial.id);
      if (!curve || !curve.epochs.length || (kind === "val" && !curve.val)) return;
      series.push({
        label: describeParams(trial.params, keys),
        className: `${colourClass(index)}${trial.id === bestId ? " best" : ""}`,
        xs: curve.epochs,
        ys: kind === "val" ? curve.val : curve.train,
        attributes: { "data-trial": trial.id },
      });
    });
    if (!series.length) return;
    // The best last, so no other curve hides it.
    series.sort((a, b) => (a.attributes["data-trial"] === bestId) - (b.attributes["data-trial"] === bestId));
    chartBox.replaceChildren(lineChart({ series, logY: logToggle.checked, xLabel: "epoch", yLabel: kind === "val" ? "validation loss" : "training loss", legend: false }));
    applyFocus();
  };
  logToggle.addEventListener("change", () => sweep && drawChart());
  curveChoice.addEventListener("change", () => sweep && drawChart());

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      sweep = await post(`/sweeps/${sweepId}/cancel`);
      render();
    } catch (error) {
      showError(error);
    }
  });

  const render = () => {
    keys = paramKeys(sweep.trials);
    title.textContent = sweep.name || shortId(sweepId);
    summaryBox.replaceChildren(summaryFacts(sweep, keys));
    cancel.hidden = !ACTIVE.has(sweep.status);
    // The validation curves are offered once some trial has them.
    curveChoice.hidden = !sweep.trials.some((t) => t.val_loss !== null && t.val_loss !== undefined);
    legendBox.replaceChildren(legendList(sweep, keys));
    tableBox.replaceChildren(trialTable(sweep, keys));
  };

  // The sweep, then the curves it says have grown; whether anything can still change.
  const refresh = async () => {
    sweep = await get(`/sweeps/${sweepId}`);
    await curves.refresh(sweep.trials);
    render();
    drawChart();
    showError(null);
    const live = ACTIVE.has(sweep.status) || curves.pending(sweep.trials);
    chartBox.dataset.live = live ? "polling" : "ended";
    return live;
  };

  const notFound = (error) =>
    root.replaceChildren(h("section", { class: "card" }, h("h2", {}, "No such sweep"), h("p", {}, error.message), h("a", { href: "#/" }, "← all jobs and sweeps")));
  // Polled until the sweep ended and every curve holds its last epoch; an ended sweep is
  // fetched once.
  return poll(
    async () => {
      try {
        return await refresh();
      } catch (error) {
        if (error.status !== 404) throw error;
        notFound(error);
        return false;
      }
    },
    POLL_MS,
    showError,
  );
}
