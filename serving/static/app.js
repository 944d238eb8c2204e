// Sketch pad for zero-shot sketch-based image retrieval. No framework, no build step.
// Served under /ui/; the APIs live at the root: POST /search, POST /explain, GET /info.
"use strict";

(() => {
  const SEARCH_DELAY_MS = 400;
  const BACKGROUND = "#ffffff";
  const INK = "#000000";

  const $ = (id) => document.getElementById(id);
  const pad = $("pad");
  const ctx = pad.getContext("2d", { willReadFrequently: true });
  const penWidth = $("pen-width");
  const penWidthValue = $("pen-width-value");
  const undoButton = $("undo");
  const clearButton = $("clear");
  const upload = $("upload");
  const category = $("category");
  const categoryList = $("category-list");
  const styleSelect = $("style");
  const kSelect = $("k");
  const statusLine = $("status");
  const modelInfo = $("model-info");
  const explainHint = $("explain-hint");
  const results = $("results");
  const explanation = $("explanation");
  const explanationText = $("explanation-text");
  const explanationImg = $("explanation-img");

  // History of drawing actions, replayed on undo: {type: "stroke", width, points: [[x, y], ...]}
  // or {type: "image", image} (an uploaded picture: replaces what was drawn before it).
  const history = [];
  let current = null; // the stroke being drawn: {pointerId, action}

  // ---------------------------------------------------------------- state shown to tests and people
  let completedSearches = 0;

  function setState(state) {
    document.body.dataset.state = state;
  }

  function setPending(pending) {
    document.body.dataset.pending = pending ? "true" : "false";
  }

  function setStatus(text, kind = "") {
    statusLine.textContent = text;
    statusLine.className = "status" + (kind ? " " + kind : "");
  }

  // ---------------------------------------------------------------- drawing
  function fillBackground() {
    ctx.save();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.globalCompositeOperation = "source-over";
    ctx.fillStyle = BACKGROUND;
    ctx.fillRect(0, 0, pad.width, pad.height);
    ctx.restore();
  }

  function strokeStyle(width) {
    ctx.strokeStyle = INK;
    ctx.fillStyle = INK;
    ctx.lineWidth = width;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
  }

  function drawDot(x, y, width) {
    strokeStyle(width);
    ctx.beginPath();
    ctx.arc(x, y, width / 2, 0, Math.PI * 2);
    ctx.fill();
  }

  function drawSegment(from, to, width) {
    strokeStyle(width);
    ctx.beginPath();
    ctx.moveTo(from[0], from[1]);
    ctx.lineTo(to[0], to[1]);
    ctx.stroke();
  }

  function drawStroke(action) {
    const pts = action.points;
    if (pts.length === 0) return;
    if (pts.length === 1) {
      drawDot(pts[0][0], pts[0][1], action.width);
      return;
    }
    strokeStyle(action.width);
    ctx.beginPath();
    ctx.moveTo(pts[0][0], pts[0][1]);
    for (let i = 1; i < pts.length; i += 1) ctx.lineTo(pts[i][0], pts[i][1]);
    ctx.stroke();
  }

  function drawImageContained(image) {
    fillBackground();
    const iw = image.width;
    const ih = image.height;
    if (!iw || !ih) return;
    const scale = Math.min(pad.width / iw, pad.height / ih);
    const w = iw * scale;
    const h = ih * scale;
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(image, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  }

  function redraw() {
    fillBackground();
    for (const action of history) {
      if (action.type === "image") drawImageContained(action.image);
      else drawStroke(action);
    }
  }

  function isEmpty() {
    return history.length === 0 && current === null;
  }

  function updateButtons() {
    undoButton.disabled = history.length === 0;
    clearButton.disabled = history.length === 0;
  }

  // Pointer position in canvas pixels (the canvas may be scaled by CSS).
  function toCanvas(event) {
    const rect = pad.getBoundingClientRect();
    const x = ((event.clientX - rect.left) / rect.width) * pad.width;
    const y = ((event.clientY - rect.top) / rect.height) * pad.height;
    return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
  }

  function onPointerDown(event) {
    if (current !== null) return; // one stroke at a time (ignore a second finger)
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    try {
      pad.setPointerCapture(event.pointerId);
    } catch (_) {
      // the pointer may already be gone
    }
    cancelScheduledSearch(); // do not search in the middle of a stroke
    setPending(true); // but one will follow when it ends
    const action = { type: "stroke", width: Number(penWidth.value), points: [toCanvas(event)] };
    current = { pointerId: event.pointerId, action };
    drawDot(action.points[0][0], action.points[0][1], action.width);
  }

  function onPointerMove(event) {
    if (current === null || event.pointerId !== current.pointerId) return;
    event.preventDefault();
    const events = typeof event.getCoalescedEvents === "function" ? event.getCoalescedEvents() : [];
    const samples = events.length > 0 ? events : [event];
    const pts = current.action.points;
    for (const sample of samples) {
      const p = toCanvas(sample);
      const last = pts[pts.length - 1];
      if (last[0] === p[0] && last[1] === p[1]) continue;
      drawSegment(last, p, current.action.width);
      pts.push(p);
    }
  }

  function onPointerEnd(event) {
    if (current === null || event.pointerId !== current.pointerId) return;
    event.preventDefault();
    if (event.type === "pointerup") onPointerMove(event);
    try {
      if (pad.hasPointerCapture(event.pointerId)) pad.releasePointerCapture(event.pointerId);
    } catch (_) {
      // nothing to release
    }
    history.push(current.action);
    current = null;
    updateButtons();
    changed();
  }

  pad.addEventListener("pointerdown", onPointerDown);
  pad.addEventListener("pointermove", onPointerMove);
  pad.addEventListener("pointerup", onPointerEnd);
  pad.addEventListener("pointercancel", onPointerEnd);
  pad.addEventListener("lostpointercapture", onPointerEnd);
  pad.addEventListener("contextmenu", (event) => event.preventDefault());

  function undo() {
    if (current !== null || history.length === 0) return;
    history.pop();
    redraw();
    updateButtons();
    changed();
  }

  function clearPad() {
    if (current !== null) return;
    history.length = 0;
    redraw();
    updateButtons();
    changed();
  }

  undoButton.addEventListener("click", undo);
  clearButton.addEventListener("click", clearPad);

  document.addEventListener("keydown", (event) => {
    if (!(event.ctrlKey || event.metaKey) || event.shiftKey || event.altKey) return;
    if (event.key !== "z" && event.key !== "Z") return;
    const target = event.target;
    // Text fields keep their own undo.
    if (target instanceof HTMLInputElement && target.type === "text") return;
    if (target instanceof HTMLTextAreaElement || (target && target.isContentEditable)) return;
    event.preventDefault();
    undo();
  });

  penWidth.addEventListener("input", () => {
    penWidthValue.textContent = penWidth.value;
  });

  upload.addEventListener("change", async () => {
    const file = upload.files && upload.files[0];
    upload.value = ""; // the same file can be chosen again
    if (!file) return;
    let image;
    try {
      image = await createImageBitmap(file);
    } catch (_) {
      setState("error");
      setStatus(`Could not read "${file.name}" as an image.`, "error");
      return;
    }
    if (current !== null) return; // a stroke started meanwhile: drop the upload rather than mix them
    history.push({ type: "image", image });
    redraw();
    updateButtons();
    changed();
  });

  // ---------------------------------------------------------------- errors from the service
  // Errors come as {"error": "message"}, sometimes other JSON shapes or plain text.
  function messageFromBody(text, response) {
    const fallback = `HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}`;
    const trimmed = (text || "").trim();
    if (!trimmed) return fallback;
    let body;
    try {
      body = JSON.parse(trimmed);
    } catch (_) {
      return trimmed.length > 500 ? trimmed.slice(0, 500) + "…" : trimmed;
    }
    const pick = (value) => {
      if (value === null || value === undefined) return null;
      if (typeof value === "string") return value;
      if (Array.isArray(value)) {
        const parts = value.map((item) => pick(item)).filter(Boolean);
        return parts.length ? parts.join("; ") : null;
      }
      if (typeof value === "object") {
        for (const key of ["error", "message", "detail", "msg"]) {
          const found = pick(value[key]);
          if (found) return found;
        }
        return JSON.stringify(value);
      }
      return String(value);
    };
    return pick(body) || fallback;
  }

  async function readError(response) {
    let text = "";
    try {
      text = await response.text();
    } catch (_) {
      // body unreadable
    }
    return messageFromBody(text, response);
  }

  function canvasBlob() {
    return new Promise((resolve, reject) => {
      pad.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("could not encode the sketch"))), "image/png");
    });
  }

  // ---------------------------------------------------------------- search (debounced, latest wins)
  let searchTimer = null;
  let searchController = null;
  let searchSeq = 0;

  function cancelScheduledSearch() {
    if (searchTimer !== null) {
      clearTimeout(searchTimer);
      searchTimer = null;
    }
    setPending(false);
  }

  function abortSearch() {
    searchSeq += 1; // any answer still on its way is stale now
    if (searchController !== null) {
      searchController.abort();
      searchController = null;
    }
  }

  function changed() {
    cancelScheduledSearch();
    if (isEmpty()) {
      abortSearch();
      showResults([]);
      hideExplanation();
      setState("idle");
      setStatus("Draw something to search.");
      return;
    }
    setPending(true);
    searchTimer = setTimeout(() => {
      searchTimer = null;
      search();
    }, SEARCH_DELAY_MS);
  }

  async function search() {
    abortSearch();
    setPending(false);
    const seq = searchSeq;
    const controller = new AbortController();
    searchController = controller;
    setState("searching");
    setStatus("Searching…", "busy");
    const started = performance.now();
    try {
      const blob = await canvasBlob();
      if (seq !== searchSeq) return;
      const form = new FormData();
      form.append("sketch", blob, "sketch.png");
      form.append("k", kSelect.value);
      const wanted = category.value.trim();
      if (wanted) form.append("category", wanted);
      const style = styleSelect.value;
      if (style) form.append("style", style);
      const response = await fetch("/search", { method: "POST", body: form, signal: controller.signal });
      if (!response.ok) {
        const message = await readError(response);
        if (seq !== searchSeq) return;
        if (response.status === 422 && /sketch is empty/.test(message)) {
          // a first dot or a short tick: not a mistake, just not enough ink to search with yet
          showResults([]);
          setStatus("Keep drawing: there is too little ink to search with yet.");
          finishSearch("done");
          return;
        }
        throw new Error(message);
      }
      const body = await response.json();
      if (seq !== searchSeq) return;
      const items = Array.isArray(body.results) ? body.results : [];
      const elapsed = performance.now() - started;
      showResults(items);
      let text = `${items.length} result${items.length === 1 ? "" : "s"} in ${Math.round(elapsed)} ms`;
      if (typeof body.elapsed_ms === "number") text += ` (server ${body.elapsed_ms.toFixed(1)} ms)`;
      if (wanted) text += ` · category “${wanted}”`;
      if (style) text += ` · style ${style}`;
      setStatus(text, "ok");
      finishSearch("done");
    } catch (error) {
      if (seq !== searchSeq || (error && error.name === "AbortError")) return;
      const message = error instanceof TypeError ? `Network error: ${error.message}` : error.message;
      setStatus(message || "Search failed.", "error");
      finishSearch("error");
    } finally {
      if (searchController === controller) searchController = null;
    }
  }

  function finishSearch(state) {
    completedSearches += 1;
    document.body.dataset.searches = String(completedSearches);
    setState(state);
  }

  kSelect.addEventListener("change", changed);
  category.addEventListener("input", changed);
  styleSelect.addEventListener("change", changed);

  // ---------------------------------------------------------------- results
  let selectedCard = null;

  function showResults(items) {
    results.replaceChildren();
    selectedCard = null;
    for (const item of items) {
      const li = document.createElement("li");
      const card = document.createElement("button");
      card.type = "button";
      card.className = "result";
      card.dataset.id = String(item.id);
      card.dataset.instanceId = String(item.instance_id ?? "");
      card.dataset.category = String(item.category ?? "");
      card.dataset.style = String(item.style ?? "");
      card.dataset.rank = String(item.rank ?? "");
      card.setAttribute("aria-pressed", "false");
      const label = item.label ? `${item.label} ` : "";
      card.setAttribute("aria-label",
        `Rank ${item.rank}: ${label}${item.category ?? ""} ${item.instance_id ?? ""}, score ${formatScore(item.score)}`);

      const img = document.createElement("img");
      img.src = item.image_url;
      img.alt = item.label || item.category || `photo ${item.id}`;
      img.loading = "lazy";
      img.decoding = "async";
      img.width = 128;
      img.height = 128;

      const rank = document.createElement("span");
      rank.className = "rank";
      rank.textContent = `#${item.rank}`;

      const score = document.createElement("span");
      score.className = "score";
      score.textContent = formatScore(item.score);

      const cat = document.createElement("span");
      cat.className = "category";
      cat.textContent = item.category ?? "";

      const instance = document.createElement("span");
      instance.className = "instance-id";
      instance.textContent = item.label ? `${item.instance_id} · ${item.label}` : String(item.instance_id ?? "");

      const style = document.createElement("span");
      style.className = "style";
      style.textContent = item.style ?? "";

      card.append(img, rank, score, cat, instance, style);
      card.addEventListener("click", () => explain(item, card));
      li.append(card);
      results.append(li);
    }
  }

  function formatScore(score) {
    return typeof score === "number" ? score.toFixed(3) : String(score ?? "");
  }

  // ---------------------------------------------------------------- explanation
  let explainController = null;
  let explainSeq = 0;

  function hideExplanation() {
    explainSeq += 1;
    if (explainController !== null) explainController.abort();
    explainController = null;
    explanation.hidden = true;
    explanation.dataset.state = "idle";
    explanationText.textContent = "";
    explanationImg.hidden = true;
    explanationImg.removeAttribute("src");
  }

  async function explain(item, card) {
    if (selectedCard) selectedCard.setAttribute("aria-pressed", "false");
    selectedCard = card;
    card.setAttribute("aria-pressed", "true");

    explainSeq += 1;
    const seq = explainSeq;
    if (explainController !== null) explainController.abort();
    const controller = new AbortController();
    explainController = controller;

    explanation.hidden = false;
    explanation.dataset.state = "loading";
    explanation.classList.remove("error");
    explanationImg.hidden = true;
    explanationImg.removeAttribute("src");
    explanationText.textContent = `Explaining result #${item.rank} (${item.category}, ${item.instance_id})…`;
    try {
      const blob = await canvasBlob();
      if (seq !== explainSeq) return;
      const form = new FormData();
      form.append("sketch", blob, "sketch.png");
      form.append("photo_id", String(item.id));
      const response = await fetch("/explain", { method: "POST", body: form, signal: controller.signal });
      if (!response.ok) {
        const message = await readError(response);
        if (seq !== explainSeq) return;
        throw new Error(message);
      }
      const body = await response.json();
      if (seq !== explainSeq) return;
      const matches = Array.isArray(body.matches) ? body.matches.length : 0;
      let text = `Result #${item.rank} (${item.category}, ${item.instance_id}): score ${formatScore(body.score)}`;
      if (matches) text += `, ${matches} matching region${matches === 1 ? "" : "s"}`;
      if (body.method) text += ` · ${body.method}`;
      explanationText.textContent = text;
      if (typeof body.picture === "string" && body.picture) {
        explanationImg.src = body.picture;
        explanationImg.hidden = false;
      } else {
        explanationText.textContent += " (no picture returned)";
      }
      explanation.dataset.state = "done";
    } catch (error) {
      if (seq !== explainSeq || (error && error.name === "AbortError")) return;
      const message = error instanceof TypeError ? `Network error: ${error.message}` : error.message;
      explanation.classList.add("error");
      explanationText.textContent = `No explanation for result #${item.rank}: ${message || "request failed"}`;
      explanation.dataset.state = "error";
    } finally {
      if (explainController === controller) explainController = null;
    }
  }

  // ---------------------------------------------------------------- model information
  function applyLimits(limits) {
    if (!limits || typeof limits !== "object") return;
    const maxK = Number(limits.max_k ?? limits.k_max);
    if (!Number.isInteger(maxK) || maxK < 1) return;
    for (const option of Array.from(kSelect.options)) {
      if (Number(option.value) > maxK) option.remove();
    }
    if (kSelect.options.length === 0) kSelect.add(new Option(String(maxK), String(maxK), true, true));
  }

  async function loadInfo() {
    try {
      const response = await fetch("/info", { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(await readError(response));
      const info = await response.json();
      const model = info.model || {};
      const parts = [];
      if (model.method) parts.push(`model ${model.method}`);
      if (model.version) parts.push(`version ${model.version}`);
      if (typeof info.gallery_size === "number") parts.push(`${info.gallery_size} photos in the gallery`);
      modelInfo.textContent = parts.length ? parts.join(" · ") : "Model information unavailable.";
      const capabilities = Array.isArray(info.capabilities) ? info.capabilities : [];
      explainHint.hidden = !capabilities.includes("explain");
      document.body.dataset.capabilities = capabilities.join(" ");
      applyLimits(info.limits);
      if (Array.isArray(info.categories)) {
        categoryList.replaceChildren(...info.categories.map((name) => new Option(String(name))));
      }
      if (Array.isArray(info.styles) && info.styles.length > 1) {
        styleSelect.replaceChildren(new Option("every style", ""),
                                    ...info.styles.map((name) => new Option(String(name), String(name))));
      }
      document.body.dataset.info = "loaded";
    } catch (error) {
      modelInfo.textContent = `Model information unavailable: ${error.message}`;
      modelInfo.classList.add("error");
      document.body.dataset.info = "failed";
    }
  }

  // ---------------------------------------------------------------- start
  redraw();
  updateButtons();
  setPending(false);
  setState("idle");
  loadInfo();
})();
