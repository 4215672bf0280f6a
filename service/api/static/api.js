// Every call to the service goes through here, so the API key is asked for once, kept in
// this tab's sessionStorage and sent with each request.

const KEY_ITEM = "service.apiKey";

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.detail ? body.detail : `HTTP ${status}`);
    this.status = status;
    this.kind = body && body.error ? body.error : "http_error";
  }
}

let askForKey = null;
let pendingKey = null;

/** Registers the function that asks the user for a key (it resolves once one is entered). */
export function onKeyNeeded(ask) {
  askForKey = ask;
}

export function storedKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_ITEM);
}

// Several pollers may meet a 401 at once: they all wait on the one question to the user.
function keyFromUser(refused) {
  if (!pendingKey) {
    pendingKey = askForKey(refused).then((key) => {
      sessionStorage.setItem(KEY_ITEM, key);
      pendingKey = null;
      return key;
    });
  }
  return pendingKey;
}

/** Calls the API with a JSON body (or none); the parsed JSON answer, or an ApiError. */
export async function api(method, path, body) {
  for (;;) {
    const headers = { Accept: "application/json" };
    const key = storedKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 401 && askForKey) {
      if (storedKey() === key) forgetKey();
      await keyFromUser(Boolean(key));
      continue;
    }
    const payload = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, payload);
    return payload;
  }
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);
