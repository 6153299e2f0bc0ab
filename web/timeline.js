// The scenario timeline: a bar along the bottom of the canvas. It shows the scenario that
// runs now (one loaded here, or a headless `meshsim run`): a tick per step where it is due,
// green once done, red if it failed, and a cursor at the scenario's time. Load… runs a
// scenario file; Pause / Resume / Stop steer it; Record… records what you do on the canvas
// and saves it as a scenario file you can replay.

import { api } from "./api.js";

const $ = (id) => document.getElementById(id);

export class Timeline {
  #status = null;

  constructor(toast) {
    this.toast = toast;
    $("scenario-file").addEventListener("change", (e) => this.#load(e.target));
    $("scenario-pause").addEventListener("click", () => this.#pauseOrResume());
    $("scenario-stop").addEventListener("click", () => this.#act(api.stopScenario()));
    $("record").addEventListener("click", () => this.#record());
    setInterval(() => this.#moveCursor(), 200);
  }

  /** A "scenario" message (GET /api/scenario's body). */
  onScenario(status) {
    this.#status = status;
    this.#draw();
  }

  #elapsed(s) {
    if (!s?.started_wall_ms) return 0;
    if (s.state === "paused" && s.held_at_ms != null) return s.held_at_ms;
    if (s.state === "done" || s.state === "failed") {
      const ends = s.steps.map((x) => x.done_ms ?? 0);
      return Math.max(0, ...ends);
    }
    return Date.now() - s.started_wall_ms - s.paused_ms;
  }

  #span(s) {
    const known = s.steps.map((x) => x.done_ms ?? x.due_ms ?? 0);
    return Math.max(1000, this.#elapsed(s), ...known) * 1.05;
  }

  #draw() {
    const s = this.#status;
    const active = s && (s.state === "running" || s.state === "paused");
    const shown = s && s.state !== "idle";
    $("timeline").classList.toggle("idle", !shown);
    $("scenario-pause").hidden = !active;
    $("scenario-stop").hidden = !active;
    $("scenario-pause").textContent = s?.state === "paused" ? "Resume" : "Pause";
    $("scenario-load").hidden = active;
    $("record").textContent = s?.recording ? "Stop & save" : "Record";
    $("record").classList.toggle("recording", !!s?.recording);
    const track = $("timeline-track");
    track.replaceChildren();
    if (!shown) {
      $("timeline-label").textContent = s?.recording ? "recording what you do…" : "no scenario";
      return;
    }
    const span = this.#span(s);
    for (const step of s.steps) {
      const at = step.started_ms ?? step.due_ms;
      if (at == null) continue;
      const tick = document.createElement("span");
      tick.className = "tick" + (step.error ? " failed" : step.done_ms != null ? " done" : "");
      tick.style.left = `${(100 * at) / span}%`;
      tick.title = `step ${step.index + 1} (line ${step.line}) at ${(at / 1000).toFixed(1)} s: ${step.what}${step.error ? `\n${step.error}` : ""}`;
      track.append(tick);
    }
    const cursor = document.createElement("span");
    cursor.className = "cursor";
    cursor.id = "timeline-cursor";
    track.append(cursor);
    this.#moveCursor();
  }

  #moveCursor() {
    const s = this.#status;
    if (!s || s.state === "idle") return;
    const t = this.#elapsed(s);
    const cursor = $("timeline-cursor");
    if (cursor) cursor.style.left = `${(100 * t) / this.#span(s)}%`;
    const n = s.steps.length;
    const current = s.current != null ? s.steps[s.current] : null;
    const where =
      s.state === "done"
        ? `done: all ${n} steps ran`
        : s.state === "failed"
          ? `stopped: ${s.failure}`
          : current
            ? `step ${current.index + 1} of ${n}: ${current.what}`
            : `${n} steps`;
    const name = (s.scenario ?? "").split("/").pop();
    $("timeline-label").textContent = `${name} · ${(t / 1000).toFixed(1)} s · ${s.state === "paused" ? "paused · " : ""}${where}`;
    $("timeline-label").title = s.out ? `results: ${s.out}` : "";
  }

  async #load(input) {
    const file = input.files?.[0];
    input.value = "";
    if (!file) return;
    this.#act(api.startScenario(file.name, await file.text()));
  }

  #pauseOrResume() {
    this.#act(this.#status?.state === "paused" ? api.resumeScenario() : api.pauseScenario());
  }

  async #record() {
    if (!this.#status?.recording) {
      this.#act(api.startRecording());
      return;
    }
    try {
      const text = await api.stopRecording();
      const url = URL.createObjectURL(new Blob([text], { type: "application/toml" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = "recorded.toml";
      a.click();
      URL.revokeObjectURL(url);
    } catch (e) {
      this.toast(e);
    }
  }

  async #act(promise) {
    try {
      await promise;
    } catch (e) {
      this.toast(e);
    }
  }
}
