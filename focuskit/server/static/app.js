// focuskit web page: plain JavaScript, no framework, no CDN. Talks to the JSON API of the same server.
// Images are fetched with the Authorization header (when a token is set) and shown from blob URLs, so the token
// never ends up in a URL, a log line or the browser history.
"use strict";

const state = {
  token: sessionStorage.getItem("focuskit-token") || "",
  views: [],          // teach panel: {source: File | {path, frame}, label, img, box: [x1,y1,x2,y2] | null}
  health: null,
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

function setStatus(text, kind = "") {
  const s = $("#status");
  s.textContent = text;
  s.className = kind;
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
  try {
    await fn();
  } catch (err) {
    setStatus(err.message || String(err), "error");
    if (!(err instanceof ApiError)) console.error(err);
  }
}

// --- drawing ----------------------------------------------------------------------------------------------
const COLORS = ["#e6194b", "#3cb44b", "#0082c8", "#f58230", "#911eb4", "#46f0f0", "#f032e6", "#d2f53c"];

// A canvas showing `img` scaled to fit `maxSide`, with boxes (image pixels) drawn; returns {canvas, scale}.
function imageCanvas(img, boxes = [], labels = [], maxSide = 320) {
  const scale = Math.min(1, maxSide / Math.max(img.naturalWidth, img.naturalHeight));
  const canvas = el("canvas");
  canvas.width = Math.round(img.naturalWidth * scale);
  canvas.height = Math.round(img.naturalHeight * scale);
  const draw = (extra = null) => {
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    const all = extra ? [...boxes, extra] : boxes;
    all.forEach((b, i) => {
      if (!b) return;
      const color = COLORS[i % COLORS.length];
      ctx.strokeStyle = color;
      ctx.lineWidth = 3;
      ctx.strokeRect(b[0] * scale, b[1] * scale, (b[2] - b[0]) * scale, (b[3] - b[1]) * scale);
      if (labels[i]) {
        ctx.font = "13px sans-serif";
        const w = ctx.measureText(labels[i]).width + 6;
        ctx.fillStyle = color;
        ctx.fillRect(b[0] * scale, Math.max(0, b[1] * scale - 17), w, 17);
        ctx.fillStyle = "#fff";
        ctx.fillText(labels[i], b[0] * scale + 3, Math.max(12, b[1] * scale - 4));
      }
    });
  };
  draw();
  return { canvas, scale, draw };
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
    if (box[2] - box[0] >= 2 && box[3] - box[1] >= 2) view.box = box.map((v) => Math.round(v * 10) / 10);
    canvasInfo.draw(view.box);
    onChange();
  });
}

// --- teach panel ------------------------------------------------------------------------------------------
function renderViews() {
  const box = $("#views");
  box.replaceChildren();
  state.views.forEach((view, i) => {
    const info = imageCanvas(view.img, [], [], 320);
    info.draw(view.box);
    const caption = el("div", { class: "caption" }, view.box ? `box ${view.box.map(Math.round).join(", ")}` : "drag a box around the object");
    makeBoxable(view, info, () => {
      caption.textContent = view.box ? `box ${view.box.map(Math.round).join(", ")}` : "drag a box around the object";
    });
    const remove = el("button", { class: "secondary", type: "button", onclick: () => { state.views.splice(i, 1); renderViews(); } }, "Remove");
    box.append(el("div", { class: "card view", "data-label": view.label }, info.canvas, el("div", { class: "caption" }, view.label), caption, el("div", { class: "actions" }, remove)));
  });
}

async function addUploadedViews(files) {
  for (const file of files) {
    const img = await loadImg(URL.createObjectURL(file));
    state.views.push({ source: file, label: file.name, img, box: null });
  }
  renderViews();
}

async function addLibraryView(item) {
  const img = await loadImg(await blobUrl(libraryUrl("image", item.path, item.frame)));
  const label = item.frame === null ? item.path : `${item.path} @ frame ${item.frame}`;
  state.views.push({ source: { path: item.path, frame: item.frame }, label, img, box: null });
  renderViews();
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
  if (nameError) throw new ApiError(nameError);
  if (state.views.length === 0) throw new ApiError("add at least one photo first");
  const missing = state.views.filter((v) => !v.box).map((v) => v.label);
  if (missing.length) throw new ApiError(`draw a box on: ${missing.join(", ")}`);
  const form = new FormData();
  form.append("name", name);
  form.append("context", $("#concept-context").value);
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
  $("#create-concept").disabled = true;
  try {
    const concept = await apiJson("/concepts", { method: "POST", body: form });
    setStatus(`concept "${concept.name}" created from ${concept.views.length} view(s)`, "ok");
    await refreshConcepts();
    showTab("concepts");
  } finally {
    $("#create-concept").disabled = false;
  }
}

// --- concepts panel ---------------------------------------------------------------------------------------
async function refreshConcepts() {
  const data = await apiJson("/concepts");
  const list = $("#concept-list");
  list.replaceChildren();
  const select = $("#search-concept");
  const previous = select.value;
  select.replaceChildren();
  if (data.concepts.length === 0) list.append(el("p", { class: "hint" }, "No concepts yet: teach one first."));
  for (const c of data.concepts) {
    select.append(el("option", { value: c.name }, c.name));
    const thumbs = el("div", { class: "views" });
    for (const v of c.views) {
      const img = el("img", { alt: `${c.name} view ${v.index + 1}` });
      thumbs.append(img);
      blobUrl(v.thumbnail).then((u) => { img.src = u; }).catch(() => {});
    }
    const rename = el("button", { class: "secondary", type: "button", onclick: () => guarded(() => renameConcept(c.name)) }, "Rename");
    const del = el("button", { class: "danger", type: "button", onclick: () => guarded(() => deleteConcept(c.name)) }, "Delete");
    const search = el("button", { type: "button", onclick: () => { select.value = c.name; showTab("search"); guarded(runSearch); } }, "Find in library");
    list.append(el("div", { class: "concept", "data-name": c.name }, el("h3", {}, c.name), el("p", { class: "context" }, c.context || ""), thumbs, el("div", { class: "actions" }, search, rename, del)));
  }
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
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

// --- search panel -----------------------------------------------------------------------------------------
async function refreshIndexStatus() {
  const s = await apiJson("/library/status");
  const job = s.indexing;
  let text;
  if (!s.library) text = "no library folder configured (start with --library DIR)";
  else if (job.state === "running") text = `indexing ${job.done}/${job.total} files...`;
  else text = `index: ${s.index.files} photos/videos, ${s.index.items} images` + (job.state === "failed" ? ` (last run failed: ${job.error})` : "");
  $("#index-status").textContent = text;
  $("#index-status").dataset.state = job.state;
  if (job.state === "running") setTimeout(() => guarded(refreshIndexStatus), 1000);
}

async function reindex() {
  await apiJson("/library/index", { method: "POST" });
  await refreshIndexStatus();
}

async function runSearch(ev) {
  if (ev) ev.preventDefault();
  const concept = $("#search-concept").value;
  if (!concept) throw new ApiError("create a concept first");
  const params = q({ concept, tau: $("#search-tau").value, top: $("#search-top").value });
  const data = await apiJson(`/library/search?${params}`);
  $("#search-summary").textContent = `${data.hits.length} photo(s) with "${data.concept}" (threshold ${data.tau})`;
  const gallery = $("#gallery");
  gallery.replaceChildren();
  for (const hit of data.hits) {
    const card = el("div", { class: "card hit", "data-path": hit.path, "data-score": hit.score });
    gallery.append(card);
    blobUrl(libraryUrl("image", hit.path, hit.frame)).then(loadImg).then((img) => {
      const info = imageCanvas(img, hit.boxes, hit.scores.map((s) => `${data.concept} ${s.toFixed(2)}`), 360);
      const where = hit.frame === null ? hit.path : `${hit.path} @ ${hit.time_s}s`;
      const download = el("a", { href: "#", onclick: (e) => { e.preventDefault(); guarded(() => downloadAnnotated(hit, data.concept)); } }, "annotated");
      card.append(info.canvas, el("div", { class: "caption" }, `${where} — ${hit.score.toFixed(3)} `, download));
      card.dataset.ready = "1";
    }).catch((err) => setStatus(err.message, "error"));
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
  const boxed = state.views.filter((v) => v.box);
  if (boxed.length === 0) throw new ApiError("draw a box on at least one photo in Teach first: those are the examples");
  const query = $("#localize-file").files[0];
  const form = new FormData();
  for (const v of boxed) form.append("supports", await viewBlob(v), v.label.split("/").pop());
  form.append("boxes", JSON.stringify(boxed.map((v) => v.box)));
  form.append("query", query, query.name);
  form.append("engine", $("#localize-engine").value);
  const pred = await apiJson("/localize", { method: "POST", body: form });
  const img = await loadImg(URL.createObjectURL(query));
  const info = imageCanvas(img, pred.box ? [pred.box] : [], [`score ${pred.score.toFixed(2)}`], 480);
  const text = pred.box ? `found, score ${pred.score.toFixed(3)}` : `not present (score ${pred.score.toFixed(3)})`;
  $("#localize-result").replaceChildren(el("div", { class: "card" }, info.canvas, el("div", { class: "caption" }, text)));
}

async function runAsk(ev) {
  ev.preventDefault();
  const file = $("#ask-file").files[0];
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("question", $("#ask-question").value);
  $("#ask-answer").textContent = "thinking...";
  try {
    const data = await apiJson("/ask", { method: "POST", body: form });
    const img = await loadImg(URL.createObjectURL(file));
    const dets = data.detections || [];
    const info = imageCanvas(img, dets.map((d) => d.box), dets.map((d) => `${d.concept} ${d.score.toFixed(2)}`), 480);
    $("#ask-result").replaceChildren(el("div", { class: "card" }, info.canvas));
    $("#ask-answer").textContent = data.answer;
  } catch (err) {
    $("#ask-answer").textContent = "";
    throw err;
  }
}

// --- wiring -----------------------------------------------------------------------------------------------
function showTab(name) {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.tab === name));
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === name));
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
  $("#pick-library").addEventListener("click", () => guarded(togglePicker));
  $("#concept-form").addEventListener("submit", (ev) => guarded(() => createConcept(ev)));
  $("#search-form").addEventListener("submit", (ev) => guarded(() => runSearch(ev)));
  $("#reindex").addEventListener("click", () => guarded(reindex));
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
  await refreshConcepts();
  setStatus("");
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", () => guarded(init));
