// Building elements from text: names and values always go in as text nodes, never as HTML,
// so a name can never become markup.

/**
 * `el("td", {class: "muted", colspan: 2}, "text", child)`: an element with attributes and
 * children; strings become text nodes.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  node.append(...children);
  return node;
}
