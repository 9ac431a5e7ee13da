// focuskit web page: plain JavaScript, no framework, no CDN. Talks to the JSON API of the same server.
// Images are fetched with the Authorization header (when a token is set) and shown from blob URLs, so the token
// never ends up in a URL, a log line or the browser history.
"use strict";

const state = {
  token: sessionStorage.getItem("focuskit-token") || "",
  // teach panel: {source: File | {path, frame}, label, img, box: [x1,y1,x2,y2] | null, how: "box" | "auto" |
  // "none" | "finding", score, mask (RLE) | null, edited: true once the user drew the box}
  views: [],
  health: null,
  concepts: [],       // the last GET /concepts, for colors and the Localize examples
  status: null,       // the message shown: {tab, until} decide when it goes away
  tab: "teach",
};

// --- small helpers ----------------------------------------------------------------------------------------
const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
};

// A message belongs to the tab it was raised on and goes away when the user leaves that tab; `until`, when given,
// is checked after every change the page makes (a box drawn, a view removed) and clears the message once true.
function setStatus(text, kind = "", { tab = state.tab, until = null } = {}) {
  if (text && tab && tab !== state.tab) return; // raised by a tab the user has left: it would only confuse here
  const s = $("#status");
  s.textContent = text;
  s.className = kind;
  state.status = text ? { tab, until } : null;
}

function recheckStatus() {
  const st = state.status;
  if (st && ((st.tab && st.tab !== state.tab) || (st.until && st.until()))) setStatus("");
}

// Run `fn` with `button` disabled and spinning (every call that can take more than a moment goes through this).
async function busy(button, fn) {
  if (button) {
    button.disabled = true;
    button.classList.add("busy");
  }
  try {
    return await fn();
  } finally {
    if (button) {
      button.disabled = false;
      button.classList.remove("busy");
    }
  }
}

class ApiError extends Error {}

// The concept-name rule of focuskit/core/names.py (the server applies it too; this only answers sooner).
function conceptNameError(raw) {
  const name = raw.trim();
  const rule = "1-200 characters, no '/' or '\\', not '.' or '..', no control characters";
  if (!name) return `a concept name must be non-empty (${rule})`;
  if (name.length > 200) return `a concept name may have at most 200 characters, got ${name.length}`;
  if (name === "." || name === "..") return `a concept name may not be '${name}' (${rule})`;
  for (const bad of ["/", "\\"]) if (name.includes(bad)) return `a concept name may not contain '${bad}' (${rule})`;
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return `a concept name may not contain control characters (${rule})`;
  return null;
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.token) headers.set("Authorization", `Bearer ${state.token}`);
  headers.set("X-Focuskit", "1"); // the server refuses writes without it unless the Origin is its own
  const resp = await fetch(path, { ...options, headers });
  if (resp.status === 401) {
    $("#token-form").hidden = false;
    throw new ApiError("this server needs a token: enter it at the top right");
  }
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    try {
      const body = await resp.json();
      if (body.message) message = body.message;
    } catch (_) { /* not JSON */ }
    throw new ApiError(message);
  }
  return resp;
}

const apiJson = async (path, options) => (await api(path, options)).json();

async function blobUrl(path) {
  const resp = await api(path);
  return URL.createObjectURL(await resp.blob());
}

function loadImg(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new ApiError("the browser cannot display this image"));
    img.src = src;
  });
}

const q = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== "" && v !== undefined)).toString();
const libraryUrl = (kind, path, frame) => `/library/${kind}/${path.split("/").map(encodeURIComponent).join("/")}` + (frame === null || frame === undefined ? "" : `?frame=${frame}`);

async function guarded(fn) {
  const tab = state.tab; // an error belongs to the tab whose action failed, even if the user moved on meanwhile
  try {
    await fn();
  } catch (err) {
    setStatus(err.message || String(err), "error", { tab });
    if (!(err instanceof ApiError)) console.error(err);
  }
}

// Let the user drag a box on a view's canvas; the box is kept in image pixels on `view.box`.
function makeBoxable(view, canvasInfo, onChange) {
  const { canvas, scale } = canvasInfo;
  let start = null;
  const toImage = (ev) => {
    const r = canvas.getBoundingClientRect();
    const x = ((ev.clientX - r.left) * canvas.width) / r.width / scale;
    const y = ((ev.clientY - r.top) * canvas.height) / r.height / scale;
    return [Math.max(0, Math.min(view.img.naturalWidth, x)), Math.max(0, Math.min(view.img.naturalHeight, y))];
  };
  const boxOf = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  canvas.addEventListener("pointerdown", (ev) => {
    start = toImage(ev);
    state.dragging = true;
    canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!start) return;
    canvasInfo.draw(boxOf(start, toImage(ev)));
  });
  canvas.addEventListener("pointerup", (ev) => {
    if (!start) return;
    const box = boxOf(start, toImage(ev));
    start = null;
    state.dragging = false;
    if (box[2] - box[0] >= 2 && box[3] - box[1] >= 2) {
      view.box = box.map((v) => Math.round(v * 10) / 10);
      view.how = "box";
      view.edited = true;
      view.mask = null; // the mask was the old box's; with Masks on, the server segments the new box when saving
    }
    onChange();
  });
}

// --- teach panel ------------------------------------------------------------------------------------------
function viewCaption(view) {
  const box = view.box ? view.box.map(Math.round).join(", ") : "";
  if (view.how === "finding") return "finding the object...";
  if (view.how === "none") return "no object found: drag a box around it";
  if (view.how === "auto") return `auto box ${box} (confidence ${view.score.toFixed(2)}): drag to redraw`;
  return view.box ? `box ${box}` : "drag a box around the object";
}

function renderViews() {
  if (state.dragging) return; // an answer arriving mid-drag waits: the drag's end renders everything
  const box = $("#views");
  box.replaceChildren();
  state.views.forEach((view, i) => {
    const items = () => [{ box: view.box, mask: view.mask, dashed: view.how === "auto" }];
    const info = imageCanvas(view.img, items(), 320);
    const caption = el("div", { class: "caption box-caption" }, viewCaption(view));
    makeBoxable(view, info, () => renderViews());
    const remove = el("button", { class: "secondary", type: "button", onclick: () => { state.views.splice(i, 1); renderViews(); } }, "Remove");
    box.append(el("div", { class: "card view", "data-label": view.label, "data-how": view.how || "" }, info.canvas, el("div", { class: "caption" }, view.label), caption, el("div", { class: "actions" }, remove)));
  });
  recheckStatus();
}

// Ask the server where the object is on every view the user has not boxed (and for masks, when asked); the
// answers fill the views in place unless the user drew a box meanwhile.
async function findObjects({ all = false } = {}) {
  const segment = $("#teach-segment").checked;
  const targets = state.views.filter((v) => !v.edited && (all || !v.box || (segment && !v.mask)));
  if (targets.length === 0) return;
  const form = new FormData();
  const boxes = [], library = [];
  // Every view goes along (the boxed ones pull the automatic picks towards the same object); only targets get
  // null boxes. Uploads first, then library picks: the server answers in that order.
  const order = [...state.views.filter((v) => v.source instanceof File), ...state.views.filter((v) => !(v.source instanceof File))];
  for (const v of order) {
    const box = targets.includes(v) ? null : v.box;
    if (v.source instanceof File) {
      form.append("images", v.source, v.source.name);
      boxes.push(box);
    } else {
      library.push({ path: v.source.path, frame: v.source.frame, box });
    }
  }
  form.append("boxes", JSON.stringify(boxes));
  form.append("library_images", JSON.stringify(library));
  form.append("segment", segment ? "true" : "false");
  for (const v of targets) v.how = "finding";
  renderViews();
  try {
    const data = await busy($("#autobox"), () => apiJson("/autobox", { method: "POST", body: form }));
    data.views.forEach((found, i) => {
      const v = order[i];
      if (!state.views.includes(v) || v.edited) return;
      if (targets.includes(v)) {
        v.box = found.box;
        v.how = found.how === "auto" ? "auto" : found.how === "none" ? "none" : "box";
        v.score = found.score;
      }
      if (segment && found.mask) v.mask = found.mask;
    });
  } finally {
    for (const v of targets) if (v.how === "finding") v.how = v.box ? "box" : null;
    renderViews();
  }
}

async function addUploadedViews(files) {
  for (const file of files) {
    const img = await loadImg(URL.createObjectURL(file));
    state.views.push({ source: file, label: file.name, img, box: null, how: null, mask: null });
  }
  renderViews();
  await findObjects();
}

async function addLibraryView(item) {
  const img = await loadImg(await blobUrl(libraryUrl("image", item.path, item.frame)));
  const label = item.frame === null ? item.path : `${item.path} @ frame ${item.frame}`;
  state.views.push({ source: { path: item.path, frame: item.frame }, label, img, box: null, how: null, mask: null });
  renderViews();
  await findObjects();
}

async function togglePicker() {
  const picker = $("#library-picker");
  if (!picker.hidden) {
    picker.hidden = true;
    return;
  }
  const data = await apiJson("/library/items?limit=200");
  picker.replaceChildren();
  if (data.items.length === 0) picker.append(el("span", { class: "hint" }, "The library index is empty (or still being built)."));
  for (const item of data.items) {
    const img = el("img", { alt: item.path, title: item.path, "data-path": item.path });
    img.addEventListener("click", () => guarded(() => addLibraryView(item)));
    picker.append(img);
    blobUrl(libraryUrl("thumbnail", item.path, item.frame)).then((u) => { img.src = u; }).catch(() => {});
  }
  picker.hidden = false;
}

async function createConcept(ev) {
  ev.preventDefault();
  const name = $("#concept-name").value.trim();
  const nameError = conceptNameError(name);
  if (nameError) {
    setStatus(nameError, "error", { until: () => !conceptNameError($("#concept-name").value) });
    return;
  }
  if (state.views.length === 0) throw new ApiError("add at least one photo first");
  const missing = () => state.views.filter((v) => !v.box).map((v) => v.label);
  if (missing().length) {
    setStatus(`no box yet on: ${missing().join(", ")}: drag one around the object`, "error", { until: () => missing().length === 0 });
    return;
  }
  const form = new FormData();
  form.append("name", name);
  form.append("context", $("#concept-context").value);
  form.append("segment", $("#teach-segment").checked ? "true" : "false");
  const boxes = [];
  const library = [];
  for (const v of state.views) {
    if (v.source instanceof File) {
      form.append("images", v.source, v.source.name);
      boxes.push(v.box);
    } else {
      library.push({ path: v.source.path, frame: v.source.frame, box: v.box });
    }
  }
  form.append("boxes", JSON.stringify(boxes));
  form.append("library_images", JSON.stringify(library));
  const concept = await busy($("#create-concept"), () => apiJson("/concepts", { method: "POST", body: form }));
  await refreshConcepts();
  showTab("concepts");
  setStatus(`concept "${concept.name}" created from ${concept.views.length} view(s)`, "ok");
}

// --- concepts panel ---------------------------------------------------------------------------------------
async function refreshConcepts() {
  const data = await apiJson("/concepts");
  state.concepts = data.concepts;
  const list = $("#concept-list");
  list.replaceChildren();
  const select = $("#search-concept");
  const previous = select.value;
  select.replaceChildren();
  const examples = $("#localize-examples");
  const previousExamples = examples.value;
  examples.replaceChildren(el("option", { value: "" }, "photos on Teach"));
  if (data.concepts.length === 0) list.append(el("p", { class: "hint" }, "No concepts yet: teach one first."));
  for (const c of data.concepts) {
    select.append(el("option", { value: c.name }, c.name));
    examples.append(el("option", { value: c.name }, `concept "${c.name}"`));
    const thumbs = el("div", { class: "views" });
    for (const v of c.views) {
      const img = el("img", { alt: `${c.name} view ${v.index + 1}`, title: `${v.source} (${v.how}${v.has_mask ? ", mask" : ""})` });
      const agreement = v.consistency === null ? "" : ` · agrees ${v.consistency.toFixed(2)}`;
      const caption = el("figcaption", {}, `${v.source}${agreement}` + (v.outlier ? ` · outlier: ${v.outlier_reason}` : ""));
      const drop = el("button", { class: "secondary small", type: "button", title: "Remove this view from the concept", onclick: () => guarded(() => pruneViews(c.name, { view_ids: [v.view_id] })) }, "Drop");
      if (c.views.length < 2) drop.disabled = true;
      thumbs.append(el("figure", { class: "view-thumb" + (v.outlier ? " outlier" : ""), "data-index": v.index, "data-view-id": v.view_id }, img, caption, drop));
      blobUrl(v.thumbnail).then((u) => { img.src = u; }).catch(() => {});
    }
    const outliers = c.views.filter((v) => v.outlier).length;
    const rename = el("button", { class: "secondary", type: "button", onclick: () => guarded(() => renameConcept(c.name)) }, "Rename");
    const del = el("button", { class: "danger", type: "button", onclick: () => guarded(() => deleteConcept(c.name)) }, "Delete");
    const search = el("button", { type: "button", onclick: () => { select.value = c.name; showTab("search"); guarded(runSearch); } }, "Find in library");
    const swatch = el("span", { class: "swatch", title: `drawn in ${c.color_name}` });
    swatch.style.background = c.color;
    const actions = el("div", { class: "actions" }, search, rename, del);
    if (outliers) actions.append(el("button", { class: "danger prune-outliers", type: "button", onclick: () => guarded(() => pruneViews(c.name, { outliers: true })) }, `Drop ${outliers} outlier view(s)`));
    list.append(el("div", { class: "concept", "data-name": c.name, "data-color": c.color }, el("h3", {}, swatch, c.name), el("p", { class: "context" }, c.context || ""), thumbs, actions));
  }
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
  if ([...examples.options].some((o) => o.value === previousExamples)) examples.value = previousExamples;
}

async function pruneViews(name, request) {
  const report = await apiJson(`/concepts/${encodeURIComponent(name)}/prune`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request) });
  await refreshConcepts();
  setStatus(`removed ${report.removed.length} view(s) from "${name}"; ${report.kept} left`, "ok");
}

async function renameConcept(name) {
  const newName = prompt(`New name for "${name}"`, name);
  if (!newName || newName === name) return;
  const nameError = conceptNameError(newName);
  if (nameError) throw new ApiError(nameError);
  await apiJson(`/concepts/${encodeURIComponent(name)}`, { method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name: newName }) });
  setStatus(`renamed "${name}" to "${newName}"`, "ok");
  await refreshConcepts();
}

async function deleteConcept(name) {
  if (!confirm(`Delete concept "${name}"?`)) return;
  await api(`/concepts/${encodeURIComponent(name)}`, { method: "DELETE" });
  setStatus(`deleted "${name}"`, "ok");
  await refreshConcepts();
}

// --- library indexing progress (shown on every tab while a run is going) ------------------------------------
const seconds = (s) => (s < 90 ? `${Math.max(1, Math.round(s))} s` : `${Math.round(s / 60)} min`);

function indexingText(job) {
  if (job.phase === "preparing") return "indexing the library: loading the model and listing the files...";
  let text = `indexing the library: ${job.done}/${job.total} files`;
  if (job.files_per_s) text += `, ${job.files_per_s.toFixed(1)} files/s`;
  if (job.eta_s !== null && job.eta_s !== undefined) text += `, about ${seconds(job.eta_s)} left`;
  return text;
}

let indexPoll = null;
async function refreshIndexStatus() {
  const s = await apiJson("/library/status");
  const job = s.indexing;
  const running = job.state === "running";
  let text;
  if (!s.library) text = "no library folder configured (start with --library DIR)";
  else if (running) text = indexingText(job);
  else {
    text = `index: ${s.index.files} photos/videos, ${s.index.items} images`;
    if (job.state === "failed") text += ` (last run failed: ${job.error})`;
    else if (job.state === "done" && job.report) text += ` (last run: ${job.report.added ?? 0} added, ${job.report.updated ?? 0} updated in ${seconds(job.elapsed_s || 0)})`;
  }
  $("#index-status").textContent = text;
  $("#index-status").dataset.state = job.state;
  $("#index-progress").hidden = !running;
  $("#index-progress-text").textContent = running ? indexingText(job) : "";
  $("#reindex").disabled = running;
  clearTimeout(indexPoll);
  if (running) indexPoll = setTimeout(() => guarded(refreshIndexStatus), 1000);
}

async function reindex() {
  await apiJson("/library/index", { method: "POST" });
  await refreshIndexStatus();
}

// --- search panel -----------------------------------------------------------------------------------------
// "near misses: my mug 0.58, box_f0390.jpg 0.61 (below 0.62)": what scored just under the threshold.
function nearMissText(misses, what, tau) {
  if (!misses || misses.length === 0) return "";
  return `near misses: ${misses.map((m) => `${what(m)} ${m.score.toFixed(2)}`).join(", ")} (below ${tau})`;
}

async function runSearch(ev) {
  if (ev) ev.preventDefault();
  const concept = $("#search-concept").value;
  if (!concept) throw new ApiError("create a concept first");
  const params = q({ concept, tau: $("#search-tau").value, top: $("#search-top").value });
  const data = await busy($("#search-button"), () => apiJson(`/library/search?${params}`));
  $("#search-summary").textContent = `${data.hits.length} photo(s) with "${data.concept}" (threshold ${data.tau})`;
  const where = (m) => (m.frame === null ? m.path : `${m.path} @ ${m.time_s}s`);
  $("#search-near").textContent = nearMissText(data.near_misses, where, data.tau);
  const gallery = $("#gallery");
  gallery.replaceChildren();
  for (const hit of data.hits) {
    const card = el("div", { class: "card hit", "data-path": hit.path, "data-score": hit.score });
    gallery.append(card);
    blobUrl(libraryUrl("image", hit.path, hit.frame)).then(loadImg).then((img) => {
      const items = hit.boxes.map((b, i) => ({ box: b, label: `${data.concept} ${hit.scores[i].toFixed(2)}`, color: data.color }));
      const info = imageCanvas(img, items, 360);
      const download = el("a", { href: "#", onclick: (e) => { e.preventDefault(); guarded(() => downloadAnnotated(hit, data.concept)); } }, "annotated");
      card.append(info.canvas, el("div", { class: "caption" }, `${where(hit)} — ${hit.score.toFixed(3)} `, download));
      card.dataset.ready = "1";
    }).catch((err) => setStatus(err.message, "error", { tab: "search" }));
  }
}

async function downloadAnnotated(hit, concept) {
  const url = libraryUrl("annotated", hit.path, hit.frame) + (hit.frame === null ? "?" : "&") + q({ concept });
  const a = el("a", { href: await blobUrl(url), download: `${hit.path.split("/").pop()}.annotated.png` });
  document.body.append(a);
  a.click();
  a.remove();
}

// --- localize and ask -------------------------------------------------------------------------------------
async function viewBlob(view) {
  if (view.source instanceof File) return view.source;
  return (await api(libraryUrl("image", view.source.path, view.source.frame))).blob();
}

async function runLocalize(ev) {
  ev.preventDefault();
  const concept = $("#localize-examples").value;
  const query = $("#localize-file").files[0];
  const form = new FormData();
  if (concept) {
    form.append("concept", concept);
  } else {
    const boxed = state.views.filter((v) => v.box);
    if (boxed.length === 0) throw new ApiError("pick a saved concept as the examples, or add boxed photos on Teach");
    for (const v of boxed) form.append("supports", await viewBlob(v), v.label.split("/").pop());
    form.append("boxes", JSON.stringify(boxed.map((v) => v.box)));
  }
  form.append("query", query, query.name);
  form.append("engine", $("#localize-engine").value);
  form.append("max_instances", $("#localize-max").value || "1");
  form.append("segment", $("#localize-segment").checked ? "true" : "false");
  const pred = await busy($("#localize-button"), () => apiJson("/localize", { method: "POST", body: form }));
  const img = await loadImg(URL.createObjectURL(query));
  const color = pred.color || FALLBACK_COLOR;
  const items = pred.instances.map((inst, i) => ({ box: inst.box, mask: inst.mask, color, label: `${concept || "object"} ${inst.score.toFixed(2)}` }));
  const info = imageCanvas(img, items, 480);
  const below = pred.tau === null ? "" : `, below ${pred.tau}`;
  const text = pred.box
    ? `found ${pred.instances.length} instance(s), score ${pred.score.toFixed(3)}` + (pred.tau === null ? "" : ` (threshold ${pred.tau})`)
    : `not present: best ${pred.score.toFixed(2)}${below}`;
  $("#localize-result").replaceChildren(el("div", { class: "card", "data-found": pred.box ? "1" : "0" }, info.canvas, el("div", { class: "caption" }, text)));
}

async function runAsk(ev) {
  ev.preventDefault();
  const file = $("#ask-file").files[0];
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("question", $("#ask-question").value);
  form.append("max_instances", $("#ask-max").value || "1");
  $("#ask-answer").textContent = "";
  $("#ask-work").hidden = true;
  $("#ask-test-model").hidden = true;
  $("#ask-near").textContent = "";
  const data = await busy($("#ask-button"), () => apiJson("/ask", { method: "POST", body: form }));
  const img = await loadImg(URL.createObjectURL(file));
  const dets = data.detections || [];
  const info = imageCanvas(img, dets.map((d) => ({ box: d.box, mask: d.mask, color: d.color, label: `${d.concept} ${d.score.toFixed(2)}` })), 480);
  const seen = new Map(dets.map((d) => [d.concept, d.color]));
  const card = el("div", { class: "card" }, info.canvas);
  if (seen.size) card.append(legend([...seen].map(([name, color]) => ({ name, color }))));
  $("#ask-result").replaceChildren(card);
  $("#ask-near").textContent = nearMissText(data.near_misses, (m) => m.concept, data.tau);
  $("#ask-answer").textContent = data.answer;
  $("#ask-test-model").hidden = !data.test_model;
  $("#ask-prompt").textContent = data.prompt;
  $("#ask-prompted-image").src = data.prompted_image;
  $("#ask-work").hidden = false;
  $("#ask-work").dataset.ready = "1";
}

// --- wiring -----------------------------------------------------------------------------------------------
function showTab(name) {
  state.tab = name;
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.tab === name));
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === name));
  recheckStatus();
  if (name === "search") guarded(refreshIndexStatus);
}

async function init() {
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => showTab(t.dataset.tab)));
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("#token-input").value.trim();
    sessionStorage.setItem("focuskit-token", state.token);
    $("#token-form").hidden = true;
    guarded(load);
  });
  $("#teach-files").addEventListener("change", (ev) => guarded(() => addUploadedViews(ev.target.files)));
  $("#pick-library").addEventListener("click", () => guarded(() => busy($("#pick-library"), togglePicker)));
  $("#autobox").addEventListener("click", () => guarded(() => findObjects({ all: true })));
  $("#teach-segment").addEventListener("change", () => { if ($("#teach-segment").checked) guarded(findObjects); });
  $("#concept-name").addEventListener("input", recheckStatus);
  $("#concept-form").addEventListener("submit", (ev) => guarded(() => createConcept(ev)));
  $("#search-form").addEventListener("submit", (ev) => guarded(() => runSearch(ev)));
  $("#reindex").addEventListener("click", () => guarded(() => busy($("#reindex"), reindex)));
  $("#localize-form").addEventListener("submit", (ev) => guarded(() => runLocalize(ev)));
  $("#ask-form").addEventListener("submit", (ev) => guarded(() => runAsk(ev)));
  await guarded(load);
}

// Everything that needs the API (again after a token is entered).
async function load() {
  state.health = await apiJson("/health");
  const engines = $("#localize-engine");
  engines.replaceChildren(...state.health.engines.map((e) => el("option", { value: e }, e)));
  $("#pick-library").disabled = !state.health.library;
  $("#test-model-notice").hidden = !state.health.test_model;
  $("#localize-max").max = state.health.max_instances_limit;
  $("#ask-max").max = state.health.max_instances_limit;
  await refreshConcepts();
  if (state.health.library) await refreshIndexStatus();
  setStatus("");
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", () => guarded(init));
