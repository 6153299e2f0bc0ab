// What the page knows: the latest mesh state from meshsim, plus what the user is doing to it
// right now (nodes being created, a node being dragged, the selection). Everything else reads
// from here and listens for its events; nothing else keeps its own copy of the mesh.
//
// Events: "state" (nodes or links changed), "move" (a dragged node moved locally),
// "selection", "connection".

export const LINK_FIELDS = ["latency_ms", "jitter_ms", "bandwidth_bps", "loss_pct"];
export const CLIENT_FIELDS = ["latency_ms", "jitter_ms", "loss_pct", "bandwidth_up_bps", "bandwidth_down_bps"];
/** The host, as an end of client links in traffic frames. */
export const HOST_ID = 0;

/** How long a node confirmed by POST stays drawn while no state message includes it yet. */
const CONFIRMED_GRACE_MS = 3000;

export function linkKey(a, b) {
  return a < b ? `${a}-${b}` : `${b}-${a}`;
}

export class Store extends EventTarget {
  settings = null;
  /** How meshsim was started: {backend, workload}; fixed for the run. */
  run = null;
  /** What a node added by a click runs: null (the run's workload) or "none". */
  newNodeWorkload = null;
  /** id -> {id, name, x, y, ip, mac, workload} */
  nodes = new Map();
  links = [];
  /** node id -> index of its partitioned side; the rest are not listed. */
  sides = new Map();
  /** linkKey -> link */
  linkByKey = new Map();
  /** node id -> its links */
  linksByNode = new Map();
  delaysEnforced = true;
  /** The host's end of the client links ({id: 0, name, ip, mac}); null without them. */
  host = null;
  /** Client links: {default: link, nodes: {id: link}} (link: latency_ms, jitter_ms, loss_pct, bandwidth_up_bps, bandwidth_down_bps). */
  clients = { default: null, nodes: {} };
  /** The version of the last WebSocket state applied; null before the first. */
  version = null;
  connected = false;

  /** Nodes clicked into existence whose POST has not answered: temp id -> {x, y}. */
  pending = new Map();
  /** Nodes the POST answered but no state has shown yet: id -> {node, at}. */
  confirmed = new Map();
  /** The node under the pointer while dragging: {id, x, y} in world coordinates. */
  drag = null;
  /** null | {kind: "node", id} | {kind: "link", a, b} */
  selection = null;

  #nextTemp = 1;

  /**
   * Takes a state body (GET /api/state or a WebSocket "state" message). A WebSocket message
   * older than the one applied is dropped; a fetched state (no version) only fills in before
   * the first WebSocket state, so it can never overwrite a newer one.
   */
  applyState(body, version) {
    if (version == null) {
      if (this.version != null) return;
    } else {
      if (this.version != null && version <= this.version) return;
      this.version = version;
    }
    this.settings = body.settings ?? this.settings;
    this.run = body.run ?? this.run;
    // A restarted meshsim may have no workload to turn off.
    if (this.run?.workload === "none") this.newNodeWorkload = null;
    this.delaysEnforced = body.delays_enforced !== false;
    this.host = body.host ?? null;
    this.clients = body.clients ?? { default: null, nodes: {} };
    // node id -> the index of its partitioned side (nodes with the rest are not listed).
    this.sides = new Map();
    (body.partitions ?? []).forEach((side, i) => side.forEach((id) => this.sides.set(id, i)));

    const nodes = new Map();
    for (const n of body.nodes ?? []) nodes.set(n.id, n);
    const now = performance.now();
    for (const [id, c] of this.confirmed) {
      if (nodes.has(id) || now - c.at > CONFIRMED_GRACE_MS) this.confirmed.delete(id);
      else nodes.set(id, c.node);
    }
    this.nodes = nodes;
    this.#setLinks(body.links ?? []);
    this.#dropStaleSelection();
    this.emit("state");
  }

  /** A WebSocket that reconnects may reach a restarted meshsim whose versions start again. */
  forgetVersion() {
    this.version = null;
  }

  #setLinks(links) {
    this.links = links;
    this.linkByKey = new Map();
    this.linksByNode = new Map();
    for (const l of links) {
      this.linkByKey.set(linkKey(l.a, l.b), l);
      for (const id of [l.a, l.b]) {
        let list = this.linksByNode.get(id);
        if (!list) this.linksByNode.set(id, (list = []));
        list.push(l);
      }
    }
  }

  #dropStaleSelection() {
    const s = this.selection;
    if (!s) return;
    const gone =
      (s.kind === "node" && !this.nodes.has(s.id)) ||
      (s.kind === "link" && !this.linkByKey.has(linkKey(s.a, s.b)));
    if (gone) this.select(null);
  }

  /** Where a node is drawn: where the user holds it while dragging, else where meshsim has it. */
  pos(id) {
    if (this.drag && this.drag.id === id) return this.drag;
    return this.nodes.get(id);
  }

  link(a, b) {
    return this.linkByKey.get(linkKey(a, b));
  }

  /** Node `id`'s client link: its own, or the default. */
  clientLink(id) {
    return this.clients.nodes?.[id] ?? this.clients.default;
  }

  hasOwnClient(id) {
    return this.clients.nodes?.[id] !== undefined;
  }

  /** The latency of directed link a -> b, client links (the host is id HOST_ID) included. */
  latency(a, b) {
    if (a === HOST_ID) return this.clientLink(b)?.latency_ms ?? 0;
    if (b === HOST_ID) return this.clientLink(a)?.latency_ms ?? 0;
    return this.link(a, b)?.latency_ms ?? 0;
  }

  name(id) {
    return this.nodes.get(id)?.name ?? `n${id}`;
  }

  /**
   * The latency to show for a link while one of its ends is being dragged: meshsim's rule
   * (distance × latency_scale_pct / 100) applied to the live position, unless the latency is
   * pinned. The server's answer replaces it as soon as it arrives.
   */
  shownLatency(link) {
    const d = this.drag;
    if (!d || (link.a !== d.id && link.b !== d.id) || link.pinned?.includes("latency_ms") || !this.settings) {
      return link.latency_ms;
    }
    const p = this.pos(link.a);
    const q = this.pos(link.b);
    if (!p || !q) return link.latency_ms;
    return (Math.hypot(p.x - q.x, p.y - q.y) * this.settings.latency_scale_pct) / 100;
  }

  addPending(x, y) {
    const temp = this.#nextTemp++;
    this.pending.set(temp, { x, y });
    this.emit("state");
    return temp;
  }

  /** The POST answered: the node is real, even if no state message has shown it yet. */
  confirmPending(temp, node) {
    this.pending.delete(temp);
    if (node && !this.nodes.has(node.id)) {
      this.confirmed.set(node.id, { node, at: performance.now() });
      this.nodes.set(node.id, node);
    }
    this.emit("state");
  }

  dropPending(temp) {
    this.pending.delete(temp);
    this.emit("state");
  }

  startDrag(id) {
    const n = this.nodes.get(id);
    if (!n) return;
    this.drag = { id, x: n.x, y: n.y };
    this.emit("move");
  }

  dragTo(x, y) {
    if (!this.drag) return;
    this.drag.x = x;
    this.drag.y = y;
    this.emit("move");
  }

  /** Ends a drag; `committed` is the node as meshsim answered the last move, if it did. */
  endDrag(committed) {
    if (committed && this.nodes.has(committed.id)) {
      this.nodes.set(committed.id, { ...this.nodes.get(committed.id), x: committed.x, y: committed.y });
    }
    this.drag = null;
    this.emit("state");
  }

  select(selection) {
    this.selection = selection;
    this.emit("selection");
  }

  isSelectedLink(l) {
    const s = this.selection;
    return s?.kind === "link" && linkKey(s.a, s.b) === linkKey(l.a, l.b);
  }

  setConnected(up) {
    if (this.connected === up) return;
    this.connected = up;
    this.emit("connection");
  }

  emit(type) {
    this.dispatchEvent(new Event(type));
  }
}
