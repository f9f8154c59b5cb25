// LoRAT console: plain JavaScript, no build step, no external resources (docs/console.md).
"use strict";

const $ = (id) => document.getElementById(id);
const BOX_COLOUR = "#00ff00"; // the prediction colour of lorat-track and lorat-client too
const VIEW_WIDTH = 640;

// Everything the page knows; tests read it (window.lorat.drawn: the boxes drawn on the live view).
const state = {
  info: null, tracks: [], selected: null, ws: null, drawn: [], history: [], lastFrame: -1,
  first: null, box: null, polls: 0,
};
window.lorat = state;

async function api(path, options = {}) {
  const init = { credentials: "same-origin", method: options.method || "GET" };
  if (options.body !== undefined) {
    init.method = options.method || "POST";
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(options.body);
  }
  const res = await fetch(path, init);
  let body = null;
  try { body = await res.json(); } catch (_) { body = null; }
  if (!res.ok) {
    const err = new Error((body && body.error) || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

// -- login --------------------------------------------------------------------------------------------

function showLogin(show) {
  $("login").hidden = !show;
  $("main").hidden = show;
  $("new-track").disabled = show;
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await api("/api/login", { body: { token: $("token").value } });
    $("token").value = "";
    $("login-error").textContent = "";
    await start();
  } catch (e) {
    $("login-error").textContent = e.message;
  }
});

// -- track list ---------------------------------------------------------------------------------------

function fmt(v, digits, unit = "") {
  return v === null || v === undefined ? "–" : `${Number(v).toFixed(digits)}${unit}`;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function renderTracks() {
  const body = $("tracks").querySelector("tbody");
  body.replaceChildren();
  for (const t of state.tracks) {
    const tr = document.createElement("tr");
    tr.dataset.trackId = t.track_id;
    if (t.track_id === state.selected) tr.classList.add("selected");
    const status = t.result_status === "LOST" ? "LOST" : t.status;
    const badge = document.createElement("span");
    badge.className = `badge ${status}`;
    badge.textContent = status;
    const statusCell = cell("");
    statusCell.appendChild(badge);
    const source = cell(t.source, "source");
    source.title = t.source;
    const stop = document.createElement("button");
    stop.type = "button";
    stop.textContent = "Stop";
    stop.className = "stop";
    stop.addEventListener("click", (ev) => { ev.stopPropagation(); stopTrack(t.track_id); });
    const actions = cell("");
    actions.appendChild(stop);
    const model = cell(t.model, "model");
    model.title = t.model;
    const id = cell(t.track_id, "id");
    id.title = t.track_id;
    tr.append(id, source, statusCell, model, cell(fmt(t.fps, 1), "num"),
      cell(fmt(t.frame_age_ms, 0, " ms"), "num"), cell(fmt(t.confidence, 3), "num"), cell(String(t.drops), "num"),
      actions);
    tr.addEventListener("click", () => openView(t.track_id));
    body.appendChild(tr);
  }
  $("count").textContent = `(${state.tracks.length})`;
  $("empty").hidden = state.tracks.length > 0;
  if (state.selected) {
    const t = state.tracks.find((x) => x.track_id === state.selected);
    $("view-status").textContent = t ? (t.result_status === "LOST" ? "LOST" : t.status) : "ended";
    $("view-status").className = `badge ${t ? t.status : ""}`;
  }
}

async function refreshTracks() {
  try {
    const data = await api("/api/tracks");
    state.tracks = data.tracks;
    state.polls += 1;
    $("conn").textContent = "";
    renderTracks();
  } catch (e) {
    if (e.status === 401) { polling = false; showLogin(true); return; }
    $("conn").textContent = "server unreachable, retrying…";
  }
  setTimeout(refreshTracks, 500);
}

async function stopTrack(trackId) {
  try {
    await api(`/api/tracks/${encodeURIComponent(trackId)}/stop`, { body: {} });
  } catch (e) {
    $("conn").textContent = `stop failed: ${e.message}`;
  }
  state.tracks = state.tracks.filter((t) => t.track_id !== trackId);
  renderTracks();
}

// -- live view ----------------------------------------------------------------------------------------

function openView(trackId) {
  if (state.ws) state.ws.close();
  state.selected = trackId;
  state.drawn = [];
  state.history = [];
  state.lastFrame = -1;
  $("view-panel").hidden = false;
  $("view-id").textContent = trackId;
  $("view-info").textContent = "waiting for frames…";
  renderTracks();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/api/tracks/${encodeURIComponent(trackId)}/live`);
  ws.binaryType = "blob";
  let meta = null;
  ws.onmessage = async (ev) => {
    if (typeof ev.data === "string") { meta = JSON.parse(ev.data); return; }
    const m = meta;
    meta = null;
    if (!m) return;
    const bitmap = await createImageBitmap(ev.data);
    if (ws !== state.ws || m.frame_number < state.lastFrame) return; // a newer frame is already shown
    drawFrame(bitmap, m);
  };
  ws.onclose = () => { if (ws === state.ws) $("view-info").textContent = "live view closed (track ended?)"; };
  state.ws = ws;
  refreshHistory();
}

function drawFrame(bitmap, m) {
  const canvas = $("live");
  const scale = VIEW_WIDTH / m.width;
  const w = Math.round(m.width * scale), h = Math.round(m.height * scale);
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, w, h);
  const [x, y, bw, bh] = m.box;
  const rect = [x * scale, y * scale, bw * scale, bh * scale];
  ctx.lineWidth = 3;
  ctx.strokeStyle = m.status === "LOST" ? "#ff4d4d" : BOX_COLOUR;
  ctx.strokeRect(...rect);
  const label = `frame ${m.frame_number}  ${m.status}  conf ${m.confidence.toFixed(3)}`;
  ctx.font = "14px system-ui, sans-serif";
  ctx.fillStyle = "rgba(0, 0, 0, 0.6)";
  ctx.fillRect(0, 0, ctx.measureText(label).width + 12, 22);
  ctx.fillStyle = "#fff";
  ctx.fillText(label, 6, 16);
  state.lastFrame = m.frame_number;
  state.drawn.push({ frame_number: m.frame_number, box: m.box, confidence: m.confidence, status: m.status,
    rect, scale });
  if (state.drawn.length > 1000) state.drawn.shift();
  $("view-info").textContent = `${m.width}×${m.height}, frame ${m.frame_number}, box ` +
    m.box.map((v) => v.toFixed(1)).join(", ");
}

async function refreshHistory() {
  const trackId = state.selected;
  if (!trackId) return;
  try {
    const data = await api(`/api/tracks/${encodeURIComponent(trackId)}/history`);
    if (trackId !== state.selected) return;
    state.history = data.points;
    drawPlot();
  } catch (_) { /* the track ended: keep the last plot */ }
  if (trackId === state.selected) setTimeout(refreshHistory, 1000);
}

function drawPlot() {
  const canvas = $("plot");
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, pad = 24;
  ctx.fillStyle = "#11151c";
  ctx.fillRect(0, 0, W, H);
  ctx.fillStyle = "#8b93a5";
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText("1", 6, pad - 8 + 4);
  ctx.fillText("0", 6, H - pad + 4);
  const pts = state.history;
  const lost = state.info && state.info.lost_confidence;
  const yOf = (c) => H - pad - c * (H - 2 * pad);
  if (lost) {
    ctx.strokeStyle = "#ff4d4d";
    ctx.setLineDash([4, 4]);
    ctx.beginPath(); ctx.moveTo(pad, yOf(lost)); ctx.lineTo(W - 6, yOf(lost)); ctx.stroke();
    ctx.setLineDash([]);
  }
  if (pts.length < 2) { $("plot-info").textContent = "not enough results yet"; return; }
  const f0 = pts[0][0], f1 = pts[pts.length - 1][0];
  const xOf = (f) => pad + (f - f0) / Math.max(1, f1 - f0) * (W - pad - 6);
  ctx.strokeStyle = BOX_COLOUR;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  pts.forEach(([f, c], i) => (i ? ctx.lineTo(xOf(f), yOf(c)) : ctx.moveTo(xOf(f), yOf(c))));
  ctx.stroke();
  $("plot-info").textContent = `frames ${f0}–${f1}; dashed: LOST threshold` +
    (state.info && state.info.lost_frames ? ` (${lost} for ${state.info.lost_frames} frames)` : "");
}

// -- start dialog --------------------------------------------------------------------------------------

function sourceKind() {
  return document.querySelector('input[name="source"]:checked').value;
}

function sourceBody() {
  return sourceKind() === "file" ? { source: "file", file: $("file-select").value }
    : { source: "rtsp", url: $("rtsp-url").value.trim() };
}

async function openStartDialog() {
  state.first = null;
  state.box = null;
  $("start-go").disabled = true;
  $("start-error").textContent = "";
  $("box-info").textContent = "no box yet";
  clearCanvas($("first-frame"));
  const select = $("file-select");
  select.replaceChildren();
  try {
    const media = await api("/api/media");
    for (const f of media.files) {
      const o = document.createElement("option");
      o.value = f;
      o.textContent = f;
      select.appendChild(o);
    }
    if (!media.enabled) select.appendChild(new Option("(no --console-media-dir on this server)", ""));
    else if (!media.files.length) select.appendChild(new Option("(the media folder has no videos)", ""));
  } catch (e) {
    $("start-error").textContent = e.message;
  }
  $("start-dialog").showModal();
}

function clearCanvas(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#11151c";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
}

async function loadFirstFrame() {
  $("start-error").textContent = "";
  $("load-frame").disabled = true;
  try {
    const data = await api("/api/preview", { body: sourceBody() });
    const img = new Image();
    img.src = data.jpeg;
    await img.decode();
    state.first = { img, width: data.width, height: data.height, scale: VIEW_WIDTH / data.width };
    state.box = null;
    $("box-info").textContent = `${data.width}×${data.height}: drag to draw the box`;
    drawFirst();
  } catch (e) {
    $("start-error").textContent = e.message;
  } finally {
    $("load-frame").disabled = false;
  }
}

function drawFirst(drag) {
  const f = state.first;
  if (!f) return;
  const canvas = $("first-frame");
  canvas.width = Math.round(f.width * f.scale);
  canvas.height = Math.round(f.height * f.scale);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(f.img, 0, 0, canvas.width, canvas.height);
  const b = drag || state.box;
  if (b) {
    ctx.lineWidth = 3;
    ctx.strokeStyle = BOX_COLOUR;
    ctx.strokeRect(b[0] * f.scale, b[1] * f.scale, b[2] * f.scale, b[3] * f.scale);
  }
}

function framePoint(ev) {
  const canvas = $("first-frame");
  const r = canvas.getBoundingClientRect();
  const f = state.first;
  const x = (ev.clientX - r.left) * (canvas.width / r.width) / f.scale;
  const y = (ev.clientY - r.top) * (canvas.height / r.height) / f.scale;
  return [Math.min(Math.max(x, 0), f.width), Math.min(Math.max(y, 0), f.height)];
}

let dragFrom = null;
function boxFrom(a, b) {
  return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(a[0] - b[0]), Math.abs(a[1] - b[1])];
}
$("first-frame").addEventListener("mousedown", (ev) => { if (state.first) dragFrom = framePoint(ev); });
$("first-frame").addEventListener("mousemove", (ev) => { if (dragFrom) drawFirst(boxFrom(dragFrom, framePoint(ev))); });
window.addEventListener("mouseup", (ev) => {
  if (!dragFrom) return;
  const box = boxFrom(dragFrom, framePoint(ev));
  dragFrom = null;
  if (box[2] >= 4 && box[3] >= 4) {
    state.box = box;
    $("box-info").textContent = `box x=${box[0].toFixed(0)} y=${box[1].toFixed(0)} ` +
      `w=${box[2].toFixed(0)} h=${box[3].toFixed(0)} (frame pixels)`;
  }
  $("start-go").disabled = !state.box;
  drawFirst();
});

async function startTrack() {
  $("start-error").textContent = "";
  $("start-go").disabled = true;
  try {
    const res = await api("/api/tracks", { body: { ...sourceBody(), box: state.box } });
    $("start-dialog").close();
    openView(res.track_id);
  } catch (e) {
    $("start-error").textContent = e.message;
    $("start-go").disabled = false;
  }
}

$("new-track").addEventListener("click", openStartDialog);
$("load-frame").addEventListener("click", loadFirstFrame);
$("start-go").addEventListener("click", startTrack);
$("start-cancel").addEventListener("click", () => $("start-dialog").close());
$("rtsp-url").addEventListener("focus", () => { document.querySelector('input[value="rtsp"]').checked = true; });
$("file-select").addEventListener("focus", () => { document.querySelector('input[value="file"]').checked = true; });

// -- start ----------------------------------------------------------------------------------------------

let polling = false;
async function start() {
  try {
    state.info = await api("/api/info");
  } catch (e) {
    $("conn").textContent = `server unreachable: ${e.message}`;
    setTimeout(start, 2000);
    return;
  }
  $("model").textContent = `model ${state.info.model_id}`;
  if (state.info.auth_required && !state.info.logged_in) { showLogin(true); return; }
  showLogin(false);
  clearCanvas($("live"));
  if (!polling) { polling = true; refreshTracks(); }
}

start();
