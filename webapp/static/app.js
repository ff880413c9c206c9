// vtr search UI: plain JS against /api/v1, no build step.
// Every piece of data from the server or the user is inserted with textContent or as an attribute
// value set through the DOM API, never through innerHTML, so file names and captions cannot inject markup.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("search-form");
  const q = $("q");
  const statusEl = $("status");
  const results = $("results");
  const textResults = $("text-results");
  const more = $("more");
  const player = $("player");
  const video = $("player-video");
  const template = $("hit-template");

  // what produced the results on screen, so "More results" can fetch the next page
  let current = null; // {kind: "text"|"clip"|"file", ...}
  let offset = 0;
  let busy = false;

  function setStatus(text, kind) {
    statusEl.textContent = text;
    statusEl.className = "status" + (kind ? " " + kind : "");
  }

  function fmtTime(s) {
    s = Math.max(0, Number(s) || 0);
    const m = Math.floor(s / 60);
    const sec = (s - m * 60).toFixed(1).padStart(4, "0");
    return `${m}:${sec}`;
  }

  function baseName(path) {
    const parts = String(path || "").split(/[\\/]/);
    return parts[parts.length - 1] || String(path || "");
  }

  function fmtScore(hit) {
    const s = Number(hit.score);
    const label = hit.reranked ? "match" : "similarity";
    return `${label} ${Number.isFinite(s) ? s.toFixed(3) : "–"}`;
  }

  async function api(url, options) {
    let resp;
    try {
      resp = await fetch(url, options);
    } catch (err) {
      throw new Error("cannot reach the server (" + err.message + ")");
    }
    let body = null;
    try {
      body = await resp.json();
    } catch (err) {
      throw new Error(`server answered ${resp.status} without JSON`);
    }
    if (!resp.ok) {
      const e = body && body.error ? body.error : { message: `HTTP ${resp.status}` };
      throw new Error(e.message || `HTTP ${resp.status}`);
    }
    return body;
  }

  function options() {
    const opts = {
      k: $("k").value,
      group_by_video: $("group-by-video").checked ? "1" : "0",
      rerank: $("rerank").checked ? "1" : "0",
    };
    const filters = { library: $("library").value, min_duration: $("min-duration").value, max_duration: $("max-duration").value };
    for (const [key, value] of Object.entries(filters)) if (value !== "") opts[key] = value;
    return opts;
  }

  function clearResults() {
    results.replaceChildren();
    textResults.replaceChildren();
    textResults.hidden = true;
    results.hidden = false;
    more.hidden = true;
  }

  let opener = null; // the control that opened the player gets the focus back when it closes

  function play(hit) {
    if (player.hidden) opener = document.activeElement;
    player.hidden = false;
    $("player-title").textContent = baseName(hit.video_path);
    $("player-range").textContent = `${fmtTime(hit.start)} – ${fmtTime(hit.end)} · ${fmtScore(hit)}`;
    video.src = hit.video_url; // carries #t=start,end: the browser seeks there and stops at the end
    video.dataset.clipId = String(hit.clip_id);
    const p = video.play();
    if (p && p.catch) p.catch(() => {}); // autoplay may be refused; the controls are there
    player.scrollIntoView({ block: "nearest" });
    video.focus();
  }

  function closePlayer() {
    video.pause();
    video.removeAttribute("src");
    video.load();
    player.hidden = true;
    if (opener && document.contains(opener)) opener.focus();
    opener = null;
  }

  function momentButton(m) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "chip";
    b.textContent = `${fmtTime(m.start)}–${fmtTime(m.end)}`;
    b.title = fmtScore(m);
    b.addEventListener("click", () => play(m));
    return b;
  }

  function renderHit(hit) {
    const li = template.content.firstElementChild.cloneNode(true);
    const name = baseName(hit.video_path);
    li.dataset.clipId = String(hit.clip_id);
    const img = li.querySelector("img");
    img.src = hit.thumbnail_url;
    img.alt = `${name}, ${fmtTime(hit.start)} to ${fmtTime(hit.end)}`;
    li.querySelector(".range").textContent = `${fmtTime(hit.start)}–${fmtTime(hit.end)}`;
    const nameEl = li.querySelector(".name");
    nameEl.textContent = name;
    nameEl.title = String(hit.video_path);
    li.querySelector(".score").textContent = fmtScore(hit);
    const moments = li.querySelector(".moments");
    if (hit.moments && hit.moments.length) {
      const label = document.createElement("span");
      label.className = "muted";
      label.textContent = `${hit.moments.length} more moment${hit.moments.length > 1 ? "s" : ""}: `;
      moments.append(label, ...hit.moments.map(momentButton));
    }
    li.querySelectorAll('[data-action="play"]').forEach((b) => {
      b.addEventListener("click", () => play(hit));
      b.setAttribute("aria-label", `Play ${name} from ${fmtTime(hit.start)}`);
    });
    li.querySelector('[data-action="similar"]').addEventListener("click", () => searchSimilar(hit));
    return li;
  }

  function renderText(hit) {
    const li = document.createElement("li");
    li.className = "caption";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = hit.text;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = fmtScore(hit);
    const find = document.createElement("button");
    find.type = "button";
    find.textContent = "Search clips";
    find.addEventListener("click", () => {
      q.value = hit.text;
      runText(hit.text);
    });
    li.append(text, score, find);
    return li;
  }

  function show(body, append, describe) {
    if (!append) clearResults();
    const hits = body.results || [];
    if (body.target === "texts") {
      results.hidden = true;
      textResults.hidden = false;
      textResults.append(...hits.map(renderText));
    } else {
      results.append(...hits.map(renderHit));
    }
    const shown = (body.target === "texts" ? textResults : results).children.length;
    if (!shown) {
      setStatus(`No results ${describe}. Try other words, or fewer filters.`, "empty");
    } else {
      const rr = body.reranked ? `, top ${body.reranked} re-ranked` : "";
      const unit = hits.length && hits[0].moments ? "video" : "result";
      setStatus(`${shown} ${unit}${shown > 1 ? "s" : ""} ${describe} (${Math.round(body.took_ms)} ms${rr})`, "ok");
    }
    more.hidden = hits.length < Number(body.k || 0);
    offset = (body.offset || 0) + hits.length;
  }

  async function run(request, describe, append) {
    if (busy) return;
    busy = true;
    document.body.classList.add("loading");
    setStatus(append ? "Loading more…" : "Searching…", "loading");
    try {
      show(await request(), append, describe);
    } catch (err) {
      if (!append) clearResults();
      setStatus("Search failed: " + err.message, "error");
    } finally {
      busy = false;
      document.body.classList.remove("loading");
    }
  }

  function textRequest(text, from) {
    const params = new URLSearchParams({ q: text, offset: String(from), ...options() });
    return () => api("/api/v1/search?" + params.toString());
  }

  function runText(text, append) {
    text = text.trim();
    if (!text) {
      setStatus("Type what you are looking for first.", "error");
      q.focus();
      return;
    }
    if (!append) {
      current = { kind: "text", text };
      offset = 0;
      const url = new URL(window.location.href);
      url.searchParams.set("q", text);
      window.history.replaceState(null, "", url);
    }
    run(textRequest(text, append ? offset : 0), `for “${text}”`, append);
  }

  function clipRequest(clipId, from) {
    const body = JSON.stringify({ clip_id: clipId, target: "clips", offset: from, ...options() });
    return () => api("/api/v1/search/video", { method: "POST", headers: { "Content-Type": "application/json" }, body });
  }

  function searchSimilar(hit, append) {
    if (!append) {
      current = { kind: "clip", hit };
      offset = 0;
    }
    const what = `like ${baseName(hit.video_path)} ${fmtTime(hit.start)}–${fmtTime(hit.end)}`;
    run(clipRequest(hit.clip_id, append ? offset : 0), what, append);
  }

  function fileRequest(file, target, from) {
    return () => {
      const data = new FormData();
      data.append("file", file);
      data.append("target", target);
      data.append("offset", String(from));
      for (const [key, value] of Object.entries(options())) data.append(key, value);
      return api("/api/v1/search/video", { method: "POST", body: data });
    };
  }

  function searchFile(file, target, append) {
    if (!append) {
      current = { kind: "file", file, target };
      offset = 0;
    }
    const what = target === "texts" ? `describing ${file.name}` : `like ${file.name}`;
    run(fileRequest(file, target, append ? offset : 0), what, append);
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    runText(q.value);
  });

  $("upload-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const file = $("upload-file").files[0];
    if (!file) {
      setStatus("Choose a video file first.", "error");
      return;
    }
    const target = new FormData(ev.target).get("target") || "texts";
    searchFile(file, target);
  });

  more.addEventListener("click", () => {
    if (!current) return;
    if (current.kind === "text") runText(current.text, true);
    else if (current.kind === "clip") searchSimilar(current.hit, true);
    else searchFile(current.file, current.target, true);
  });

  for (const id of ["group-by-video", "rerank", "k", "library", "min-duration", "max-duration"]) {
    $(id).addEventListener("change", () => {
      if (current && current.kind === "text") runText(current.text);
      else if (current && current.kind === "clip") searchSimilar(current.hit);
      else if (current) searchFile(current.file, current.target);
    });
  }

  $("player-close").addEventListener("click", closePlayer);

  document.addEventListener("keydown", (ev) => {
    const typing = ev.target instanceof HTMLInputElement || ev.target instanceof HTMLTextAreaElement
      || ev.target instanceof HTMLSelectElement;
    if (ev.key === "/" && !typing) {
      ev.preventDefault();
      q.focus();
      q.select();
    } else if (ev.key === "Escape" && !player.hidden) {
      closePlayer();
    }
  });

  api("/api/v1/stats")
    .then((s) => {
      $("stats").textContent = `${s.videos} videos · ${s.clips} clips · ${s.texts} captions · model ${s.model}`;
      const rerank = $("rerank");
      rerank.checked = Boolean(s.rerank_default);
      rerank.disabled = !s.rerank_available;
      rerank.parentElement.title = s.rerank_available
        ? `re-score the top ${s.rerank_k} candidates with the matching head`
        : "this model has no matching head";
      const select = $("library");
      for (const lib of s.libraries || []) {
        const opt = document.createElement("option");
        opt.value = String(lib.id);
        opt.textContent = `${lib.root} (${lib.videos})`;
        select.append(opt);
      }
      if (!s.clips) setStatus("The index is empty: add videos with `vtr index FOLDER`, then search here.", "empty");
    })
    .catch((err) => setStatus("The server is not ready: " + err.message, "error"));

  const initial = new URL(window.location.href).searchParams.get("q");
  if (initial) {
    q.value = initial;
    runText(initial);
  }
})();
