// The page's colours, defined once in style.css (`:root` custom properties) and read from
// there, so the canvas and the panels can never disagree.

const root = getComputedStyle(document.documentElement);

function css(name) {
  return root.getPropertyValue(name).trim();
}

/** `#rrggbb` with an alpha, as `rgba(...)`. */
export function alpha(hex, a) {
  const n = Number.parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
}

export const COLOURS = {
  canvas: css("--canvas"),
  text: css("--text"),
  muted: css("--muted"),
  accent: css("--accent"),
  pinned: css("--pinned"),
  link: css("--link"),
  traffic: css("--traffic"),
  drop: css("--drop"),
  event: css("--event"),
  starting: css("--starting"),
  failed: css("--failed"),
  node: css("--panel"),
  tooltip: css("--tooltip"),
};
