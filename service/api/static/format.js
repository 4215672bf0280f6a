// Small formatting helpers shared by the views.

/** An element with attributes and children; strings become text nodes (never HTML). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function loss(value) {
  if (value === null || value === undefined) return "–";
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  return magnitude >= 1e4 || magnitude < 1e-3 ? value.toExponential(3) : value.toPrecision(4);
}

export function number(value, digits = 4) {
  if (value === null || value === undefined) return "–";
  return Number.isInteger(value) ? String(value) : value.toPrecision(digits);
}

export function seconds(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (value < 60) return `${value.toFixed(1)} s`;
  const minutes = Math.floor(value / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(value % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** How long a job has run: until it finished, or until now while it runs. */
export function runtime(job) {
  if (!job.started_at) return null;
  const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
  return Math.max(0, (end - Date.parse(job.started_at)) / 1000);
}

export function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  const ago = (Date.now() - date.getTime()) / 1000;
  if (ago < 60) return "just now";
  if (ago < 3600) return `${Math.floor(ago / 60)} min ago`;
  if (ago < 86400) return `${Math.floor(ago / 3600)} h ago`;
  return date.toLocaleString();
}

export function shortId(id) {
  return id.slice(0, 8);
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

export function progress(job) {
  const share = job.epochs ? Math.min(1, job.epoch / job.epochs) : 0;
  const bar = h("div", { class: "progress-bar" });
  // Through the CSSOM: the page's Content-Security-Policy refuses inline style attributes.
  bar.style.width = `${(share * 100).toFixed(1)}%`;
  return h(
    "div",
    { class: "progress", title: `${Math.round(share * 100)}%` },
    bar,
    h("span", { class: "progress-label" }, `${job.epoch}/${job.epochs}`),
  );
}
