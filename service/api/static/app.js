// The dashboard's entry: the API-key dialog, the banner for errors, and a hash router
// (#/, #/new, #/jobs/{id}, #/sweeps/{id}) that mounts one view at a time and stops the last
// one's polling.

import { forgetKey, onKeyNeeded, storedKey } from "./api.js";
import { jobView } from "./job.js";
import { listView } from "./list.js";
import { submitView } from "./submit.js";
import { sweepView } from "./sweep.js";

const view = document.getElementById("view");
const banner = document.getElementById("banner");
const forgetButton = document.getElementById("forget-key");
const dialog = document.getElementById("key-dialog");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const keyError = document.getElementById("key-error");

function showError(error) {
  banner.hidden = !error;
  banner.textContent = error ? `Cannot reach the service: ${error.message || error}` : "";
}

onKeyNeeded(
  (refused) =>
    new Promise((resolve) => {
      keyError.hidden = !refused;
      keyInput.value = "";
      const submitted = (event) => {
        event.preventDefault();
        const key = keyInput.value.trim();
        if (!key) return;
        keyForm.removeEventListener("submit", submitted);
        dialog.close();
        forgetButton.hidden = false;
        resolve(key);
      };
      keyForm.addEventListener("submit", submitted);
      if (!dialog.open) dialog.showModal();
      keyInput.focus();
    }),
);
// The page cannot work without a key: Escape must not leave it half-open.
dialog.addEventListener("cancel", (event) => event.preventDefault());

forgetButton.hidden = !storedKey();
forgetButton.addEventListener("click", () => {
  forgetKey();
  location.reload();
});

let stopView = () => {};

function route() {
  stopView();
  showError(null);
  const hash = location.hash || "#/";
  const job = hash.match(/^#\/jobs\/([A-Za-z0-9_-]+)$/);
  const sweep = hash.match(/^#\/sweeps\/([A-Za-z0-9_-]+)$/);
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", (link.dataset.nav === "new") === (hash === "#/new") && !job && !sweep);
  }
  if (job) stopView = jobView(view, job[1], showError);
  else if (sweep) stopView = sweepView(view, sweep[1], showError);
  else if (hash === "#/new") stopView = submitView(view, showError);
  else stopView = listView(view, showError);
}

window.addEventListener("hashchange", route);
route();
