// Wires the page together: one store, one camera, one renderer, the pointer handling, the
// panels, the traffic model and the WebSocket. The modules talk through the store's events.
//
//   api.js      fetch wrappers for /api (bearer token from ?token=), errors as ApiError
//   socket.js   the /ws connection: state messages to the store, traffic frames to traffic.js
//   state.js    the store: latest mesh state, pending creations, the drag, the selection
//   view.js     the camera (pan, zoom, fit) between meshsim's positions and canvas pixels
//   render.js   the canvas: a cached layer for the mesh, an overlay for what moves
//   traffic.js  smoothed per-link rates, packet dots, receive pulses
//   events.js   Matrix events: the recent list, homeserver states, bubbles along routes
//   matrix-panel.js  the event list, slow motion, a node's homeserver and its send box
//   client-panel.js  a node's client link (host <-> node), its own or the default
//   interact.js pointer and keyboard: create, drag (throttled moves), select, pan, zoom
//   panels.js   sidebar (link, node, settings), banners, save/load, toasts
//   format.js   units for labels and panels
//   colours.js  the colours, read from style.css's custom properties (defined once there)
//   dom.js      elements built from text (names never go in as HTML)

import { api } from "./api.js";
import { ClientPanel } from "./client-panel.js";
import { MatrixEvents } from "./events.js";
import { Interaction } from "./interact.js";
import { MatrixPanel } from "./matrix-panel.js";
import { Panels } from "./panels.js";
import { Renderer } from "./render.js";
import { connect } from "./socket.js";
import { Store } from "./state.js";
import { Timeline } from "./timeline.js";
import { Traffic } from "./traffic.js";
import { View } from "./view.js";

const canvas = document.getElementById("canvas");
const store = new Store();
const view = new View();
const traffic = new Traffic();
const events = new MatrixEvents();
const renderer = new Renderer(canvas, store, view, traffic, events);

let fitOnNextState = false;
/** id -> "x,y" as of the previous state, to tell a whole new mesh from a few edits. */
let known = new Map();

const panels = new Panels(store, traffic, {
  deleteNode: (id) => interaction.deleteNode(id),
  loading: () => {
    fitOnNextState = true;
  },
});
const interaction = new Interaction(canvas, store, view, renderer, (e) => panels.toast(e));

/** Node name -> id, for events (which name servers) on the canvas (which draws ids). */
let ids = new Map();
store.addEventListener("state", () => {
  ids = new Map([...store.nodes.values()].map((n) => [n.name, n.id]));
});
const idOf = (name) => ids.get(name);
const latencyOf = (a, b) => store.latency(a, b);
new MatrixPanel(
  store,
  events,
  (id) => {
    events.replay(id, performance.now(), idOf, latencyOf);
    renderer.invalidateOverlay();
  },
  (e) => panels.toast(e),
);
events.addEventListener("workloads", () => renderer.invalidate());
new ClientPanel(store, (e) => panels.toast(e));
const timeline = new Timeline((e) => panels.toast(e));

store.addEventListener("state", () => {
  traffic.forgetMissing((id) => store.nodes.has(id));
  autoFit();
  renderer.invalidate();
});
// A drag step only moves what the overlay draws; the renderer notices a drag start or end.
store.addEventListener("move", () => renderer.invalidateOverlay());
store.addEventListener("selection", () => renderer.invalidate());
view.addEventListener("change", () => renderer.invalidate());

/**
 * Fits the view when a whole mesh arrives at once (a loaded topology, the first state of a
 * running mesh) and part of it is off screen, or when this page loaded a file. Nodes added or
 * moved one by one never move the camera, so a click always lands where the user clicked.
 */
function autoFit() {
  const nodes = [...store.nodes.values()];
  let changed = 0;
  const next = new Map();
  for (const n of nodes) {
    const at = `${n.x},${n.y}`;
    if (known.get(n.id) !== at) changed++;
    next.set(n.id, at);
  }
  known = next;
  const bulk = changed >= 3 && changed * 2 >= nodes.length;
  if ((fitOnNextState && changed > 0) || (bulk && !view.shows(nodes))) {
    fitOnNextState = false;
    view.fit(nodes);
  }
}

new ResizeObserver(() => renderer.resize()).observe(canvas);
renderer.resize();
renderer.start();

connect(
  store,
  (frame) => traffic.onFrame(frame, performance.now(), (a, b) => store.latency(a, b)),
  (ms) => renderer.noteStateCost(ms),
  (msg) => {
    if (msg.type === "events") events.onEvents(msg, performance.now(), idOf, latencyOf);
    else events.onWorkloads(msg);
    renderer.invalidateOverlay();
  },
  (msg) => timeline.onScenario(msg),
);
// The WebSocket's first message carries the state too; this fetch only shows it sooner and
// reports a wrong token or an unreachable server in words.
api
  .state()
  .then((body) => store.applyState(body, null))
  .catch((e) => panels.toast(e));

document.getElementById("fit").addEventListener("click", () => interaction.fit());
setInterval(() => {
  const s = renderer.stats;
  document.getElementById("perf").textContent = s.draws ? `${s.drawMs.toFixed(1)} ms/frame` : "";
}, 1000);

// For the browser test and for anyone debugging: where a world point is on the page.
window.meshsim = {
  /** Matrix event bubbles being drawn now, and servers popping. */
  bubbles: () => ({ moving: events.bubbles.length, pops: events.pops.length }),
  toClient(x, y) {
    const r = canvas.getBoundingClientRect();
    const s = view.toScreen(x, y);
    return { x: r.left + s.x, y: r.top + s.y };
  },
};
