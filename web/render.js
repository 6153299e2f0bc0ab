// The canvas renderer. Two layers, because most frames only animate traffic:
//
// - the static layer (links, their labels, nodes, names, the selection) lives in an offscreen
//   canvas and is redrawn only when something it shows changed: a state message, a drag step,
//   the selection, the camera;
// - every animation frame copies it and draws what moves on top: traffic lanes, packet dots,
//   receive rings, Matrix event bubbles and their pops, the hover highlight and its rate
//   label.
//
// Links are stroked in a few batched paths (one per style) rather than one path each: at 800
// links that is the difference between a few and several hundred stroke calls per redraw.
// Frame times are measured here and published as window.meshsimStats.

import { COLOURS, alpha } from "./colours.js";
import * as fmt from "./format.js";
import { POP_MS } from "./events.js";
import { HOST_ID } from "./state.js";
import { Traffic } from "./traffic.js";

export const NODE_R = 7;
/** Where a node's client (the host's end of its client link) is drawn, from the node. */
export const CLIENT_OFFSET = { x: -20, y: 22 };
/** The seed page's palette (d3's category10), ring colour by node id. */
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const LINK = COLOURS.link;
const PINNED = COLOURS.pinned;
const SELECTED = COLOURS.accent;
const TRAFFIC = COLOURS.traffic;
const DROP = COLOURS.drop;
const EVENT = COLOURS.event;
const BUBBLE_R = 6;
/** A link label needs at least this many screen pixels of link to be readable. */
const LABEL_MIN_PX = 70;
const LABEL_BANDWIDTH_MIN_PX = 150;
const MAX_LABELS = 600;
/**
 * Traffic in each direction runs in its own lane, this far to the right of the centre line:
 * far enough that the link itself (red when pinned) stays visible between the two lanes.
 */
const LANE_PX = 4.5;
const SAMPLES = 120;
const NAME_FONT = "bold 12px system-ui, sans-serif";

/** Which parts of the canvas already hold a node or a label: a coarse grid of cells. */
class Occupancy {
  static CELL = 8;
  constructor(width, height) {
    this.cols = Math.max(1, Math.ceil(width / Occupancy.CELL));
    this.rows = Math.max(1, Math.ceil(height / Occupancy.CELL));
    this.cells = new Uint8Array(this.cols * this.rows);
  }
  #range(x, y, w, h) {
    const c = Occupancy.CELL;
    return [
      Math.max(0, Math.floor(x / c)),
      Math.max(0, Math.floor(y / c)),
      Math.min(this.cols - 1, Math.floor((x + w) / c)),
      Math.min(this.rows - 1, Math.floor((y + h) / c)),
    ];
  }
  free(x, y, w, h) {
    const [c0, r0, c1, r1] = this.#range(x, y, w, h);
    for (let r = r0; r <= r1; r++) for (let c = c0; c <= c1; c++) if (this.cells[r * this.cols + c]) return false;
    return true;
  }
  mark(x, y, w, h) {
    const [c0, r0, c1, r1] = this.#range(x, y, w, h);
    for (let r = r0; r <= r1; r++) for (let c = c0; c <= c1; c++) this.cells[r * this.cols + c] = 1;
  }
  /** A node's circle and its name to the right (about 7 px per character at 12 px bold). */
  markNode(p, name) {
    this.mark(p.x - NODE_R - 1, p.y - NODE_R - 1, 2 * NODE_R + 2, 2 * NODE_R + 2);
    this.mark(p.x + NODE_R + 2, p.y - 6, name.length * 7 + 2, 12);
  }
}

class Rolling {
  #values = [];
  #sum = 0;
  constructor(size) {
    this.size = size;
  }
  push(v) {
    this.#values.push(v);
    this.#sum += v;
    if (this.#values.length > this.size) this.#sum -= this.#values.shift();
  }
  get mean() {
    return this.#values.length ? this.#sum / this.#values.length : 0;
  }
}

export class Renderer {
  /** What the pointer is over: null | {kind: "node", id} | {kind: "link", a, b}. */
  hover = null;
  /** Where the pointer is, in canvas CSS pixels. */
  pointer = { x: 0, y: 0 };

  #canvas;
  #ctx;
  #layer;
  #lctx;
  #store;
  #view;
  #traffic;
  #events;
  #dpr = 1;
  #staticDirty = true;
  /** The node left out of the static layer when it was drawn (being dragged then). */
  #staticLeftOut = null;
  #overlayDirty = true;
  #textWidths = new Map();
  #lastFrameAt = 0;
  #frameMs = new Rolling(SAMPLES);
  #drawMs = new Rolling(SAMPLES);
  #staticMs = new Rolling(SAMPLES);
  #intervalMs = new Rolling(SAMPLES);
  #stateMs = new Rolling(SAMPLES);

  /**
   * Rolling averages over the last frames, for the browser test and the top bar: frameMs (time
   * in each animation frame, idle ones included), drawMs (frames that drew), staticMs (cached
   * layer redraws), intervalMs (between frames: 16.7 when keeping up with 60 Hz), stateMs
   * (reading and applying one state message).
   */
  stats = {
    frameMs: 0,
    frames: 0,
    drawMs: 0,
    draws: 0,
    staticMs: 0,
    staticDraws: 0,
    intervalMs: 0,
    stateMs: 0,
  };

  /** @param {Traffic} traffic @param {import("./events.js").MatrixEvents} events */
  constructor(canvas, store, view, traffic, events) {
    this.#canvas = canvas;
    this.#ctx = canvas.getContext("2d", { alpha: false });
    this.#layer = document.createElement("canvas");
    this.#lctx = this.#layer.getContext("2d");
    this.#store = store;
    this.#view = view;
    this.#traffic = traffic;
    this.#events = events;
    window.meshsimStats = this.stats;
  }

  /** The mesh, the camera or the selection changed: redraw the static layer next frame. */
  invalidate() {
    this.#staticDirty = true;
  }

  /** Only the overlay changed (hover): no need to redraw links and nodes. */
  invalidateOverlay() {
    this.#overlayDirty = true;
  }

  noteStateCost(ms) {
    this.#stateMs.push(ms);
    this.stats.stateMs = this.#stateMs.mean;
  }

  resize() {
    const rect = this.#canvas.getBoundingClientRect();
    this.#dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(rect.width * this.#dpr));
    const h = Math.max(1, Math.round(rect.height * this.#dpr));
    for (const c of [this.#canvas, this.#layer]) {
      c.width = w;
      c.height = h;
    }
    this.#view.resize(rect.width, rect.height);
    this.invalidate();
  }

  start() {
    const loop = (now) => {
      this.#frame(now);
      requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
  }

  #frame(now) {
    const t0 = performance.now();
    if (this.#lastFrameAt) this.#intervalMs.push(now - this.#lastFrameAt);
    this.#lastFrameAt = now;

    // Both prune every frame: no short-circuit.
    const moving = this.#traffic.prune(now) | this.#events.prune(now);
    let drew = false;
    if (this.#staticDirty || (this.#store.drag?.id ?? null) !== this.#staticLeftOut) {
      const s0 = performance.now();
      this.#drawStatic();
      this.#staticMs.push(performance.now() - s0);
      this.stats.staticDraws++;
      this.#staticDirty = false;
      this.#overlayDirty = true;
    }
    if (this.#overlayDirty || moving) {
      this.#drawOverlay(now);
      this.#overlayDirty = moving;
      drew = true;
    }

    const spent = performance.now() - t0;
    this.#frameMs.push(spent);
    if (drew) {
      this.#drawMs.push(spent);
      this.stats.draws++;
    }
    this.stats.frames++;
    this.stats.frameMs = this.#frameMs.mean;
    this.stats.drawMs = this.#drawMs.mean;
    this.stats.staticMs = this.#staticMs.mean;
    this.stats.intervalMs = this.#intervalMs.mean;
  }

  /** Screen position of a node (CSS pixels), following a drag in progress. */
  screenOf(id) {
    const p = this.#store.pos(id);
    return p ? this.#view.toScreen(p.x, p.y) : null;
  }

  /** Screen position of node `id`'s client glyph; null when the run has no client links. */
  clientAt(id) {
    if (!this.#store.host) return null;
    const s = this.screenOf(id);
    return s ? { x: s.x + CLIENT_OFFSET.x, y: s.y + CLIENT_OFFSET.y } : null;
  }

  /**
   * Everything except a node being dragged and its links: those move every frame and are
   * drawn on the overlay, so a drag only redraws this layer when a state message arrives.
   */
  #drawStatic() {
    const ctx = this.#lctx;
    const store = this.#store;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.#layer.width, this.#layer.height);
    ctx.setTransform(this.#dpr, 0, 0, this.#dpr, 0, 0);

    const dragged = store.drag?.id ?? null;
    this.#staticLeftOut = dragged;
    const screen = new Map();
    for (const id of store.nodes.keys()) if (id !== dragged) screen.set(id, this.screenOf(id));
    const links = dragged === null ? store.links : store.links.filter((l) => l.a !== dragged && l.b !== dragged);
    const room = new Occupancy(this.#view.width, this.#view.height);
    for (const [id, p] of screen) room.markNode(p, store.nodes.get(id)?.name ?? "");
    this.#drawLinks(ctx, links, screen, room, false);
    this.#drawClients(ctx, screen);
    this.#drawNodes(ctx, screen);
    this.#drawPending(ctx);
  }

  /** The dragged node and its links, where the pointer is now. */
  #drawDragged(ctx) {
    const store = this.#store;
    const id = store.drag?.id;
    if (id === undefined) return;
    const links = store.linksByNode.get(id) ?? [];
    const screen = new Map([[id, this.screenOf(id)]]);
    for (const l of links) {
      const other = l.a === id ? l.b : l.a;
      const p = this.screenOf(other);
      if (p) screen.set(other, p);
    }
    this.#drawLinks(ctx, links, screen, null, true);
    this.#drawNodes(ctx, new Map([[id, screen.get(id)]]));
  }

  /**
   * Links in two batched paths (plain, pinned), the selected one with a halo, then labels
   * where they fit. `room` (null: place every label) keeps labels off nodes and each other;
   * `trim` stops lines at the node circles, for links drawn over already drawn nodes.
   */
  #drawLinks(ctx, links, screen, room, trim) {
    const store = this.#store;
    const W = this.#view.width;
    const H = this.#view.height;
    const plain = new Path2D();
    const pinned = new Path2D();
    const cut = new Path2D();
    const cutMarks = [];
    const labelled = [];
    let selected = null;
    for (const l of links) {
      let p = screen.get(l.a);
      let q = screen.get(l.b);
      if (!p || !q) continue;
      if ((p.x < 0 && q.x < 0) || (p.y < 0 && q.y < 0) || (p.x > W && q.x > W) || (p.y > H && q.y > H)) continue;
      const len = Math.hypot(q.x - p.x, q.y - p.y);
      if (trim) {
        if (len <= 2 * NODE_R) continue;
        const ux = ((q.x - p.x) / len) * NODE_R;
        const uy = ((q.y - p.y) / len) * NODE_R;
        p = { x: p.x + ux, y: p.y + uy };
        q = { x: q.x - ux, y: q.y - uy };
      }
      const path = l.cut ? cut : l.pinned?.length ? pinned : plain;
      path.moveTo(p.x, p.y);
      path.lineTo(q.x, q.y);
      // A third of the way along, clear of the label at the midpoint.
      if (l.cut) cutMarks.push({ x: p.x + (q.x - p.x) / 3, y: p.y + (q.y - p.y) / 3 });
      const isSelected = store.isSelectedLink(l);
      if (isSelected) selected = [l, p, q];
      if (len >= LABEL_MIN_PX || isSelected) labelled.push({ l, p, q, len, isSelected });
    }
    if (selected) {
      const [, p, q] = selected;
      ctx.strokeStyle = alpha(SELECTED, 0.25);
      ctx.lineWidth = 9;
      ctx.lineCap = "round";
      ctx.beginPath();
      ctx.moveTo(p.x, p.y);
      ctx.lineTo(q.x, q.y);
      ctx.stroke();
      ctx.lineCap = "butt";
    }
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = LINK;
    ctx.stroke(plain);
    ctx.lineWidth = 2.5;
    ctx.strokeStyle = PINNED;
    ctx.stroke(pinned);
    // A cut link (a partition, or down): dashed, with a cross where it is cut.
    if (cutMarks.length) {
      ctx.strokeStyle = COLOURS.drop;
      ctx.lineWidth = 2;
      ctx.setLineDash([6, 5]);
      ctx.stroke(cut);
      ctx.setLineDash([]);
      ctx.lineWidth = 2.5;
      ctx.beginPath();
      for (const m of cutMarks) {
        ctx.moveTo(m.x - 5, m.y - 5);
        ctx.lineTo(m.x + 5, m.y + 5);
        ctx.moveTo(m.x + 5, m.y - 5);
        ctx.lineTo(m.x - 5, m.y + 5);
      }
      ctx.stroke();
    }
    if (selected) {
      const [l, p, q] = selected;
      ctx.lineWidth = 3;
      ctx.strokeStyle = l.pinned?.length ? PINNED : SELECTED;
      ctx.beginPath();
      ctx.moveTo(p.x, p.y);
      ctx.lineTo(q.x, q.y);
      ctx.stroke();
    }
    this.#drawLinkLabels(ctx, labelled, room);
  }

  /**
   * Latency labels (and bandwidth where the link is long) at link midpoints. The selected
   * link, then pinned ones, then the longest get the room first; a label that would cover a
   * node or another label is left out, so a dense mesh stays readable and cheap to draw.
   */
  #drawLinkLabels(ctx, labelled, room) {
    const store = this.#store;
    labelled.sort((x, y) => y.isSelected - x.isSelected || (y.l.pinned?.length > 0) - (x.l.pinned?.length > 0) || y.len - x.len);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    const boxes = [];
    const texts = [];
    for (const { l, p, q, len } of labelled) {
      if (texts.length >= MAX_LABELS) break;
      const latency = fmt.ms(store.shownLatency(l));
      const x = (p.x + q.x) / 2;
      const y = (p.y + q.y) / 2;
      const candidates = len >= LABEL_BANDWIDTH_MIN_PX ? [`${latency} · ${fmt.bps(l.bandwidth_bps)}`, latency] : [latency];
      for (const text of candidates) {
        const w = this.#textWidth(ctx, text) + 6;
        const box = [x - w / 2, y - 7, w, 14];
        if (room && !room.free(...box)) continue;
        room?.mark(...box);
        boxes.push(box);
        texts.push([text, x, y, l.pinned?.length > 0]);
        break;
      }
    }
    // Backgrounds in one pass, then text: fewer state changes than alternating.
    ctx.fillStyle = alpha(COLOURS.canvas, 0.85);
    ctx.beginPath();
    for (const b of boxes) ctx.rect(...b);
    ctx.fill();
    for (const pinnedPass of [false, true]) {
      ctx.fillStyle = pinnedPass ? PINNED : COLOURS.muted;
      for (const [text, x, y, pinned] of texts) if (pinned === pinnedPass) ctx.fillText(text, x, y);
    }
  }

  #drawNodes(ctx, screen) {
    const store = this.#store;
    const sel = store.selection;
    const W = this.#view.width;
    const H = this.#view.height;
    const visible = [];
    for (const [id, p] of screen) {
      if (p.x < -20 || p.y < -20 || p.x > W + 60 || p.y > H + 20) continue;
      visible.push([id, p]);
    }
    const selectedAt = sel?.kind === "node" ? screen.get(sel.id) : null;
    if (selectedAt) {
      ctx.fillStyle = alpha(SELECTED, 0.18);
      ctx.beginPath();
      ctx.arc(selectedAt.x, selectedAt.y, NODE_R + 7, 0, Math.PI * 2);
      ctx.fill();
    }

    // One fill for every node, then one stroke per palette colour.
    // Each partitioned side: a tinted disc behind its nodes, one colour per side.
    if (store.sides.size) {
      for (const [id, p] of visible) {
        const side = store.sides.get(id);
        if (side === undefined) continue;
        ctx.fillStyle = alpha(PALETTE[(side * 3 + 1) % PALETTE.length], 0.22);
        ctx.beginPath();
        ctx.arc(p.x, p.y, NODE_R + 10, 0, Math.PI * 2);
        ctx.fill();
      }
    }
    ctx.fillStyle = COLOURS.node;
    ctx.beginPath();
    for (const [, p] of visible) {
      ctx.moveTo(p.x + NODE_R, p.y);
      ctx.arc(p.x, p.y, NODE_R, 0, Math.PI * 2);
    }
    ctx.fill();
    ctx.lineWidth = 2.5;
    for (let c = 0; c < PALETTE.length; c++) {
      ctx.strokeStyle = PALETTE[c];
      ctx.beginPath();
      for (const [id, p] of visible) {
        if (id % PALETTE.length !== c) continue;
        ctx.moveTo(p.x + NODE_R, p.y);
        ctx.arc(p.x, p.y, NODE_R, 0, Math.PI * 2);
      }
      ctx.stroke();
    }
    // A homeserver that is not ready: dashed amber while it starts, dashed red while it waits
    // to restart after a crash, red when it failed.
    const workloads = this.#events.workloads;
    if (workloads.size) {
      ctx.lineWidth = 2;
      const rings = [
        ["starting", COLOURS.starting, [3, 3]],
        ["restarting", COLOURS.failed, [3, 3]],
        ["failed", COLOURS.failed, []],
      ];
      for (const [state, colour, dash] of rings) {
        ctx.strokeStyle = colour;
        ctx.setLineDash(dash);
        ctx.beginPath();
        for (const [id, p] of visible) {
          if (workloads.get(id)?.state !== state) continue;
          ctx.moveTo(p.x + NODE_R + 4, p.y);
          ctx.arc(p.x, p.y, NODE_R + 4, 0, Math.PI * 2);
        }
        ctx.stroke();
      }
      ctx.setLineDash([]);
    }
    if (selectedAt) {
      ctx.strokeStyle = SELECTED;
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(selectedAt.x, selectedAt.y, NODE_R + 4, 0, Math.PI * 2);
      ctx.stroke();
    }

    // Names with a light halo so they read over links, as the seed drew them.
    ctx.font = NAME_FONT;
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    ctx.lineJoin = "round";
    ctx.lineWidth = 3;
    ctx.strokeStyle = alpha(COLOURS.canvas, 0.9);
    ctx.fillStyle = COLOURS.text;
    for (const [id, p] of visible) {
      const name = store.nodes.get(id)?.name ?? "";
      ctx.strokeText(name, p.x + NODE_R + 3, p.y + 1);
      ctx.fillText(name, p.x + NODE_R + 3, p.y + 1);
    }
  }

  /**
   * Each node's client: a small screen glyph below-left of it, on a dashed line, where the
   * host's end of its client link is. Accent-coloured when the node has its own settings.
   */
  #drawClients(ctx, screen) {
    const store = this.#store;
    if (!store.host) return;
    const W = this.#view.width;
    const H = this.#view.height;
    for (const own of [false, true]) {
      const colour = own ? SELECTED : COLOURS.muted;
      ctx.strokeStyle = colour;
      ctx.fillStyle = COLOURS.node;
      ctx.lineWidth = 1.5;
      ctx.setLineDash([2, 2]);
      const lines = new Path2D();
      const glyphs = new Path2D();
      for (const [id, p] of screen) {
        if (store.hasOwnClient(id) !== own || p.x < -40 || p.y < -40 || p.x > W + 40 || p.y > H + 40) continue;
        const g = { x: p.x + CLIENT_OFFSET.x, y: p.y + CLIENT_OFFSET.y };
        lines.moveTo(p.x, p.y);
        lines.lineTo(g.x, g.y);
        glyphs.roundRect(g.x - 4, g.y - 6, 8, 12, 2);
      }
      ctx.stroke(lines);
      ctx.setLineDash([]);
      ctx.fill(glyphs);
      ctx.stroke(glyphs);
    }
  }

  /** Nodes clicked into existence whose POST has not answered yet: dashed. */
  #drawPending(ctx) {
    const pending = this.#store.pending;
    if (!pending.size) return;
    ctx.setLineDash([3, 3]);
    ctx.strokeStyle = COLOURS.muted;
    ctx.lineWidth = 2;
    ctx.beginPath();
    for (const p of pending.values()) {
      const s = this.#view.toScreen(p.x, p.y);
      ctx.moveTo(s.x + NODE_R, s.y);
      ctx.arc(s.x, s.y, NODE_R, 0, Math.PI * 2);
    }
    ctx.stroke();
    ctx.setLineDash([]);
  }

  #drawOverlay(now) {
    const ctx = this.#ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = COLOURS.canvas;
    ctx.fillRect(0, 0, this.#canvas.width, this.#canvas.height);
    ctx.drawImage(this.#layer, 0, 0);
    ctx.setTransform(this.#dpr, 0, 0, this.#dpr, 0, 0);
    this.#drawDragged(ctx);
    this.#drawLanes(ctx);
    this.#drawDots(ctx, now);
    this.#drawPulses(ctx, now);
    this.#drawBubbles(ctx, now);
    this.#drawHover(ctx);
  }

  /** Matrix events on their way (a bubble on its current hop) and servers taking them. */
  #drawBubbles(ctx, now) {
    const events = this.#events;
    for (const b of events.bubbles) {
      const hop = b.hops.find(([, , t0, t1]) => now >= t0 && now < t1) ?? b.hops[b.hops.length - 1];
      const [a, c, t0, t1] = hop;
      const p = this.screenOf(a);
      const q = this.screenOf(c);
      if (!p || !q) continue;
      const t = t1 > t0 ? Math.min(1, Math.max(0, (now - t0) / (t1 - t0))) : 1;
      const x = p.x + (q.x - p.x) * t;
      const y = p.y + (q.y - p.y) * t;
      ctx.fillStyle = alpha(EVENT, 0.45);
      ctx.strokeStyle = EVENT;
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(x, y, BUBBLE_R, 0, Math.PI * 2);
      ctx.fill();
      ctx.stroke();
    }
    for (const pop of events.pops) {
      const s = this.screenOf(pop.id);
      const age = (now - pop.start) / POP_MS;
      if (!s || age < 0 || age > 1) continue;
      // A bubble bursting: a ring that grows and fades, with a few flecks flying off.
      const r = NODE_R + 3 + (pop.origin ? 10 : 18) * age;
      ctx.strokeStyle = alpha(EVENT, 1 - age);
      ctx.lineWidth = pop.origin ? 1.5 : 2.5;
      ctx.beginPath();
      ctx.arc(s.x, s.y, r, 0, Math.PI * 2);
      ctx.stroke();
      if (!pop.origin) {
        ctx.fillStyle = alpha(EVENT, 1 - age);
        for (let i = 0; i < 6; i++) {
          const a = (i / 6) * Math.PI * 2;
          ctx.beginPath();
          ctx.arc(s.x + Math.cos(a) * (r + 4), s.y + Math.sin(a) * (r + 4), 1.8, 0, Math.PI * 2);
          ctx.fill();
        }
      }
    }
  }

  /** A directed link's lane: from a to b, shifted to the right of travel, trimmed at the nodes. */
  #lane(a, b) {
    // The host's end of a client link is the node's client glyph.
    const p = a === HOST_ID ? this.clientAt(b) : this.screenOf(a);
    const q = b === HOST_ID ? this.clientAt(a) : this.screenOf(b);
    if (!p || !q) return null;
    const dx = q.x - p.x;
    const dy = q.y - p.y;
    const len = Math.hypot(dx, dy);
    if (len < 2 * NODE_R + 2) return null;
    const ux = dx / len;
    const uy = dy / len;
    const ox = -uy * LANE_PX;
    const oy = ux * LANE_PX;
    return {
      x0: p.x + ux * NODE_R + ox,
      y0: p.y + uy * NODE_R + oy,
      x1: q.x - ux * NODE_R + ox,
      y1: q.y - uy * NODE_R + oy,
    };
  }

  /** Each busy directed link glows, wider and stronger with its share of the busiest link. */
  #drawLanes(ctx) {
    const traffic = this.#traffic;
    if (!traffic.rates.size || !(traffic.peakBitsPerS > 0)) return;
    const buckets = 6;
    const paths = Array.from({ length: buckets }, () => new Path2D());
    const used = new Array(buckets).fill(false);
    for (const r of traffic.rates.values()) {
      const rel = Math.sqrt(Math.min(1, r.bitsPerS / traffic.peakBitsPerS));
      const lane = this.#lane(r.a, r.b);
      if (!lane) continue;
      const i = Math.min(buckets - 1, Math.floor(rel * buckets));
      paths[i].moveTo(lane.x0, lane.y0);
      paths[i].lineTo(lane.x1, lane.y1);
      used[i] = true;
    }
    ctx.lineCap = "round";
    for (let i = 0; i < buckets; i++) {
      if (!used[i]) continue;
      const rel = (i + 1) / buckets;
      ctx.strokeStyle = alpha(SELECTED, 0.15 + 0.4 * rel);
      ctx.lineWidth = 1.5 + 3.5 * rel;
      ctx.stroke(paths[i]);
    }
    ctx.lineCap = "butt";
  }

  #drawDots(ctx, now) {
    const dots = this.#traffic.dots;
    if (!dots.length) return;
    const lanes = new Map();
    const laneOf = (a, b) => {
      const key = `${a}>${b}`;
      if (!lanes.has(key)) lanes.set(key, this.#lane(a, b));
      return lanes.get(key);
    };
    ctx.fillStyle = TRAFFIC;
    ctx.beginPath();
    const drops = [];
    for (const d of dots) {
      const t = (now - d.start) / d.dur;
      if (t < 0) continue;
      const lane = laneOf(d.a, d.b);
      if (!lane) continue;
      if (d.drop) {
        drops.push([d, t, lane]);
        continue;
      }
      const x = lane.x0 + (lane.x1 - lane.x0) * t;
      const y = lane.y0 + (lane.y1 - lane.y0) * t;
      ctx.moveTo(x + d.r, y);
      ctx.arc(x, y, d.r, 0, Math.PI * 2);
    }
    ctx.fill();
    // A dropped packet dies half way along its link, fading out.
    ctx.fillStyle = DROP;
    for (const [d, t, lane] of drops) {
      const tt = Math.min(t, 0.5);
      ctx.globalAlpha = t <= 0.5 ? 1 : Math.max(0, 1 - (t - 0.5) * 10);
      const x = lane.x0 + (lane.x1 - lane.x0) * tt;
      const y = lane.y0 + (lane.y1 - lane.y0) * tt;
      ctx.beginPath();
      ctx.arc(x, y, d.r, 0, Math.PI * 2);
      ctx.fill();
    }
    ctx.globalAlpha = 1;
  }

  #drawPulses(ctx, now) {
    const pulses = this.#traffic.pulses;
    if (!pulses.size) return;
    ctx.lineWidth = 2;
    for (const [id, p] of pulses) {
      const s = this.screenOf(id);
      if (!s) continue;
      const age = (now - p.start) / Traffic.PULSE_MS;
      if (age < 0 || age > 1) continue;
      ctx.strokeStyle = alpha(TRAFFIC, (1 - age) * p.strength);
      ctx.beginPath();
      ctx.arc(s.x, s.y, NODE_R + 2 + 16 * age, 0, Math.PI * 2);
      ctx.stroke();
      // The node itself flashes while the ring is young.
      if (age < 0.4) {
        ctx.fillStyle = alpha(TRAFFIC, (0.4 - age) * p.strength * 1.5);
        ctx.beginPath();
        ctx.arc(s.x, s.y, NODE_R - 1, 0, Math.PI * 2);
        ctx.fill();
      }
    }
  }

  #drawHover(ctx) {
    const h = this.hover;
    if (!h) return;
    if (h.kind === "node") {
      const s = this.screenOf(h.id);
      if (!s) return;
      ctx.strokeStyle = alpha(SELECTED, 0.6);
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(s.x, s.y, NODE_R + 3, 0, Math.PI * 2);
      ctx.stroke();
      return;
    }
    const l = this.#store.link(h.a, h.b);
    const p = this.screenOf(h.a);
    const q = this.screenOf(h.b);
    if (!l || !p || !q) return;
    ctx.strokeStyle = alpha(SELECTED, 0.35);
    ctx.lineWidth = 6;
    ctx.lineCap = "round";
    ctx.beginPath();
    ctx.moveTo(p.x, p.y);
    ctx.lineTo(q.x, q.y);
    ctx.stroke();
    ctx.lineCap = "butt";

    // The rate label: one line per direction, next to the pointer.
    const store = this.#store;
    const lines = [[l.a, l.b], [l.b, l.a]].map(([a, b]) => {
      const r = this.#traffic.rate(a, b);
      let text = `${store.name(a)} → ${store.name(b)}  ${fmt.rate(r?.bitsPerS ?? 0)}  ${Math.round(r?.pps ?? 0)} pkt/s`;
      if (r && r.dropsPerS >= 0.05) text += `  ${r.dropsPerS.toFixed(1)} drop/s`;
      return text;
    });
    ctx.font = "12px system-ui, sans-serif";
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    const w = Math.max(...lines.map((t) => ctx.measureText(t).width)) + 12;
    const hgt = lines.length * 16 + 8;
    let x = this.pointer.x + 14;
    let y = this.pointer.y + 14;
    if (x + w > this.#view.width) x = this.pointer.x - w - 8;
    if (y + hgt > this.#view.height) y = this.pointer.y - hgt - 8;
    ctx.fillStyle = alpha(COLOURS.text, 0.88);
    ctx.beginPath();
    ctx.roundRect(x, y, w, hgt, 4);
    ctx.fill();
    ctx.fillStyle = COLOURS.node;
    lines.forEach((t, i) => ctx.fillText(t, x + 6, y + 5 + i * 16));
  }

  #textWidth(ctx, text) {
    let w = this.#textWidths.get(text);
    if (w === undefined) {
      if (this.#textWidths.size > 5000) this.#textWidths.clear();
      w = ctx.measureText(text).width;
      this.#textWidths.set(text, w);
    }
    return w;
  }
}
