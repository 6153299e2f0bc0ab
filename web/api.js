// The HTTP API and the WebSocket address: the only way the page talks to meshsim.
//
// When meshsim runs with --token, the page is opened as /?token=T. Every fetch then carries
// `Authorization: Bearer T`, and the WebSocket (which cannot send headers from a browser)
// carries it as ?token=T.

const token = new URLSearchParams(location.search).get("token");

/** A refusal from the server, carrying its own message and the field it names, if any. */
export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field ?? null;
  }
}

/** `body` is sent as JSON, or as it is when it is a {text} (a scenario file). */
async function call(method, path, body) {
  return (await request(method, path, body)).json;
}

/** The answer's text (a scenario file the server wrote). */
async function callText(method, path) {
  return (await request(method, path)).text;
}

async function request(method, path, body) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  const raw = body !== undefined && typeof body.text === "string";
  if (body !== undefined) headers["Content-Type"] = raw ? "text/plain; charset=utf-8" : "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : raw ? body.text : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, `meshsim is not reachable (${e.message})`, null);
  }
  const text = await response.text();
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      // A proxy or a crash page: show its first line rather than a JSON parse error.
      json = null;
    }
  }
  if (!response.ok) {
    const message = json?.error ?? (text.split("\n")[0] || `${response.status} ${response.statusText}`);
    throw new ApiError(response.status, message, json?.field);
  }
  return { json, text };
}

export const api = {
  state: () => call("GET", "/api/state"),
  // `workload`: "none", or the run's workload; left out (null), the node runs the run's.
  createNode: (x, y, workload) => call("POST", "/api/nodes", workload ? { x, y, workload } : { x, y }),
  moveNode: (id, x, y) => call("PATCH", `/api/nodes/${id}`, { x, y }),
  deleteNode: (id) => call("DELETE", `/api/nodes/${id}`),
  node: (id) => call("GET", `/api/nodes/${id}`),
  pin: (a, b, fields) => call("PUT", `/api/links/${a}/${b}`, fields),
  unpin: (a, b, field) =>
    call("DELETE", `/api/links/${a}/${b}` + (field ? `?field=${encodeURIComponent(field)}` : "")),
  settings: () => call("GET", "/api/settings"),
  putSettings: (settings) => call("PUT", "/api/settings", settings),
  topology: () => call("GET", "/api/topology"),
  putTopology: (doc) => call("PUT", "/api/topology", doc),
  // A node's restart policy: {node, own, restart: "on-failure"|"never"}; null puts it back
  // on the run's default.
  restart: (id) => call("GET", `/api/nodes/${id}/restart`),
  setRestart: (id, restart) =>
    restart ? call("PUT", `/api/nodes/${id}/restart`, { restart }) : call("DELETE", `/api/nodes/${id}/restart`),
  client: (id) => call("GET", `/api/nodes/${id}/client`),
  setClient: (id, link) => call("PUT", `/api/nodes/${id}/client`, link),
  unsetClient: (id) => call("DELETE", `/api/nodes/${id}/client`),
  setClientDefault: (link) => call("PUT", "/api/client", link),
  // {partition: [ids]}, {heal: [ids] | "all"}, {down: [a, b]}, {up: [a, b]}.
  cut: (change) => call("POST", "/api/cuts", change),
  // The timeline: run a scenario file (its text), steer it; record the canvas as one.
  startScenario: (name, text) => call("POST", `/api/scenario?name=${encodeURIComponent(name)}`, { text }),
  pauseScenario: () => call("POST", "/api/scenario/pause"),
  resumeScenario: () => call("POST", "/api/scenario/resume"),
  stopScenario: () => call("DELETE", "/api/scenario"),
  startRecording: () => call("POST", "/api/recording"),
  stopRecording: () => callText("DELETE", "/api/recording"),
  // As the node's test user, into the mesh room.
  sendMessage: (id, body) => call("POST", `/api/nodes/${id}/messages`, { body }),
};

export function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${scheme}//${location.host}/ws${query}`;
}
