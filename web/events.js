// Matrix events as meshsim's observers report them (the WebSocket's "events" and "workloads"
// messages): the recent events with their delivery time to every server, each node's
// homeserver state, and the bubbles that replay each event's journey: a bubble leaves the
// origin when the event arrives somewhere, follows the routed path hop by hop (each hop's
// share of the time is its share of the path's latency) over the measured delivery time,
// slowed by the slow-motion factor, and pops at the server that received it.
//
// Events: "events" (the list changed), "workloads" (a node's homeserver state changed).

/** Events the page keeps (the API keeps more: GET /api/events). */
const KEEP = 200;
/** A journey is drawn at least this long, so a 2 ms delivery is still seen. */
const MIN_TRIP_MS = 500;
/** And at most this long, so a delivery after minutes does not hang on the canvas. */
const MAX_TRIP_MS = 20000;
export const POP_MS = 700;

export class MatrixEvents extends EventTarget {
  /** event id -> the event as the server last sent it */
  byId = new Map();
  /** event ids, oldest first */
  order = [];
  /** node id -> {state: "starting"|"ready"|"failed", detail} */
  workloads = new Map();
  /** Journeys being drawn: {hops: [[a, b, t0, t1]...], dst, end, start} (ms, page clock). */
  bubbles = [];
  /** Servers popping: {id, start, origin} */
  pops = [];
  /** How many times slower than measured the journeys are drawn. */
  slow = 4;
  /** Whether any event came (the run has homeservers). */
  present = false;

  /** event id -> node names whose arrival was drawn */
  #drawn = new Map();

  /**
   * Takes an "events" message. `idOf(name)` maps a node name to its id (or undefined),
   * `latencyOf(a, b)` a link's latency.
   */
  onEvents(msg, now, idOf, latencyOf) {
    this.present = true;
    for (const e of msg.events ?? []) {
      if (!this.byId.has(e.id)) {
        this.order.push(e.id);
        if (this.order.length > KEEP) {
          const old = this.order.shift();
          this.byId.delete(old);
          this.#drawn.delete(old);
        }
      }
      this.byId.set(e.id, e);
      let drawn = this.#drawn.get(e.id);
      if (!drawn) this.#drawn.set(e.id, (drawn = new Set()));
      for (const node of Object.keys(e.seen ?? {})) {
        if (drawn.has(node)) continue;
        drawn.add(node);
        this.#animate(e, node, now, idOf, latencyOf);
      }
    }
    this.emit("events");
  }

  /** Takes a "workloads" message: every node's homeserver state. */
  onWorkloads(msg) {
    this.workloads = new Map((msg.nodes ?? []).map((n) => [n.id, n]));
    this.emit("workloads");
  }

  /** Draws an event's whole journey again, to every server that saw it. */
  replay(eventId, now, idOf, latencyOf) {
    const e = this.byId.get(eventId);
    if (!e) return;
    for (const node of Object.keys(e.seen ?? {})) this.#animate(e, node, now, idOf, latencyOf);
  }

  /** The newest events first, at most `n`. */
  latest(n) {
    return this.order.slice(-n).reverse().map((id) => this.byId.get(id));
  }

  #animate(e, node, now, idOf, latencyOf) {
    const at = idOf(node);
    if (at === undefined) return;
    if (node === e.origin) {
      this.pops.push({ id: at, start: now, origin: true });
      return;
    }
    const path = (e.paths?.[node] ?? []).map(idOf);
    const ms = e.deliveries?.[node];
    if (path.length < 2 || path.some((id) => id === undefined) || ms === undefined) {
      this.pops.push({ id: at, start: now, origin: false });
      return;
    }
    const trip = Math.min(MAX_TRIP_MS, Math.max(MIN_TRIP_MS, ms * this.slow));
    const weights = [];
    for (let i = 0; i + 1 < path.length; i++) weights.push(Math.max(0, latencyOf(path[i], path[i + 1]) ?? 0));
    const total = weights.reduce((s, w) => s + w, 0);
    const hops = [];
    let t = now;
    for (let i = 0; i < weights.length; i++) {
      const share = total > 0 ? weights[i] / total : 1 / weights.length;
      hops.push([path[i], path[i + 1], t, t + trip * share]);
      t += trip * share;
    }
    this.bubbles.push({ hops, dst: at, end: now + trip, start: now });
  }

  /** Drops what has finished; whether anything is still moving. */
  prune(now) {
    const done = this.bubbles.filter((b) => b.end <= now);
    if (done.length) {
      this.bubbles = this.bubbles.filter((b) => b.end > now);
      for (const b of done) this.pops.push({ id: b.dst, start: b.end, origin: false });
    }
    this.pops = this.pops.filter((p) => now - p.start < POP_MS);
    return this.bubbles.length > 0 || this.pops.length > 0;
  }

  emit(type) {
    this.dispatchEvent(new Event(type));
  }
}
