// The Matrix parts of the sidebar: the list of recent events (newest first, each with its
// delivery time to every server and the servers still waiting for it; a click replays its
// journey on the canvas), the slow-motion slider, and in the node panel the node's
// homeserver state (with why it crashed and when it restarts), its restart policy, and a box
// to send a message as its test user into the mesh room.

import { api } from "./api.js";
import { el } from "./dom.js";
import * as fmt from "./format.js";

const $ = (id) => document.getElementById(id);
/** Rows the list shows. */
const SHOWN = 40;

export class MatrixPanel {
  #store;
  #events;
  #replay;
  #toast;
  #listQueued = false;
  /** Ticks the "restarting in N s" countdown while the selected node waits to restart. */
  #countdown = null;
  /** The node whose restart policy the select shows. */
  #policyOf = null;

  /** `replay(eventId)` draws an event's journey again; `toast(error)` shows a failure. */
  constructor(store, events, replay, toast) {
    this.#store = store;
    this.#events = events;
    this.#replay = replay;
    this.#toast = toast;
    const slow = $("slow");
    slow.addEventListener("input", () => {
      events.slow = Number(slow.value);
      $("slow-value").textContent = `×${slow.value}`;
    });
    events.slow = Number(slow.value);
    $("node-send").addEventListener("submit", (e) => {
      e.preventDefault();
      this.#send();
    });
    $("node-restart").addEventListener("change", (e) => this.#setRestart(e.target.value));
    events.addEventListener("events", () => this.#queueList());
    events.addEventListener("workloads", () => this.#fillNode());
    store.addEventListener("selection", () => this.#fillNode());
    store.addEventListener("state", () => {
      this.#fillNode();
      this.#queueList();
    });
  }

  /** Many events a second arrive under load; the list is rebuilt at most once a frame. */
  #queueList() {
    if (this.#listQueued) return;
    this.#listQueued = true;
    requestAnimationFrame(() => {
      this.#listQueued = false;
      this.#fillList();
    });
  }

  #fillList() {
    const events = this.#events;
    const run = this.#store.run;
    $("events-panel").hidden = !events.present && !run?.workload?.startsWith("synapse");
    const latest = events.latest(SHOWN);
    $("events-empty").hidden = latest.length > 0;
    $("events-list").replaceChildren(...latest.map((e) => this.#row(e)));
  }

  #row(e) {
    const time = new Date(e.origin_server_ts ?? Object.values(e.seen ?? {})[0] ?? 0);
    const clock = time.toLocaleTimeString([], { hour12: false });
    const who = e.origin ?? "?";
    const what = e.body !== undefined ? `“${e.body}”` : e.type;
    const chips = Object.entries(e.deliveries ?? {})
      .sort((a, b) => a[1] - b[1])
      .map(([node, ms]) => el("span", { class: "delivery", title: `${node} had it ${fmt.ms(ms)} after ${who}` }, `${node} ${fmt.ms(ms)}`));
    for (const node of e.pending ?? []) {
      chips.push(el("span", { class: "delivery pending", title: `${node} is in the room and has not seen it yet` }, `${node} …`));
    }
    const li = el(
      "li",
      { title: `${e.id} in ${e.room}: click to replay its journey` },
      el("span", { class: "what" }, `${clock} ${who} · ${what}`),
      ...chips,
    );
    li.addEventListener("click", () => this.#replay(e.id));
    return li;
  }

  #selected() {
    const sel = this.#store.selection;
    return sel?.kind === "node" ? this.#store.nodes.get(sel.id) : null;
  }

  #fillNode() {
    const node = this.#selected();
    const w = node ? this.#events.workloads.get(node.id) : null;
    $("node-matrix").hidden = !w;
    clearTimeout(this.#countdown);
    if (!w) {
      this.#policyOf = null;
      return;
    }
    const line = $("node-hs-state");
    line.className = `small hs-${w.state}`;
    const words = { ready: "ready: observed, in the mesh room", starting: "starting…", failed: "failed" };
    let state = words[w.state] ?? w.state;
    if (w.state === "restarting") {
      const left = Math.max(0, Math.ceil(((w.restart_at_ms ?? 0) - Date.now()) / 1000));
      state = `crashed, restarting in ${left} s`;
      this.#countdown = setTimeout(() => this.#fillNode(), 1000);
    }
    const counts = w.crashes ? ` (crashed ${w.crashes}×, restarted ${w.restarts}×)` : "";
    // How it ended on the line; the end of its log on hover.
    const [first, ...log] = (w.detail ?? "").split("\n");
    line.textContent = state + counts + (first ? `: ${first}` : "");
    line.title = log.length ? log.join("\n") : "";
    $("node-send").hidden = w.state !== "ready";
    if (this.#policyOf !== node.id) {
      this.#policyOf = node.id;
      this.#loadRestart(node.id);
    }
  }

  /** The node's restart policy into the select: its own, or "as the run". */
  async #loadRestart(id) {
    const select = $("node-restart");
    try {
      const policy = await api.restart(id);
      if (this.#policyOf !== id) return;
      select.options[0].textContent = `as the run (${policy.default})`;
      select.value = policy.own ? policy.restart : "";
      select.parentElement.hidden = false;
    } catch {
      // A run without homeservers has no policies (409): nothing to choose.
      select.parentElement.hidden = true;
    }
  }

  async #setRestart(value) {
    const node = this.#selected();
    if (!node) return;
    try {
      await api.setRestart(node.id, value || null);
    } catch (e) {
      this.#toast(e);
    }
    this.#loadRestart(node.id);
  }

  async #send() {
    const node = this.#selected();
    const input = $("node-send-body");
    const body = input.value;
    if (!node || !body.trim()) return;
    try {
      await api.sendMessage(node.id, body);
      input.value = "";
    } catch (e) {
      this.#toast(e);
    }
  }
}
