// The sidebar and the page chrome: the selected link's parameters with Pin/Unpin, the
// selected node's facts (what it runs among them) and routes, the settings form with the
// choice of what new nodes run, topology save/load, the run's backend and workload, the
// banners, the connection badge and the error toasts.
//
// Inputs the user is editing are never overwritten by incoming state: a field counts as
// edited from its first keystroke until it is applied or the selection changes.

import { api, ApiError } from "./api.js";
import { el } from "./dom.js";
import * as fmt from "./format.js";
import { LINK_FIELDS } from "./state.js";

const $ = (id) => document.getElementById(id);

const FIELD_INFO = {
  latency_ms: { label: "Latency", unit: "ms", note: (v) => fmt.ms(v) },
  jitter_ms: { label: "Jitter", unit: "ms", note: (v) => fmt.ms(v) },
  bandwidth_bps: { label: "Bandwidth", unit: "bit/s", note: (v) => (v === 0 ? "0 = unlimited" : fmt.bps(v)) },
  loss_pct: { label: "Loss", unit: "%", note: (v) => fmt.pct(v) },
};

const SETTINGS_NUMBERS = ["neighbours", "max_latency_ms", "latency_scale_pct", "bandwidth_bps", "jitter_ms", "loss_pct"];
const SETTINGS_CHOICES = ["bandwidth_mode", "cost"];

/** Reads a number field; null when it is not one (refused here, with the field named). */
function number(text) {
  const t = String(text).trim();
  if (t === "") return null;
  const v = Number(t);
  return Number.isFinite(v) ? v : null;
}

/** An error in words, naming its field unless the server's message already starts with it. */
function describe(e) {
  if (e instanceof ApiError && e.field && !e.message.startsWith(e.field)) return `${e.field}: ${e.message}`;
  return e.message;
}

/** The last segment of an error's field path ("settings.loss_pct" names loss_pct). */
function leaf(field) {
  return field ? String(field).split(/[.[\]]/).filter(Boolean).pop() : null;
}

export class Panels {
  #store;
  #traffic;
  #actions;
  #nodeFetch = 0;
  #nodeTimer = null;
  #settingsDirty = false;

  /** `actions`: {deleteNode(id), loading()} from main.js. */
  constructor(store, traffic, actions) {
    this.#store = store;
    this.#traffic = traffic;
    this.#actions = actions;
    this.#buildLinkFields();
    this.#wireSettings();
    this.#wireNewNodes();
    this.#wireTopology();
    for (const b of document.querySelectorAll("[data-close]")) b.addEventListener("click", () => store.select(null));
    $("unpin-all").addEventListener("click", () => this.#unpin(null));
    $("link-cut").addEventListener("click", () => {
      const l = this.#selectedLink();
      if (l) this.#cut(l.cut ? { up: [l.a, l.b] } : { down: [l.a, l.b] }, $("link-error"));
    });
    $("node-partition").addEventListener("click", () => {
      const s = store.selection;
      if (s?.kind !== "node") return;
      this.#cut(store.sides.has(s.id) ? { heal: [s.id] } : { partition: [s.id] }, $("node-error"));
    });
    $("node-delete").addEventListener("click", () => {
      const s = store.selection;
      if (s?.kind === "node") actions.deleteNode(s.id);
    });

    store.addEventListener("state", () => this.#onState());
    store.addEventListener("selection", () => this.#onSelection());
    store.addEventListener("connection", () => this.#onConnection());
    // Rates in the link panel change with every traffic frame; a few updates a second suffice.
    setInterval(() => this.#showRates(), 250);
    this.#onConnection();
  }

  /** Shows an error (ApiError or Error) or a message for a few seconds. */
  toast(what) {
    const el = document.createElement("div");
    const isError = what instanceof Error;
    el.className = isError ? "toast error" : "toast";
    el.textContent = isError ? describe(what) : String(what);
    $("toasts").append(el);
    setTimeout(() => el.remove(), isError ? 8000 : 4000);
  }

  #onState() {
    const s = this.#store;
    $("banner").hidden = s.delaysEnforced;
    $("counts").textContent = `${s.nodes.size} node${s.nodes.size === 1 ? "" : "s"} · ${s.links.length} link${s.links.length === 1 ? "" : "s"}`;
    $("hint").hidden = s.nodes.size > 0 || s.pending.size > 0;
    this.#fillRun();
    if (!this.#settingsDirty) this.#fillSettings();
    const sel = s.selection;
    if (sel?.kind === "link") this.#fillLink(false);
    if (sel?.kind === "node") {
      this.#fillNodeFacts();
      // Routes change with every relink; while a node is dragged that is many times a second.
      clearTimeout(this.#nodeTimer);
      this.#nodeTimer = setTimeout(() => this.#fetchNode(), 200);
    }
  }

  #onSelection() {
    const sel = this.#store.selection;
    $("link-panel").hidden = sel?.kind !== "link";
    $("node-panel").hidden = sel?.kind !== "node";
    $("link-error").hidden = true;
    $("node-error").hidden = true;
    if (sel?.kind === "link") {
      this.#fillLink(true);
      this.#showRates();
    }
    if (sel?.kind === "node") {
      $("node-neighbours").textContent = "…";
      $("node-routes").replaceChildren();
      this.#fillNodeFacts();
      this.#fetchNode();
    }
  }

  #onConnection() {
    const up = this.#store.connected;
    const badge = $("connection");
    badge.textContent = up ? "live" : "reconnecting…";
    badge.className = `conn ${up ? "conn-up" : "conn-down"}`;
    $("offline").hidden = up || this.#store.version === null;
  }

  // ---- link panel ----

  #buildLinkFields() {
    const box = $("link-fields");
    for (const field of LINK_FIELDS) {
      const info = FIELD_INFO[field];
      const row = document.createElement("div");
      row.className = "field";
      row.dataset.field = field;
      const label = document.createElement("span");
      label.className = "label";
      label.append(`${info.label} `, el("span", { class: "unit" }, info.unit));
      const input = document.createElement("input");
      input.id = `link-${field}`;
      input.inputMode = "decimal";
      input.addEventListener("input", () => {
        input.dataset.edited = "1";
        input.classList.remove("invalid");
        const v = number(input.value);
        row.querySelector(".field-note").textContent = v === null ? "" : info.note(v);
      });
      input.addEventListener("keydown", (e) => {
        if (e.key === "Enter") this.#pin(field);
      });
      const buttons = document.createElement("div");
      buttons.className = "buttons";
      const pin = document.createElement("button");
      pin.type = "button";
      pin.id = `pin-${field}`;
      pin.className = "pin";
      pin.textContent = "Pin";
      pin.title = "Pin this value on the link (both directions)";
      pin.addEventListener("click", () => this.#pin(field));
      const unpin = document.createElement("button");
      unpin.type = "button";
      unpin.id = `unpin-${field}`;
      unpin.className = "unpin";
      unpin.textContent = "Unpin";
      unpin.title = "Go back to the value derived from distance and settings";
      unpin.addEventListener("click", () => this.#unpin(field));
      buttons.append(pin, unpin);
      const note = document.createElement("span");
      note.className = "field-note small muted";
      row.append(label, input, buttons, note);
      box.append(row);
    }
  }

  #selectedLink() {
    const s = this.#store.selection;
    return s?.kind === "link" ? this.#store.link(s.a, s.b) : null;
  }

  #fillLink(fresh) {
    const l = this.#selectedLink();
    if (!l) return;
    const s = this.#store;
    $("link-title").textContent = `Link ${s.name(l.a)} — ${s.name(l.b)}`;
    for (const field of LINK_FIELDS) {
      const row = document.querySelector(`#link-fields [data-field="${field}"]`);
      const input = row.querySelector("input");
      const pinned = l.pinned?.includes(field) ?? false;
      row.classList.toggle("pinned", pinned);
      row.querySelector(".pin").textContent = pinned ? "Update" : "Pin";
      row.querySelector(".unpin").hidden = !pinned;
      if (fresh) {
        delete input.dataset.edited;
        input.classList.remove("invalid");
      }
      if (!input.dataset.edited && document.activeElement !== input) {
        const v = l[field];
        input.value = field === "bandwidth_bps" ? String(v) : String(+Number(v).toFixed(3));
        row.querySelector(".field-note").textContent = FIELD_INFO[field].note(v);
      }
    }
    $("unpin-all").disabled = !(l.pinned?.length > 0);
    // A link cut by a partition comes back with the heal; one taken down, with this button.
    const byPartition = l.cut && s.sides.get(l.a) !== s.sides.get(l.b);
    $("link-cut").textContent = l.cut ? "Bring up" : "Take down";
    $("link-cut").disabled = byPartition;
    $("link-cut").title = byPartition ? "Cut by a partition: heal it from a node's panel" : l.cut ? "Let traffic through again" : "Drop everything on this link, both ways; routes go around it where they can";
  }

  /** Partitions, heals, or takes a link down or up; an error is shown in `err`. */
  async #cut(change, err) {
    try {
      await api.cut(change);
      err.hidden = true;
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
    }
  }

  async #pin(field) {
    const l = this.#selectedLink();
    if (!l) return;
    const input = $(`link-${field}`);
    const value = number(input.value);
    const err = $("link-error");
    if (value === null) {
      input.classList.add("invalid");
      err.textContent = `${FIELD_INFO[field].label}: "${input.value}" is not a number`;
      err.hidden = false;
      return;
    }
    try {
      await api.pin(l.a, l.b, { [field]: value });
      delete input.dataset.edited;
      input.classList.remove("invalid");
      err.hidden = true;
    } catch (e) {
      input.classList.add("invalid");
      err.textContent = e.message;
      err.hidden = false;
    }
  }

  async #unpin(field) {
    const l = this.#selectedLink();
    if (!l) return;
    try {
      await api.unpin(l.a, l.b, field);
      for (const f of field ? [field] : LINK_FIELDS) delete $(`link-${f}`).dataset.edited;
      $("link-error").hidden = true;
    } catch (e) {
      $("link-error").textContent = e.message;
      $("link-error").hidden = false;
    }
  }

  #showRates() {
    const l = this.#selectedLink();
    const table = $("link-rates");
    if (!l || $("link-panel").hidden) return;
    const s = this.#store;
    const rows = [[l.a, l.b], [l.b, l.a]].map(([a, b]) => {
      const r = this.#traffic.rate(a, b);
      return el(
        "tr",
        {},
        el("td", {}, `${s.name(a)} → ${s.name(b)}`),
        el("td", {}, fmt.rate(r?.bitsPerS ?? 0)),
        el("td", {}, `${Math.round(r?.pps ?? 0)} pkt/s`),
        el("td", {}, `${(r?.dropsPerS ?? 0).toFixed(1)} drop/s`),
      );
    });
    const head = el("tr", {}, ...["now", "rate", "packets", "drops"].map((h) => el("th", {}, h)));
    table.replaceChildren(head, ...rows);
  }

  // ---- node panel ----

  #fillNodeFacts() {
    const s = this.#store;
    const sel = s.selection;
    const n = sel?.kind === "node" ? s.nodes.get(sel.id) : null;
    if (!n) return;
    const p = s.pos(n.id);
    $("node-title").textContent = `Node ${n.name}`;
    $("node-ip").textContent = n.ip ?? "–";
    $("node-mac").textContent = n.mac ?? "–";
    $("node-workload").textContent = n.workload === "none" && s.run?.workload !== "none" ? "nothing (a bare router)" : (n.workload ?? "–");
    $("node-pos").textContent = `${p.x.toFixed(1)}, ${p.y.toFixed(1)}`;
    $("node-partition").textContent = s.sides.has(n.id) ? "Heal" : "Cut off";
  }

  async #fetchNode() {
    const sel = this.#store.selection;
    if (sel?.kind !== "node") return;
    const id = sel.id;
    const ticket = ++this.#nodeFetch;
    try {
      const info = await api.node(id);
      // A later request or another selection made this answer stale.
      if (ticket !== this.#nodeFetch || this.#store.selection?.id !== id) return;
      this.#showNode(info);
      $("node-error").hidden = true;
    } catch (e) {
      if (ticket !== this.#nodeFetch) return;
      $("node-error").textContent = e.message;
      $("node-error").hidden = false;
    }
  }

  #showNode(info) {
    const s = this.#store;
    const chips = (info.neighbours ?? []).map((id) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "chip";
      b.textContent = s.name(id);
      b.title = `select ${s.name(id)}`;
      b.addEventListener("click", () => s.select({ kind: "node", id }));
      return b;
    });
    const nb = $("node-neighbours");
    nb.replaceChildren(...chips);
    if (!chips.length) nb.textContent = "none (no node within reach)";
    const routes = [...(info.routes ?? [])].sort((x, y) => x.dst - y.dst);
    const rows = routes.map((r) => {
      const tr = document.createElement("tr");
      const dst = document.createElement("td");
      dst.textContent = s.name(r.dst);
      const hop = document.createElement("td");
      hop.textContent = r.next_hop === r.dst ? `${s.name(r.next_hop)} (direct)` : s.name(r.next_hop);
      tr.append(dst, hop);
      return tr;
    });
    if (!rows.length) {
      rows.push(el("tr", {}, el("td", { colspan: 2, class: "muted" }, "no routes: the node reaches nobody")));
    }
    $("node-routes").replaceChildren(...rows);
  }

  // ---- the run: backend, workload, what new nodes run ----

  #wireNewNodes() {
    $("new-workload").addEventListener("change", (e) => {
      this.#store.newNodeWorkload = e.target.value === "none" ? "none" : null;
    });
  }

  /**
   * The run's backend and workload in the top bar (with homeservers' layout, database and
   * launch, and KSM: "netns · synapse · sqlite · fork · ksm"); the choice for new nodes when
   * there is one.
   */
  #fillRun() {
    const run = this.#store.run;
    if (!run) return;
    const workload = run.workload === "none" ? "no workload" : run.workload;
    const profile = run.profile ? ` (${run.profile})` : "";
    const database = run.database ? ` · ${run.database}` : "";
    const launch = run.launch ? ` · ${run.launch}` : "";
    const ksm = run.ksm ? " · ksm" : "";
    $("run").textContent = `${run.backend} · ${workload}${profile}${database}${launch}${ksm}`;
    const choice = run.workload !== "none";
    $("new-workload-row").hidden = !choice;
    $("new-workload-run").value = run.workload;
    $("new-workload-run").textContent = run.workload;
    $("new-workload").value = choice && this.#store.newNodeWorkload === "none" ? "none" : run.workload;
  }

  // ---- settings ----

  #wireSettings() {
    const form = $("settings");
    form.addEventListener("input", (e) => {
      this.#settingsDirty = true;
      e.target.classList?.remove("invalid");
      this.#hints();
    });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.#applySettings();
    });
    $("settings-revert").addEventListener("click", () => {
      this.#settingsDirty = false;
      this.#fillSettings();
    });
  }

  #fillSettings() {
    const settings = this.#store.settings;
    if (!settings) return;
    const form = $("settings");
    for (const name of [...SETTINGS_NUMBERS, ...SETTINGS_CHOICES]) {
      const el = form.elements[name];
      if (el && settings[name] !== undefined) {
        el.value = String(settings[name]);
        el.classList.remove("invalid");
      }
    }
    $("settings-error").hidden = true;
    this.#hints();
  }

  /** Reads the numbers back in friendlier units while they are typed. */
  #hints() {
    const form = $("settings");
    const hint = (name, text) => (document.querySelector(`[data-hint="${name}"]`).textContent = text);
    const bw = number(form.elements.bandwidth_bps.value);
    hint("bandwidth_bps", bw === null ? "" : bw === 0 ? "0 = unlimited" : `= ${fmt.bps(bw)}`);
    const scale = number(form.elements.latency_scale_pct.value);
    hint("latency_scale_pct", scale === null ? "" : `= ${+(scale / 100).toFixed(4)} ms per pixel of distance`);
  }

  async #applySettings() {
    const form = $("settings");
    const err = $("settings-error");
    const body = {};
    for (const name of SETTINGS_NUMBERS) {
      const el = form.elements[name];
      const v = number(el.value);
      if (v === null) {
        el.classList.add("invalid");
        el.focus();
        err.textContent = `${name}: "${el.value}" is not a number`;
        err.hidden = false;
        return;
      }
      body[name] = v;
    }
    for (const name of SETTINGS_CHOICES) body[name] = form.elements[name].value;
    try {
      await api.putSettings(body);
      this.#settingsDirty = false;
      err.hidden = true;
      this.#fillSettings();
    } catch (e) {
      // The server's own words, next to the field it names.
      const el = form.elements[leaf(e.field)];
      if (el) {
        el.classList.add("invalid");
        el.focus();
      }
      err.textContent = describe(e);
      err.hidden = false;
    }
  }

  // ---- topology file ----

  #wireTopology() {
    $("save").addEventListener("click", async () => {
      try {
        const doc = await api.topology();
        const blob = new Blob([JSON.stringify(doc, null, 2) + "\n"], { type: "application/json" });
        const a = document.createElement("a");
        a.href = URL.createObjectURL(blob);
        a.download = `meshsim-topology-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-")}.json`;
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
      } catch (e) {
        this.toast(e);
      }
    });
    $("load").addEventListener("change", async (e) => {
      const file = e.target.files?.[0];
      e.target.value = "";
      if (!file) return;
      let doc;
      try {
        doc = JSON.parse(await file.text());
      } catch (err) {
        this.toast(new Error(`${file.name} is not a JSON topology: ${err.message}`));
        return;
      }
      try {
        this.#actions.loading();
        await api.putTopology(doc);
        this.toast(`Loaded ${file.name}: ${doc.nodes?.length ?? 0} nodes`);
      } catch (err) {
        this.toast(err);
      }
    });
  }
}
