// The training data of jobs submitted from this tab, so their page can draw it beside the
// model's prediction without asking the service for a sample of it (GET /jobs/{id}/data).

const byJob = new Map();

export function remember(jobId, data) {
  byJob.set(jobId, data);
}

export function trainingData(jobId) {
  return byJob.get(jobId) || null;
}
