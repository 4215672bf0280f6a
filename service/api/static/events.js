// Server-Sent Events read through fetch(): EventSource cannot send the Authorization header.

import { ApiError, storedKey } from "./api.js";

/** Each complete event ({event, data, id}) in a chunk of the stream, and the unfinished rest. */
function parseEvents(buffer) {
  const blocks = buffer.split(/\r?\n\r?\n/);
  const rest = blocks.pop();
  const events = [];
  for (const block of blocks) {
    const event = { event: "message", data: "", id: null };
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith(":")) continue; // a keep-alive comment
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (name === "event") event.event = value;
      else if (name === "data") data.push(value);
      else if (name === "id") event.id = value;
    }
    if (data.length) {
      event.data = JSON.parse(data.join("\n"));
      events.push(event);
    }
  }
  return [events, rest];
}

/**
 * Reads the stream at `path`, calling onEvent for each event until it ends (resolves) or
 * fails (rejects: an ApiError when refused, else the network's error). `abort` stops it.
 */
export async function readEvents(path, { lastEventId = null, onEvent, onOpen = () => {}, abort }) {
  const headers = { Accept: "text/event-stream" };
  const key = storedKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  const response = await fetch(path, { headers, signal: abort });
  if (!response.ok || !response.body) {
    throw new ApiError(response.status, await response.json().catch(() => null));
  }
  onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    let events;
    [events, buffer] = parseEvents(buffer + value);
    for (const event of events) onEvent(event);
  }
}
