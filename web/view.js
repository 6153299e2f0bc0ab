// The camera: maps meshsim's node positions (world units, where one unit is one pixel at
// zoom 1 and latency follows distance) to canvas pixels. Starts as the identity, so a node
// clicked at canvas pixel (x, y) gets position (x, y), as in the seed's page.

const MIN_ZOOM = 0.05;
const MAX_ZOOM = 8;

export class View extends EventTarget {
  ox = 0;
  oy = 0;
  k = 1;
  /** Canvas size in CSS pixels. */
  width = 0;
  height = 0;

  toScreen(x, y) {
    return { x: x * this.k + this.ox, y: y * this.k + this.oy };
  }

  toWorld(sx, sy) {
    return { x: (sx - this.ox) / this.k, y: (sy - this.oy) / this.k };
  }

  panBy(dx, dy) {
    this.ox += dx;
    this.oy += dy;
    this.#changed();
  }

  /** Zooms by `factor` keeping the world point under (sx, sy) where it is. */
  zoomAt(sx, sy, factor) {
    const k = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, this.k * factor));
    const w = this.toWorld(sx, sy);
    this.k = k;
    this.ox = sx - w.x * k;
    this.oy = sy - w.y * k;
    this.#changed();
  }

  /** Shows every point with a margin; never zooms in past 1 so small meshes keep their size. */
  fit(points, margin = 40) {
    if (points.length === 0 || this.width === 0) return;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const p of points) {
      x0 = Math.min(x0, p.x);
      y0 = Math.min(y0, p.y);
      x1 = Math.max(x1, p.x);
      y1 = Math.max(y1, p.y);
    }
    const w = Math.max(1, x1 - x0);
    const h = Math.max(1, y1 - y0);
    const k = Math.min(1, (this.width - 2 * margin) / w, (this.height - 2 * margin) / h);
    this.k = Math.max(MIN_ZOOM, k);
    this.ox = this.width / 2 - ((x0 + x1) / 2) * this.k;
    this.oy = this.height / 2 - ((y0 + y1) / 2) * this.k;
    this.#changed();
  }

  /** True when every point is on screen. */
  shows(points) {
    for (const p of points) {
      const s = this.toScreen(p.x, p.y);
      if (s.x < 0 || s.y < 0 || s.x > this.width || s.y > this.height) return false;
    }
    return true;
  }

  resize(width, height) {
    this.width = width;
    this.height = height;
    this.#changed();
  }

  #changed() {
    this.dispatchEvent(new Event("change"));
  }
}
