// The selected node's client link in the node panel: the link between the host (where a
// person's client runs) and the node, shaped like a node link but with its own up and down
// bandwidth. "Set" gives the node its own, "As default" makes the values every other
// node's, "Use default" puts the node back on the default. Hidden when the run has no
// client links (the Docker backend).

import { api, ApiError } from "./api.js";
import * as fmt from "./format.js";
import { CLIENT_FIELDS } from "./state.js";

const $ = (id) => document.getElementById(id);

export class ClientPanel {
  #store;
  #toast;
  /** The form is being edited: incoming state leaves it alone until applied or deselected. */
  #dirty = false;

  constructor(store, toast) {
    this.#store = store;
    this.#toast = toast;
    const form = $("client-form");
    form.addEventListener("input", () => {
      this.#dirty = true;
    });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.#apply((id, link) => api.setClient(id, link));
    });
    $("client-default").addEventListener("click", () => this.#apply((_, link) => api.setClientDefault(link)));
    $("client-unset").addEventListener("click", () => this.#apply((id) => api.unsetClient(id)));
    store.addEventListener("selection", () => {
      this.#dirty = false;
      this.#fill();
    });
    store.addEventListener("state", () => this.#fill());
  }

  #selected() {
    const sel = this.#store.selection;
    return sel?.kind === "node" && this.#store.nodes.has(sel.id) ? sel.id : null;
  }

  #fill() {
    const id = this.#selected();
    const store = this.#store;
    $("node-client").hidden = id === null || !store.host;
    if (id === null || !store.host) return;
    const own = store.hasOwnClient(id);
    const link = store.clientLink(id) ?? {};
    $("client-whose").textContent = own
      ? "(its own)"
      : `(the default${isUnshaped(link) ? ": unshaped" : ""})`;
    $("client-unset").disabled = !own;
    if (this.#dirty) return;
    const form = $("client-form");
    for (const f of CLIENT_FIELDS) form.elements[f].value = String(link[f] ?? 0);
    form.elements.bandwidth_up_bps.title = fmt.bps(link.bandwidth_up_bps ?? 0);
    form.elements.bandwidth_down_bps.title = fmt.bps(link.bandwidth_down_bps ?? 0);
  }

  /** Reads the form: every field a number, or an error naming the first that is not. */
  #read() {
    const form = $("client-form");
    const link = {};
    for (const f of CLIENT_FIELDS) {
      const t = String(form.elements[f].value).trim();
      const v = t === "" ? 0 : Number(t);
      if (!Number.isFinite(v)) throw new ApiError(0, "must be a number", f);
      link[f] = v;
    }
    return link;
  }

  async #apply(call) {
    const id = this.#selected();
    if (id === null) return;
    const error = $("client-error");
    try {
      await call(id, this.#read());
      this.#dirty = false;
      error.hidden = true;
      this.#fill();
    } catch (e) {
      error.textContent = e.field ? `${e.field}: ${e.message}` : e.message;
      error.hidden = false;
      if (!(e instanceof ApiError)) this.#toast(e);
    }
  }
}

function isUnshaped(link) {
  return CLIENT_FIELDS.every((f) => !link[f]);
}
