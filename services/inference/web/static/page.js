// The radiologist's page: upload a study, show the diagnosis, view the sampled slices with the
// Grad-CAM overlay. Plain JavaScript, no build step; it talks only to this server.
"use strict";

const WINDOWS = { lung: { width: 1500, level: -600 }, mediastinum: { width: 350, level: 40 } };
const state = { session: null, result: null, ct: null, heat: null, slice: 0,
                window: WINDOWS.lung, opacity: 0.45 };
const $ = (id) => document.getElementById(id);
const mib = (bytes) => (bytes / 1048576).toFixed(1);

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
  return body;
}

async function getBytes(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`the server answered ${response.status} for ${url}`);
  return response.arrayBuffer();
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("status").textContent = "";
  $("progress").hidden = true;
}

function clearMessages() {
  $("error").hidden = true;
  $("error").textContent = "";
  $("status").textContent = "";
}

async function init() {
  try {
    state.session = await getJSON("/api/session");
  } catch (error) {
    $("session").textContent = "Not signed in";
    showError(error.message);
    return;
  }
  const s = state.session;
  $("session").textContent = `${s.user}${s.role !== "-" ? ` (${s.role})` : ""}` +
    (s.model ? ` · model ${s.model.arch}/${s.model.preset} version ${s.model.version}`
             : " · no model loaded yet");
  $("limits").textContent = `Up to ${mib(s.limits.max_upload_bytes)} MiB and ` +
    `${s.limits.max_slices} slices per study.`;
  bindUpload();
  bindViewer();
  loadHistory();
}

// ---- upload -------------------------------------------------------------------------------

async function filesFromDrop(transfer) {
  const entries = [...transfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry())
    .filter(Boolean);
  if (!entries.length) return [...transfer.files].map((file) => [file.name, file]);
  const found = [];
  async function walk(entry, prefix) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      found.push([prefix + entry.name, file]);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  }
  for (const entry of entries) await walk(entry, "");
  return found;
}

function bindUpload() {
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    upload(await filesFromDrop(event.dataTransfer));
  });
  $("folder-input").addEventListener("change", (event) => {
    upload([...event.target.files].map((file) => [file.webkitRelativePath || file.name, file]));
    event.target.value = "";
  });
  $("file-input").addEventListener("change", (event) => {
    upload([...event.target.files].map((file) => [file.name, file]));
    event.target.value = "";
  });
}

function upload(files) {
  clearMessages();
  if (!files.length) { showError("Nothing to upload: the folder is empty."); return; }
  const limits = state.session.limits;
  const total = files.reduce((sum, [, file]) => sum + file.size, 0);
  if (total > limits.max_upload_bytes) {
    showError(`This study is ${mib(total)} MiB; this server accepts studies up to ` +
              `${mib(limits.max_upload_bytes)} MiB. Nothing was uploaded.`);
    return;
  }
  if (files.length > limits.max_files) {
    showError(`This study has ${files.length} files; this server accepts studies of at most ` +
              `${limits.max_slices} slices. Nothing was uploaded.`);
    return;
  }
  const form = new FormData();
  for (const [name, file] of files) form.append("file", file, name);
  const progress = $("progress");
  progress.hidden = false;
  progress.value = 0;
  const request = new XMLHttpRequest();
  request.open("POST", "/api/diagnoses");
  request.setRequestHeader("X-CSRF-Token", state.session.csrf_token);
  request.responseType = "json";
  request.upload.onprogress = (event) => {
    if (!event.lengthComputable) return;
    progress.value = event.loaded / event.total;
    $("status").textContent = `Uploading ${files.length} file(s): ${mib(event.loaded)} of ` +
      `${mib(event.total)} MiB`;
  };
  request.upload.onload = () => {
    progress.removeAttribute("value");
    $("status").textContent = "Diagnosing: 5 samplings and the Grad-CAM heatmap…";
  };
  request.onload = () => {
    progress.hidden = true;
    if (request.status === 201) {
      $("status").textContent = "";
      showResult(request.response).catch((error) => showError(error.message));
    } else {
      const body = request.response || {};
      showError(body.error || `The server answered ${request.status}.`);
    }
  };
  request.onerror = () => showError("The upload broke off: the network failed or the server " +
                                    "refused it (see the limits above).");
  $("status").textContent = `Uploading ${files.length} file(s)…`;
  request.send(form);
}

// ---- result -------------------------------------------------------------------------------

const fixed = (value) => Number(value).toFixed(4);

async function showResult(result) {
  state.result = result;
  const classEl = $("predicted-class");
  classEl.textContent = result.predicted_class;
  classEl.dataset.value = result.predicted_class;
  classEl.classList.toggle("covid", result.predicted_class === "covid");
  const probability = $("covid-probability");
  probability.textContent = fixed(result.covid_probability);
  probability.dataset.value = String(result.covid_probability);
  $("threshold").textContent = result.threshold === null
    ? "the model card records no operating threshold"
    : `${fixed(result.threshold)} (chosen on validation data): this study is ` +
      `${result.above_threshold ? "above" : "below"} it`;
  const spread = result.samplings;
  $("spread").textContent = `${fixed(spread.min)} – ${fixed(spread.max)} over ` +
    `${spread.count} samplings (SD ${fixed(spread.std)}): ` +
    spread.covid_probabilities.map(fixed).join(", ");
  const model = result.model;
  const validation = Object.entries(model.validation).map(([k, v]) => `${k} ${fixed(v)}`).join(", ");
  const training = Object.entries(model.training).map(([k, v]) => `${k} ${JSON.stringify(v)}`)
    .join("; ");
  $("model").textContent = `${model.arch}/${model.preset}, version ${model.version}, ` +
    `${model.parameters.toLocaleString()} parameters, weights ${model.weights_sha256 || "?"}…` +
    (validation ? `; validation: ${validation}` : "") + (training ? `; training: ${training}` : "");
  const study = result.study;
  $("study").textContent = `${study.study_uid || "(no study UID)"}: ${study.slices} slices, ` +
    `spacing ${study.spacing_mm.map((v) => v.toFixed(2)).join(" × ")} mm`;
  const rows = $("probabilities").querySelector("tbody");
  rows.replaceChildren(...Object.entries(result.probabilities).map(([name, p]) => {
    const row = document.createElement("tr");
    for (const text of [name, fixed(p)]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  }));
  $("download-png").href = `/api/diagnoses/${result.id}/montage.png`;
  $("download-json").href = `/api/diagnoses/${result.id}?download=1`;
  $("result").hidden = false;
  const [ct, heat] = await Promise.all([getBytes(`/api/diagnoses/${result.id}/ct.bin`),
                                        getBytes(`/api/diagnoses/${result.id}/heatmap.bin`)]);
  state.ct = new Int16Array(ct);
  state.heat = new Uint8Array(heat);
  const viewer = result.viewer;
  for (const canvas of [$("ct-canvas"), $("overlay-canvas")]) {
    canvas.width = viewer.columns;
    canvas.height = viewer.rows;
  }
  $("slice").max = String(viewer.slices - 1);
  $("viewer-panel").hidden = false;
  setSlice(0);
  loadHistory();
}

// ---- viewer -------------------------------------------------------------------------------

// The jet colour map (as in the PNG montage): blue (cold) -> red (hot).
function jet(value) {
  const channel = (offset) => Math.round(255 * Math.max(0, Math.min(1, 1.5 - Math.abs(4 * value - offset))));
  return [channel(3), channel(2), channel(1)];
}

function draw() {
  const viewer = state.result.viewer;
  const pixels = viewer.rows * viewer.columns;
  const start = state.slice * pixels;
  const ctContext = $("ct-canvas").getContext("2d");
  const image = ctContext.createImageData(viewer.columns, viewer.rows);
  const low = state.window.level - state.window.width / 2;
  const scale = 255 / state.window.width;
  for (let i = 0; i < pixels; i++) {
    const grey = Math.max(0, Math.min(255, (state.ct[start + i] - low) * scale));
    image.data[4 * i] = image.data[4 * i + 1] = image.data[4 * i + 2] = grey;
    image.data[4 * i + 3] = 255;
  }
  ctContext.putImageData(image, 0, 0);
  const overlayContext = $("overlay-canvas").getContext("2d");
  const overlay = overlayContext.createImageData(viewer.columns, viewer.rows);
  for (let i = 0; i < pixels; i++) {
    const heat = state.heat[start + i];
    const [r, g, b] = jet(heat / 255);
    overlay.data[4 * i] = r;
    overlay.data[4 * i + 1] = g;
    overlay.data[4 * i + 2] = b;
    overlay.data[4 * i + 3] = heat;  // cold regions stay see-through
  }
  overlayContext.putImageData(overlay, 0, 0);
  $("overlay-canvas").style.opacity = String(state.opacity);
  $("slice").value = String(state.slice);
  $("slice-label").textContent = `${state.slice + 1} / ${viewer.slices} (CT slice ` +
    `${viewer.slice_indices[state.slice]})`;
  $("viewer").dataset.slice = String(state.slice);
}

function setSlice(index) {
  const count = state.result.viewer.slices;
  state.slice = Math.max(0, Math.min(count - 1, index));
  draw();
}

function setWindow(name) {
  state.window = WINDOWS[name];
  $("window-lung").setAttribute("aria-pressed", String(name === "lung"));
  $("window-mediastinum").setAttribute("aria-pressed", String(name === "mediastinum"));
  $("viewer").dataset.window = name;
  draw();
}

function bindViewer() {
  const viewer = $("viewer");
  viewer.addEventListener("wheel", (event) => {
    if (!state.result) return;
    event.preventDefault();
    setSlice(state.slice + Math.sign(event.deltaY));
  }, { passive: false });
  viewer.addEventListener("keydown", (event) => {
    if (!state.result) return;
    const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 }[event.key];
    if (step) { event.preventDefault(); setSlice(state.slice + step); }
  });
  $("slice").addEventListener("input", (event) => setSlice(Number(event.target.value)));
  $("opacity").addEventListener("input", (event) => {
    state.opacity = Number(event.target.value) / 100;
    if (state.result) draw();
  });
  $("window-lung").addEventListener("click", () => setWindow("lung"));
  $("window-mediastinum").addEventListener("click", () => setWindow("mediastinum"));
}

// ---- history ------------------------------------------------------------------------------

async function loadHistory() {
  let history;
  try {
    history = await getJSON("/api/history");
  } catch (error) {
    $("retention").textContent = `History unavailable: ${error.message}`;
    return;
  }
  $("retention").textContent = history.retention_days > 0
    ? `Studies diagnosed on this page (identifiers and results only, no images), kept ` +
      `${history.retention_days} days.`
    : "This site keeps no history (retention 0 days).";
  const body = $("history-table").querySelector("tbody");
  body.replaceChildren(...history.entries.map((entry) => {
    const row = document.createElement("tr");
    const cells = [new Date(entry.diagnosed_at * 1000).toLocaleString(), entry.study_uid || "—",
                   entry.predicted_class, fixed(entry.covid_probability), entry.model_version,
                   entry.user];
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  }));
}

document.addEventListener("DOMContentLoaded", init);
