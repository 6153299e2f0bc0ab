// Live traffic from meshsim's "traffic" frames: smoothed per-link rates, the packets drawn as
// dots travelling along directed links, and nodes pulsing when they receive. This module
// keeps the model of the animation; render.js draws it.

/** Rates are smoothed over about this long, so a bursty link does not flicker. */
const SMOOTHING_MS = 400;
/**
 * About this many dots on one directed link at once, however busy it is: beyond it dots grow
 * instead of multiplying, so a busy link shows moving dots rather than a solid bar.
 */
const DOTS_ON_LINK = 10;
/** A ceiling on dots alive at once, so a flood cannot stall drawing. */
const MAX_DOTS = 3000;
const PULSE_MS = 700;
/** Rates not refreshed by a frame for this long are dropped. */
const STALE_MS = 1000;
/** Below this a smoothed rate counts as idle and is forgotten. */
const IDLE_BITS_PER_S = 1;

export class Traffic {
  /** "a>b" -> {a, b, bitsPerS, pps, dropsPerS}: smoothed, per directed link. */
  rates = new Map();
  /** {a, b, start, dur, r, drop} */
  dots = [];
  /** node id -> {start, strength} */
  pulses = new Map();
  /** Largest smoothed rate seen recently: line widths are relative to it. */
  peakBitsPerS = 0;
  #lastFrameAt = -Infinity;

  /**
   * Takes one frame: `links` are directed deltas since the previous frame, `nodes` the
   * packets each node received. `latencyOf(a, b)` gives the link's latency so dots on a slow
   * link take visibly longer.
   */
  onFrame(frame, now, latencyOf) {
    this.#lastFrameAt = now;
    const interval = Math.max(1, frame.interval_ms || 50);
    const alpha = 1 - Math.exp(-interval / SMOOTHING_MS);
    const seen = new Set();
    for (const l of frame.links ?? []) {
      const key = `${l.a}>${l.b}`;
      seen.add(key);
      let r = this.rates.get(key);
      if (!r) this.rates.set(key, (r = { a: l.a, b: l.b, bitsPerS: 0, pps: 0, dropsPerS: 0, credit: 1 }));
      const perS = 1000 / interval;
      r.bitsPerS += alpha * ((l.bytes ?? 0) * 8 * perS - r.bitsPerS);
      r.pps += alpha * ((l.packets ?? 0) * perS - r.pps);
      r.dropsPerS += alpha * ((l.dropped ?? 0) * perS - r.dropsPerS);
      this.#spawn(l, r, now, interval, latencyOf(l.a, l.b));
    }
    let peak = 0;
    for (const [key, r] of this.rates) {
      if (!seen.has(key)) {
        r.bitsPerS *= 1 - alpha;
        r.pps *= 1 - alpha;
        r.dropsPerS *= 1 - alpha;
        if (r.bitsPerS < IDLE_BITS_PER_S && r.dropsPerS < 0.01) {
          this.rates.delete(key);
          continue;
        }
      }
      peak = Math.max(peak, r.bitsPerS);
    }
    // The scale follows a falling peak slowly, so widths do not jump when a flow stops.
    this.peakBitsPerS = Math.max(peak, this.peakBitsPerS * (1 - alpha / 4));

    for (const n of frame.nodes ?? []) {
      if (!(n.packets > 0)) continue;
      const strength = Math.min(1, 0.35 + Math.log10(n.packets) / 3);
      const p = this.pulses.get(n.id);
      // A node that keeps receiving restarts its ring a few times a second, not every frame.
      if (p && now - p.start < PULSE_MS / 3) p.strength = Math.max(p.strength, strength);
      else this.pulses.set(n.id, { start: now, strength });
    }
  }

  #spawn(l, rate, now, interval, latencyMs) {
    const packets = l.packets ?? 0;
    const dropped = l.dropped ?? 0;
    const room = MAX_DOTS - this.dots.length;
    if (room <= 0) return;
    // Dots travel in a time that grows with latency but stays watchable: real packets cross a
    // 20 ms link faster than a screen can show.
    const dur = Math.min(2500, Math.max(350, 300 + (latencyMs || 0) * 4));
    if (packets > 0) {
      // A credit refilled at DOTS_ON_LINK per crossing time: a lone ping always gets its dot
      // (the credit starts full), a flood gets a steady stream of bigger ones.
      const count = Math.min(packets, Math.floor(rate.credit), room);
      rate.credit = Math.min(2, rate.credit - count + (DOTS_ON_LINK * interval) / dur);
      if (count > 0) {
        const avgBytes = (l.bytes ?? 0) / packets;
        const size = 1.6 + 2.4 * Math.sqrt(Math.min(avgBytes, 1500) / 1500);
        const r = Math.min(5.5, size * (1 + 0.2 * Math.log2(packets / count)));
        for (let i = 0; i < count; i++) {
          this.dots.push({ a: l.a, b: l.b, start: now + (i * interval) / count, dur, r, drop: false });
        }
      }
    } else {
      rate.credit = Math.min(2, rate.credit + (DOTS_ON_LINK * interval) / dur);
    }
    for (let i = 0; i < Math.min(dropped, 2); i++) {
      this.dots.push({ a: l.a, b: l.b, start: now + (i * interval) / 2, dur, r: 3, drop: true });
    }
  }

  /** Forgets finished dots and rings; true while anything is still moving. */
  prune(now) {
    // Rates decay as frames arrive; when frames stop (a lost connection) they are stale.
    if (this.rates.size && now - this.#lastFrameAt > STALE_MS) this.rates.clear();
    if (this.dots.length) {
      this.dots = this.dots.filter((d) => now - d.start < (d.drop ? d.dur * 0.6 : d.dur));
    }
    for (const [id, p] of this.pulses) if (now - p.start > PULSE_MS) this.pulses.delete(id);
    return this.dots.length > 0 || this.pulses.size > 0 || this.rates.size > 0;
  }

  /** Drops everything about nodes that no longer exist. */
  forgetMissing(hasNode) {
    this.dots = this.dots.filter((d) => hasNode(d.a) && hasNode(d.b));
    for (const [key, r] of this.rates) if (!hasNode(r.a) || !hasNode(r.b)) this.rates.delete(key);
    for (const id of this.pulses.keys()) if (!hasNode(id)) this.pulses.delete(id);
  }

  rate(a, b) {
    return this.rates.get(`${a}>${b}`);
  }

  static get PULSE_MS() {
    return PULSE_MS;
  }
}
