// The WebSocket to meshsim: "state" messages go to the store, "traffic" frames to the
// traffic model, "events" and "workloads" (Matrix) to the events model, "scenario" to the timeline. It reconnects with a growing pause (up to a few seconds) for as long as the
// page is open, so restarting meshsim needs no reload.

import { socketUrl } from "./api.js";

const MAX_BACKOFF_MS = 4000;

/**
 * `onTraffic(frame)` gets each traffic frame; `onStateCost(ms)` how long reading and
 * applying a state message took, which grows with the mesh and competes with drawing;
 * `onMatrix(msg)` each "events" and "workloads" message; `onScenario(msg)` each "scenario"
 * (the timeline).
 */
export function connect(store, onTraffic, onStateCost, onMatrix, onScenario) {
  let backoff = 250;
  const open = () => {
    const ws = new WebSocket(socketUrl());
    ws.addEventListener("open", () => {
      backoff = 250;
      // The meshsim on the other end may have restarted with versions counting from zero.
      store.forgetVersion();
      store.setConnected(true);
    });
    ws.addEventListener("message", (e) => {
      const t0 = performance.now();
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      if (msg.type === "state") {
        store.applyState(msg, msg.version ?? null);
        onStateCost(performance.now() - t0);
      } else if (msg.type === "traffic") {
        onTraffic(msg);
      } else if (msg.type === "events" || msg.type === "workloads") {
        onMatrix(msg);
      } else if (msg.type === "scenario") {
        onScenario(msg);
      }
    });
    ws.addEventListener("close", () => {
      store.setConnected(false);
      setTimeout(open, backoff);
      backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
    });
  };
  open();
}
