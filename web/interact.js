// Pointer and keyboard on the canvas: click empty space to add a node, drag a node to move
// it, click a node or link to select it, drag empty space to pan, wheel to zoom.
//
// A press only becomes a drag after the pointer travels a few pixels, so a slightly shaky
// click still counts as a click. Moves go to meshsim while dragging, at most ~20 a second and
// never two at once (so they cannot arrive out of order); the canvas draws the node under the
// pointer and the links of the latest state meanwhile, so it relinks live as the server answers.

import { api } from "./api.js";
import { NODE_R } from "./render.js";

const DRAG_THRESHOLD_PX = 4;
const MOVE_INTERVAL_MS = 50;
const LINK_HIT_PX = 6;

/** Sends one node's moves: throttled, one request in flight, the latest position wins. */
class Mover {
  #id;
  #latest = null;
  #sent = null;
  #inflight = false;
  #timer = null;
  #lastSentAt = -Infinity;
  #finishing = null;
  answer = null;
  error = null;

  constructor(id) {
    this.#id = id;
  }

  want(x, y) {
    this.#latest = { x, y };
    this.#kick();
  }

  /** Sends the last position now (no throttle) and resolves when meshsim has answered it. */
  finish() {
    return new Promise((resolve) => {
      this.#finishing = resolve;
      if (this.#timer) {
        clearTimeout(this.#timer);
        this.#timer = null;
      }
      this.#kick(true);
      this.#settle();
    });
  }

  #unsent() {
    const l = this.#latest;
    return l && !(this.#sent && this.#sent.x === l.x && this.#sent.y === l.y);
  }

  #kick(now = false) {
    if (this.#inflight || this.#timer || !this.#unsent()) return;
    const wait = MOVE_INTERVAL_MS - (performance.now() - this.#lastSentAt);
    if (wait > 0 && !now) {
      this.#timer = setTimeout(() => {
        this.#timer = null;
        this.#kick();
      }, wait);
      return;
    }
    const { x, y } = this.#latest;
    this.#sent = { x, y };
    this.#lastSentAt = performance.now();
    this.#inflight = true;
    api
      .moveNode(this.#id, x, y)
      .then((node) => {
        this.answer = node ?? { id: this.#id, x, y };
        this.error = null;
      })
      .catch((e) => {
        this.error = e;
      })
      .finally(() => {
        this.#inflight = false;
        this.#kick(this.#finishing !== null);
        this.#settle();
      });
  }

  #settle() {
    if (this.#finishing && !this.#inflight && !this.#timer && !this.#unsent()) {
      const resolve = this.#finishing;
      this.#finishing = null;
      resolve(this);
    }
  }
}

export class Interaction {
  #canvas;
  #store;
  #view;
  #renderer;
  #notify;
  /** The press in progress: {kind: "node"|"link"|"empty", ...}. */
  #press = null;
  /** Whether the pointer is over the canvas. */
  #inside = false;

  constructor(canvas, store, view, renderer, notify) {
    this.#canvas = canvas;
    this.#store = store;
    this.#view = view;
    this.#renderer = renderer;
    this.#notify = notify;
    canvas.addEventListener("pointerdown", (e) => this.#down(e));
    canvas.addEventListener("pointermove", (e) => this.#move(e));
    canvas.addEventListener("pointerup", (e) => this.#up(e));
    canvas.addEventListener("pointercancel", (e) => this.#cancel(e));
    canvas.addEventListener("pointerenter", () => (this.#inside = true));
    canvas.addEventListener("pointerleave", () => {
      this.#inside = false;
      this.#setHover(null);
    });
    // The mesh can change under a still pointer (relinks, loads): what it hovers may change too.
    store.addEventListener("state", () => {
      if (this.#inside && !this.#press) this.#setHover(this.#hit(renderer.pointer.x, renderer.pointer.y));
    });
    canvas.addEventListener("wheel", (e) => this.#wheel(e), { passive: false });
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    document.addEventListener("keydown", (e) => this.#key(e));
  }

  #local(e) {
    const r = this.#canvas.getBoundingClientRect();
    return { x: e.clientX - r.left, y: e.clientY - r.top };
  }

  /** The node under a screen point: the nearest within its circle plus a little slack. */
  nodeAt(sx, sy) {
    let best = null;
    let bestD = (NODE_R + 4) ** 2;
    for (const id of this.#store.nodes.keys()) {
      // A node's client glyph selects the node too (its panel has the client link).
      for (const s of [this.#renderer.screenOf(id), this.#renderer.clientAt(id)]) {
        if (!s) continue;
        const d = (s.x - sx) ** 2 + (s.y - sy) ** 2;
        if (d <= bestD) {
          best = id;
          bestD = d;
        }
      }
    }
    return best;
  }

  /** The link under a screen point: the nearest segment within a few pixels. */
  linkAt(sx, sy) {
    let best = null;
    let bestD = LINK_HIT_PX ** 2;
    for (const l of this.#store.links) {
      const p = this.#renderer.screenOf(l.a);
      const q = this.#renderer.screenOf(l.b);
      if (!p || !q) continue;
      const dx = q.x - p.x;
      const dy = q.y - p.y;
      const len2 = dx * dx + dy * dy;
      const t = len2 ? Math.max(0, Math.min(1, ((sx - p.x) * dx + (sy - p.y) * dy) / len2)) : 0;
      const d = (p.x + t * dx - sx) ** 2 + (p.y + t * dy - sy) ** 2;
      if (d <= bestD) {
        best = l;
        bestD = d;
      }
    }
    return best;
  }

  #hit(sx, sy) {
    const id = this.nodeAt(sx, sy);
    if (id !== null) return { kind: "node", id };
    const l = this.linkAt(sx, sy);
    if (l) return { kind: "link", a: l.a, b: l.b };
    return null;
  }

  #down(e) {
    if (e.button !== 0) return;
    this.#canvas.focus();
    this.#canvas.setPointerCapture(e.pointerId);
    const at = this.#local(e);
    const hit = this.#hit(at.x, at.y);
    this.#press = { ...(hit ?? { kind: "empty" }), start: at, last: at, moved: false, mover: null };
    e.preventDefault();
  }

  #move(e) {
    const at = this.#local(e);
    this.#renderer.pointer = at;
    const press = this.#press;
    if (!press) {
      this.#setHover(this.#hit(at.x, at.y));
      this.#renderer.invalidateOverlay();
      return;
    }
    if (!press.moved && Math.hypot(at.x - press.start.x, at.y - press.start.y) < DRAG_THRESHOLD_PX) return;
    if (!press.moved) {
      press.moved = true;
      if (press.kind === "node") {
        this.#store.startDrag(press.id);
        press.mover = new Mover(press.id);
        this.#canvas.classList.add("dragging");
      }
    }
    if (press.kind === "node") {
      const w = this.#view.toWorld(at.x, at.y);
      const x = round(w.x);
      const y = round(w.y);
      this.#store.dragTo(x, y);
      press.mover.want(x, y);
    } else if (press.kind === "empty") {
      this.#view.panBy(at.x - press.last.x, at.y - press.last.y);
    }
    press.last = at;
  }

  async #up(e) {
    const press = this.#press;
    if (!press || e.button !== 0) return;
    this.#press = null;
    this.#canvas.classList.remove("dragging");
    const at = this.#local(e);
    if (press.kind === "node" && press.moved) {
      // Release commits: the last position is sent at once and the drag ends when meshsim
      // has answered it, so the node never jumps back to an older position.
      const mover = await press.mover.finish();
      if (mover.error) this.#notify(mover.error);
      this.#store.endDrag(mover.error ? null : mover.answer);
      return;
    }
    if (press.moved) return;
    if (press.kind === "node") this.#store.select({ kind: "node", id: press.id });
    else if (press.kind === "link") this.#store.select({ kind: "link", a: press.a, b: press.b });
    else this.#create(at);
  }

  #cancel() {
    const press = this.#press;
    this.#press = null;
    this.#canvas.classList.remove("dragging");
    if (press?.kind === "node" && press.moved) {
      press.mover.finish().then((m) => this.#store.endDrag(m.error ? null : m.answer));
    }
  }

  /** Click on empty space: the node shows at once (dashed) and turns solid when meshsim confirms. */
  #create(at) {
    const w = this.#view.toWorld(at.x, at.y);
    const x = round(w.x);
    const y = round(w.y);
    const temp = this.#store.addPending(x, y);
    this.#store.select(null);
    api
      .createNode(x, y, this.#store.newNodeWorkload)
      .then((node) => this.#store.confirmPending(temp, node))
      .catch((err) => {
        this.#store.dropPending(temp);
        this.#notify(err);
      });
  }

  #wheel(e) {
    e.preventDefault();
    const at = this.#local(e);
    // Pixel deltas from touchpads are small and many; line deltas from wheels are coarse.
    const delta = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaY;
    this.#view.zoomAt(at.x, at.y, Math.exp(-delta * 0.0015));
  }

  #key(e) {
    const t = e.target;
    if (t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement) return;
    if (e.key === "Escape") this.#store.select(null);
    else if ((e.key === "Delete" || e.key === "Backspace") && this.#store.selection?.kind === "node") {
      e.preventDefault();
      this.deleteNode(this.#store.selection.id);
    } else if (e.key === "f" || e.key === "F") {
      this.fit();
    }
  }

  deleteNode(id) {
    api
      .deleteNode(id)
      .then(() => {
        if (this.#store.selection?.kind === "node" && this.#store.selection.id === id) this.#store.select(null);
      })
      .catch((err) => this.#notify(err));
  }

  fit() {
    this.#view.fit([...this.#store.nodes.values()]);
  }

  #setHover(hit) {
    const old = this.#renderer.hover;
    const same =
      (old === null && hit === null) ||
      (old && hit && old.kind === hit.kind && old.id === hit.id && old.a === hit.a && old.b === hit.b);
    if (!same) {
      this.#renderer.hover = hit;
      this.#renderer.invalidateOverlay();
    }
    this.#canvas.classList.toggle("over-node", hit?.kind === "node");
    this.#canvas.classList.toggle("over-link", hit?.kind === "link");
  }
}

/** Positions to a tenth of a unit: finer than anyone can place a node, shorter in the API. */
function round(v) {
  return Math.round(v * 10) / 10;
}
