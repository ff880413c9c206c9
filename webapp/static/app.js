// vtr search UI: plain JS against /api/v1, no build step.
// Every piece of data from the server or the user is inserted with textContent or as an attribute
// value set through the DOM API, never through innerHTML, so file names and captions cannot inject markup.
//
// Request state: every search gets a generation number and an AbortController. Starting a search
// aborts the one in flight, and only the newest generation may touch the page, so a slow older
// answer can never overwrite a newer query's results. `shown` describes the results on screen and
// is what "More results" pages through; it changes only when a new first page arrives.
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
  const guide = $("guide");
  const notice = $("notice");

  let shown = null; // {kind: "text"|"clip"|"file", ..., next: offset of the next page}
  let generation = 0; // bumped by every search; answers of older generations are dropped
  let controller = null; // aborts the request in flight
  let suggestions = { examples: [], model_card: null };

  // the settings (re-rank default, libraries) must be on the page before the first search, or a
  // deep link would search with other options than typing the same words does
  const ready = api("/api/v1/stats").then(applyStats, (err) => {
    setStatus("The server is not ready: " + err.message, "error");
  });
  api("/api/v1/suggestions").then(applySuggestions, () => {});

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

  function pct(p) {
    const v = Number(p) * 100;
    return v >= 99.5 && v < 100 ? ">99%" : v > 0 && v < 1 ? "<1%" : `${Math.round(v)}%`;
  }

  // the one readable score: the calibrated match probability; raw scores go to the tooltip
  function fmtScore(hit) {
    if (hit.match_probability !== null && hit.match_probability !== undefined) return `match ${pct(hit.match_probability)}`;
    const s = Number(hit.score);
    return `similarity ${Number.isFinite(s) ? s.toFixed(3) : "–"}`;
  }

  function scoreDetail(hit) {
    const parts = [`cosine ${Number(hit.itc_score).toFixed(3)}`];
    if (hit.match_score !== null && hit.match_score !== undefined) parts.push(`head logit ${Number(hit.match_score).toFixed(2)}`);
    parts.push(hit.reranked ? "re-ranked" : "not re-ranked");
    return parts.join(" · ");
  }

  async function api(url, options) {
    let resp;
    try {
      resp = await fetch(url, options);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new Error("cannot reach the server (" + err.message + ")");
    }
    let body = null;
    try {
      body = await resp.json();
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new Error(`server answered ${resp.status} without JSON`);
    }
    if (!resp.ok) {
      const e = body && body.error ? body.error : { message: `HTTP ${resp.status}` };
      throw new Error(e.message || `HTTP ${resp.status}`);
    }
    return body;
  }

  function applyStats(s) {
    const stats = $("stats");
    stats.textContent = `${s.videos} videos · ${s.clips} clips · ${s.texts} captions · model ${s.model}`;
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
    if (!s.clips) {
      setStatus(s.message || "Nothing indexed yet: add videos with `vtr index FOLDER`, then search here.", "empty");
      document.body.classList.add("empty-library");
    }
    document.body.dataset.ready = "1";
  }

  function exampleButtons(container, list) {
    container.replaceChildren(
      ...list.map((text) => {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "example";
        b.textContent = text;
        b.addEventListener("click", () => {
          q.value = text;
          runText(text);
        });
        return b;
      }),
    );
  }

  function applySuggestions(s) {
    suggestions = s;
    exampleButtons($("examples"), s.examples || []);
    $("examples-block").hidden = !(s.examples || []).length;
    const card = s.model_card;
    const cardEl = $("model-card");
    cardEl.hidden = !card;
    if (card) {
      $("card-world").textContent = `The model ${card.model} knows ${card.world}.`;
      const list = $("card-vocab");
      list.replaceChildren(
        ...Object.entries(card.vocabulary || {}).map(([key, words]) => {
          const li = document.createElement("li");
          const k = document.createElement("strong");
          k.textContent = key + ": ";
          li.append(k, document.createTextNode(words.join(", ")));
          return li;
        }),
      );
      $("card-note").textContent = card.note || "";
    }
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
    notice.hidden = true;
  }

  // ---------------------------------------------------------------- player
  let opener = null; // the control that opened the player gets the focus back when it closes
  let moment = null; // {start, end} of the moment playing; cleared once playback stopped at its end
  let marked = null; // the moment marked on the timeline (stays after playback stopped)
  let frameStep = 1 / 30; // measured from the frames the player presents

  function markTimeline() {
    const d = video.duration;
    const mark = $("timeline-moment");
    const head = $("timeline-head");
    if (!marked || !Number.isFinite(d) || d <= 0) {
      mark.hidden = true;
      return;
    }
    mark.hidden = false;
    mark.style.left = `${(100 * marked.start) / d}%`;
    mark.style.width = `${(100 * Math.max(0, marked.end - marked.start)) / d}%`;
    head.style.left = `${(100 * video.currentTime) / d}%`;
  }

  // stop at the moment's end to the frame: after each presented frame, pause if the next one would
  // lie past the end (the media fragment alone lets the browser run on for a frame or more)
  function watchFrames() {
    if (!video.requestVideoFrameCallback) return;
    let last = null;
    const onFrame = (now, meta) => {
      if (!moment || video.paused) {
        if (moment) video.requestVideoFrameCallback(onFrame);
        return;
      }
      if (last !== null && meta.mediaTime > last) frameStep = Math.min(0.5, meta.mediaTime - last);
      last = meta.mediaTime;
      if (meta.mediaTime + frameStep > moment.end + 1e-3) {
        stopAtEnd(meta.mediaTime);
        return;
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  function stopAtEnd(frameTime) {
    const end = moment.end;
    video.pause();
    // show the last frame inside the moment, not the next event's first frame
    const t = Math.min(frameTime, end);
    if (Math.abs(video.currentTime - t) > 1e-3) video.currentTime = t;
    moment = null; // playing on from here is the user's choice
    player.dataset.stopped = String(end);
    markTimeline();
  }

  video.addEventListener("timeupdate", () => {
    // fallback for browsers without requestVideoFrameCallback
    if (moment && !video.requestVideoFrameCallback && video.currentTime >= moment.end) stopAtEnd(moment.end);
    const d = video.duration;
    if (Number.isFinite(d) && d > 0) $("timeline-head").style.left = `${(100 * video.currentTime) / d}%`;
  });
  video.addEventListener("loadedmetadata", markTimeline);
  video.addEventListener("play", () => {
    if (moment) watchFrames();
  });

  function play(hit) {
    if (player.hidden) opener = document.activeElement;
    player.hidden = false;
    delete player.dataset.stopped;
    $("player-title").textContent = baseName(hit.video_path);
    $("player-range").textContent = `${fmtTime(hit.start)} – ${fmtTime(hit.end)} · ${fmtScore(hit)}`;
    moment = { start: Number(hit.start), end: Number(hit.end) };
    marked = moment;
    $("timeline-label").textContent = `moment ${fmtTime(hit.start)}–${fmtTime(hit.end)}`;
    video.src = hit.video_url; // carries #t=start,end: the browser seeks there
    video.dataset.clipId = String(hit.clip_id);
    markTimeline();
    const p = video.play();
    if (p && p.catch) p.catch(() => {}); // autoplay may be refused; the controls are there
    player.scrollIntoView({ block: "nearest" });
    video.focus();
  }

  function closePlayer() {
    moment = null;
    marked = null;
    video.pause();
    video.removeAttribute("src");
    video.load();
    player.hidden = true;
    if (opener && document.contains(opener)) opener.focus();
    opener = null;
  }

  // ---------------------------------------------------------------- filmstrip scrub
  // The indexer stores each clip's sampled frames side by side (square cells); hovering the
  // thumbnail shows the frame under the pointer, focusing it plays them in a loop, and the arrow
  // keys step through them, so motion and order can be judged without playing the video.
  function filmstrip(button, url) {
    const strip = button.querySelector(".strip");
    let frames = 0;
    let frame = -1;
    let timer = null;
    let loading = null;

    function load() {
      if (!loading) {
        loading = new Promise((resolve) => {
          const img = new Image();
          img.onload = () => {
            frames = Math.max(1, Math.round(img.naturalWidth / Math.max(1, img.naturalHeight)));
            strip.style.backgroundImage = `url("${url}")`;
            strip.style.backgroundSize = `${frames * 100}% 100%`;
            button.dataset.frames = String(frames);
            resolve(true);
          };
          img.onerror = () => resolve(false);
          img.src = url;
        });
      }
      return loading;
    }

    function show(i) {
      if (!frames) return;
      frame = ((i % frames) + frames) % frames;
      strip.hidden = false;
      strip.style.backgroundPosition = frames > 1 ? `${(100 * frame) / (frames - 1)}% 0` : "0 0";
      button.dataset.frame = String(frame);
    }

    function hide() {
      clearInterval(timer);
      timer = null;
      strip.hidden = true;
      delete button.dataset.frame;
    }

    button.addEventListener("pointermove", (ev) => {
      load().then((ok) => {
        if (!ok) return;
        const r = button.getBoundingClientRect();
        show(Math.min(frames - 1, Math.floor(((ev.clientX - r.left) / Math.max(1, r.width)) * frames)));
      });
    });
    button.addEventListener("pointerleave", () => {
      if (document.activeElement !== button) hide();
    });
    button.addEventListener("focus", () => {
      load().then((ok) => {
        if (!ok || document.activeElement !== button) return;
        show(0);
        clearInterval(timer);
        timer = setInterval(() => show(frame + 1), 400);
      });
    });
    button.addEventListener("blur", hide);
    button.addEventListener("keydown", (ev) => {
      if (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft") return;
      ev.preventDefault();
      clearInterval(timer);
      timer = null;
      load().then((ok) => ok && show(frame + (ev.key === "ArrowRight" ? 1 : -1)));
    });
  }

  // ---------------------------------------------------------------- results
  function momentButton(m) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "chip";
    b.textContent = `${fmtTime(m.start)}–${fmtTime(m.end)}`;
    b.title = `${fmtScore(m)} (${scoreDetail(m)})`;
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
    const score = li.querySelector(".score");
    score.textContent = fmtScore(hit);
    score.title = scoreDetail(hit);
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
    const thumb = li.querySelector("button.thumb");
    if (hit.filmstrip_url) {
      filmstrip(thumb, hit.filmstrip_url);
      thumb.setAttribute("aria-describedby", "strip-help");
    }
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
    score.title = scoreDetail(hit);
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

  function showNoGoodMatch(body, describe) {
    notice.hidden = false;
    const best = body.best_match_probability;
    $("notice-text").textContent =
      `Nothing in the library is a good match ${describe}: the best match is ${pct(best)}, ` +
      `below ${pct(body.min_match_probability)}. These are the closest results, not matches.`;
    exampleButtons($("notice-examples"), (suggestions.examples || []).slice(0, 4));
    $("notice-examples-label").hidden = !(suggestions.examples || []).length;
  }

  function show(body, append, describe, request) {
    if (!append) clearResults();
    const hits = body.results || [];
    const weak = body.no_good_match === true;
    if (body.target === "texts") {
      results.hidden = true;
      textResults.hidden = false;
      textResults.append(...hits.map(renderText));
    } else {
      results.append(...hits.map(renderHit));
    }
    results.classList.toggle("weak", weak);
    textResults.classList.toggle("weak", weak);
    const count = (body.target === "texts" ? textResults : results).children.length;
    if (!count) {
      const empty = document.body.classList.contains("empty-library")
        ? "Nothing indexed yet: add videos first."
        : `No results ${describe}. Try other words, or fewer filters.`;
      setStatus(empty, "empty");
    } else if (weak) {
      if (!append) showNoGoodMatch(body, describe);
      setStatus(`No good match ${describe}: showing the ${count} closest (${Math.round(body.took_ms)} ms)`, "nomatch");
    } else {
      const rr = body.reranked ? `, top ${body.reranked} re-ranked` : "";
      const unit = hits.length && hits[0].moments ? "video" : "result";
      setStatus(`${count} ${unit}${count > 1 ? "s" : ""} ${describe} (${Math.round(body.took_ms)} ms${rr})`, "ok");
    }
    more.hidden = hits.length < Number(body.k || 0);
    shown = { ...request, next: (body.offset || 0) + hits.length };
    guide.hidden = true;
  }

  // run one search; a newer one aborts it, and its answer is dropped if it arrives anyway
  async function run(fetcher, describe, request, append) {
    await ready;
    if (controller) controller.abort();
    const mine = ++generation;
    controller = new AbortController();
    const signal = controller.signal;
    document.body.classList.add("loading");
    setStatus(append ? "Loading more…" : "Searching…", "loading");
    try {
      const body = await fetcher(signal, append ? shown.next : 0);
      if (mine !== generation) return;
      show(body, append, describe, request);
    } catch (err) {
      if (mine !== generation || err.name === "AbortError") return;
      if (!append) {
        clearResults();
        shown = null;
      }
      setStatus("Search failed: " + err.message, "error");
    } finally {
      if (mine === generation) {
        document.body.classList.remove("loading");
        controller = null;
      }
    }
  }

  function setUrl(text) {
    const url = new URL(window.location.href);
    if (text) url.searchParams.set("q", text);
    else url.searchParams.delete("q");
    window.history.replaceState(null, "", url);
  }

  function textFetcher(text) {
    const opts = options();
    return (signal, from) => {
      const params = new URLSearchParams({ q: text, offset: String(from), ...opts });
      return api("/api/v1/search?" + params.toString(), { signal });
    };
  }

  function runText(text) {
    text = text.trim();
    if (!text) {
      setStatus("Type what you are looking for first.", "error");
      q.focus();
      return;
    }
    setUrl(text);
    return ready.then(() => run(textFetcher(text), `for “${text}”`, { kind: "text", text }));
  }

  function clipFetcher(clipId) {
    const opts = options();
    return (signal, from) => {
      const body = JSON.stringify({ clip_id: clipId, target: "clips", offset: from, ...opts });
      return api("/api/v1/search/video", { method: "POST", headers: { "Content-Type": "application/json" }, body, signal });
    };
  }

  function describeClip(hit) {
    return `like ${baseName(hit.video_path)} ${fmtTime(hit.start)}–${fmtTime(hit.end)}`;
  }

  function searchSimilar(hit) {
    q.value = ""; // the box shows what is searched: here a clip, not the old words
    q.placeholder = `Clips ${describeClip(hit)}`;
    setUrl(null);
    return run(clipFetcher(hit.clip_id), describeClip(hit), { kind: "clip", hit });
  }

  function fileFetcher(file, target) {
    const opts = options();
    return (signal, from) => {
      const data = new FormData();
      data.append("file", file);
      data.append("target", target);
      data.append("offset", String(from));
      for (const [key, value] of Object.entries(opts)) data.append(key, value);
      return api("/api/v1/search/video", { method: "POST", body: data, signal });
    };
  }

  function describeFile(file, target) {
    return target === "texts" ? `describing ${file.name}` : `like ${file.name}`;
  }

  function searchFile(file, target) {
    q.value = "";
    q.placeholder = `${target === "texts" ? "Captions" : "Clips"} ${describeFile(file, target)}`;
    setUrl(null);
    return run(fileFetcher(file, target), describeFile(file, target), { kind: "file", file, target });
  }

  function rerun(request, append) {
    if (request.kind === "text") {
      if (append) return run(textFetcher(request.text), `for “${request.text}”`, request, true);
      return runText(request.text);
    }
    if (request.kind === "clip") {
      if (append) return run(clipFetcher(request.hit.clip_id), describeClip(request.hit), request, true);
      return searchSimilar(request.hit);
    }
    if (append) return run(fileFetcher(request.file, request.target), describeFile(request.file, request.target), request, true);
    return searchFile(request.file, request.target);
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

  // "More results" continues the query whose results are on screen, never one still loading
  more.addEventListener("click", () => {
    if (shown) rerun(shown, true);
  });

  for (const id of ["group-by-video", "rerank", "k", "library", "min-duration", "max-duration"]) {
    $(id).addEventListener("change", () => {
      if (shown) rerun(shown, false);
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

  const initial = new URL(window.location.href).searchParams.get("q");
  if (initial) {
    q.value = initial;
    runText(initial);
  }
})();
