// Numbers as people read them, shared by the canvas labels and the panels.

/** Milliseconds with the precision that matters at that size. */
export function ms(v) {
  if (!Number.isFinite(v)) return "–";
  if (v >= 100) return `${Math.round(v)} ms`;
  if (v >= 10) return `${v.toFixed(1)} ms`;
  return `${v.toFixed(2)} ms`;
}

/** Bits per second in decimal units, as link speeds are quoted; 0 is unlimited (the datapath's convention). */
export function bps(v) {
  if (!Number.isFinite(v)) return "–";
  if (v === 0) return "unlimited";
  return si(v, "bit/s");
}

/** A measured rate in bits per second, where 0 means idle rather than unlimited. */
export function rate(bitsPerSecond) {
  if (!(bitsPerSecond > 0)) return "0 bit/s";
  return si(bitsPerSecond, "bit/s");
}

export function pct(v) {
  if (!Number.isFinite(v)) return "–";
  return `${+v.toFixed(3)} %`;
}

function si(v, unit) {
  const steps = [
    [1e9, "G"],
    [1e6, "M"],
    [1e3, "k"],
  ];
  for (const [size, prefix] of steps) {
    if (v >= size) {
      const x = v / size;
      return `${x >= 100 ? Math.round(x) : +x.toFixed(1)} ${prefix}${unit}`;
    }
  }
  return `${Math.round(v)} ${unit}`;
}
