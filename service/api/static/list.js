// The front page: every job, live, the sweeps with their best trials, and the trained models.

import { get } from "./api.js";
import { h, loss, number, progress, runtime, seconds, shortId, statusBadge, when } from "./format.js";
import { readEvents } from "./events.js";
import { countsText, describeParams, searchKeys } from "./sweep.js";

const POLL_MS = 1000;
const IDLE_POLL_MS = 15000;
const ACTIVE = new Set(["queued", "running"]);

function jobRow(job) {
  return h(
    "tr",
    { "data-job": job.id, "data-status": job.status, "data-epoch": job.epoch },
    h("td", {}, h("a", { href: `#/jobs/${job.id}` }, job.name || shortId(job.id)), h("div", { class: "muted mono" }, shortId(job.id))),
    h("td", {}, statusBadge(job.status)),
    h("td", {}, progress(job)),
    h("td", { class: "num" }, loss(job.train_loss)),
    h("td", { class: "num" }, loss(job.val_loss)),
    h("td", { class: "num" }, seconds(runtime(job))),
    h("td", {}, job.device || "–"),
    h("td", { class: "muted" }, when(job.created_at)),
  );
}

function quality(metrics) {
  if (metrics.val_r2 !== undefined && metrics.val_r2 !== null) return `val R² ${number(metrics.val_r2, 3)}`;
  if (metrics.train_r2 !== undefined && metrics.train_r2 !== null) return `R² ${number(metrics.train_r2, 3)}`;
  if (metrics.val_accuracy !== undefined && metrics.val_accuracy !== null) return `val acc ${number(metrics.val_accuracy, 3)}`;
  if (metrics.train_accuracy !== undefined && metrics.train_accuracy !== null) return `acc ${number(metrics.train_accuracy, 3)}`;
  return "–";
}

function modelRow(model) {
  const layers = [model.n_features, ...(model.architecture.hidden_layers || []), model.n_outputs];
  return h(
    "tr",
    { "data-model": model.id },
    h("td", {}, h("a", { href: `#/jobs/${model.id}` }, model.name || shortId(model.id))),
    h("td", {}, model.task),
    h("td", { class: "mono" }, layers.join(" → ")),
    h("td", { class: "num" }, loss(model.metrics.final_train_loss)),
    h("td", { class: "num" }, quality(model.metrics)),
    h("td", { class: "num" }, seconds(model.metrics.training_seconds)),
    h("td", { class: "muted" }, when(model.created_at)),
  );
}

function sweepRow(sweep) {
  const best = sweep.best;
  // A summary carries no other trials: the search says which parameters vary.
  const keys = best ? searchKeys(sweep.search).filter((k) => k in best.params) : [];
  return h(
    "tr",
    { "data-sweep": sweep.id, "data-status": sweep.status },
    h("td", {}, h("a", { href: `#/sweeps/${sweep.id}` }, sweep.name || shortId(sweep.id)), h("div", { class: "muted mono" }, shortId(sweep.id))),
    h("td", {}, statusBadge(sweep.status)),
    h("td", {}, `${sweep.n_trials}: ${countsText(sweep.counts)}`),
    h("td", { class: "best-params" }, best ? describeParams(best.params, keys.length ? keys : undefined) : "–"),
    h("td", { class: "num" }, best ? `${loss(best[sweep.best_by])} ${sweep.best_by === "val_loss" ? "val" : "train"}` : "–"),
    h("td", { class: "muted" }, when(sweep.created_at)),
  );
}

function table(headings, rows, empty) {
  if (rows.length === 0) return h("p", { class: "empty" }, empty);
  return h("table", {}, h("thead", {}, h("tr", {}, headings.map((t) => h("th", {}, t)))), h("tbody", {}, rows));
}

export function listView(root, showError) {
  const jobsBox = h("div", { id: "jobs", "data-live": "polling" });
  const sweepsBox = h("div", { id: "sweeps" });
  const modelsBox = h("div", { id: "models" });
  const jobCount = h("span", { class: "muted" });
  const sweepCount = h("span", { class: "muted" });
  // Above the jobs, whose list a sweep's trials fill; shown once there is a sweep.
  const sweepsCard = h("section", { class: "card", id: "sweeps-card", hidden: true }, h("h2", {}, "Sweeps ", sweepCount), sweepsBox);
  root.replaceChildren(
    sweepsCard,
    h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Jobs ", jobCount), h("a", { class: "button", href: "#/new" }, "New job")), jobsBox),
    h("section", { class: "card" }, h("h2", {}, "Models"), modelsBox),
  );

  let finished = null;
  let trialStates = null;
  let active = true;
  const refresh = async () => {
    const page = await get("/jobs?limit=100");
    jobCount.textContent = `(${page.total})`;
    jobsBox.replaceChildren(
      table(["job", "status", "epochs", "train loss", "val loss", "time", "device", "submitted"], page.jobs.map(jobRow), "No jobs yet: submit one with New job."),
    );
    active = page.jobs.some((job) => ACTIVE.has(job.status));
    // Models change only when a job ends: fetch them again then, not every second.
    const ended = page.jobs.filter((j) => j.status === "succeeded").map((j) => j.id).join();
    if (ended !== finished) {
      const models = await get("/models?limit=100");
      modelsBox.replaceChildren(
        table(["model", "task", "layers", "final loss", "quality", "training", "created"], models.models.map(modelRow), "No trained models yet."),
      );
      finished = ended;
    }
    // A sweep's counts and best trial change only when one of its trials changes status: the
    // jobs' statuses (trials are jobs) say when to ask again.
    const states = `${page.total}:${page.jobs.map((j) => `${j.id}=${j.status}`).join()}`;
    if (states !== trialStates) {
      const sweeps = await get("/sweeps?limit=50");
      sweepCount.textContent = `(${sweeps.total})`;
      sweepsCard.hidden = sweeps.total === 0;
      sweepsBox.replaceChildren(table(["sweep", "status", "trials", "best trial", "best loss", "submitted"], sweeps.sweeps.map(sweepRow), "No sweeps on this page."));
      trialStates = states;
    }
  };

  // Progress (epochs) is only in GET /jobs, so it is polled each second while a job is active.
  // With nothing active, the status stream (GET /events) says when something changes, and a
  // slow poll catches what it does not carry (a model deleted elsewhere).
  let stopped = false;
  let streaming = false;
  let streamGone = false;
  let running = false;
  let again = false;
  let timer = null;
  const abort = new AbortController();
  const tick = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    clearTimeout(timer);
    try {
      await refresh();
      showError(null);
      if (!streaming && !streamGone) follow();
    } catch (error) {
      showError(error);
    }
    running = false;
    if (stopped) return;
    if (again) {
      again = false;
      tick();
    } else {
      timer = setTimeout(tick, active || !streaming ? POLL_MS : IDLE_POLL_MS);
    }
  };
  // Opened after the first answer, so the API key is known by then.
  const follow = () => {
    streaming = true;
    readEvents("/events", {
      onOpen: () => (jobsBox.dataset.live = "events"),
      onEvent: ({ event }) => {
        if (event === "status") tick();
      },
      abort: abort.signal,
    })
      .catch(() => {})
      .then(() => {
        if (stopped) return;
        // No stream, or it ended (an older server, a proxy that buffers, a restart): from
        // here on, poll each second.
        streaming = false;
        streamGone = true;
        jobsBox.dataset.live = "polling";
        tick();
      });
  };
  tick();
  return () => {
    stopped = true;
    abort.abort();
    clearTimeout(timer);
  };
}
