// cnnlab serve: the page. Plain JavaScript, no build step, no network beyond this server.
// Each run gets a column built from a template; which panels it shows follows the run's `views` list from
// /api/runs (a detector would add a `boxes` view and a renderer for it here; none exists yet).
"use strict";

const pad = document.getElementById("pad");
const ink = pad.getContext("2d");
const status = document.getElementById("status");
const epsInput = document.getElementById("eps");
const frameInput = document.getElementById("frame");
const runs = [];            // {info, root, layer}
const inFlight = new Map(); // "run/view" -> AbortController of the request in flight
let image = null;           // the Blob the views are computed for (the canvas as PNG, or a dropped file)
let drawn = true;           // the image is a drawing (framed like MNIST when the box is ticked)

// ---- talking to the server --------------------------------------------------------------------------------
async function call(run, view, query = {}, body = null) {
  // One request per (run, view) at a time: a newer one aborts the older (the server also skips stale ones).
  const key = `${run.info.id}/${view}`;
  inFlight.get(key)?.abort();
  const controller = new AbortController();
  inFlight.set(key, controller);
  const params = new URLSearchParams(query).toString();
  const url = `/api/runs/${encodeURIComponent(run.info.id)}/${view}${params ? "?" + params : ""}`;
  try {
    for (let attempt = 0; ; attempt++) {
      const response = await fetch(url, {
        method: body ? "POST" : "GET", body, signal: controller.signal,
        headers: body ? {"Content-Type": body.type || "application/octet-stream"} : {},
      });
      const answer = await response.json().catch(() => ({error: `the server answered ${response.status}`}));
      // 409: the server saw a newer request for this view. If this one is still our newest (requests on two
      // connections can arrive out of order), ask again; otherwise a newer call will answer.
      if (response.status === 409 && answer.superseded) {
        if (inFlight.get(key) !== controller || attempt >= 3) return null;
        continue;
      }
      if (!response.ok) throw new Error(answer.error || `the server answered ${response.status}`);
      return answer;
    }
  } catch (error) {
    if (error.name === "AbortError") return null;
    throw error;
  } finally {
    if (inFlight.get(key) === controller) inFlight.delete(key);
  }
}

function imageQuery(extra = {}) {
  return {...extra, frame: drawn && frameInput.checked ? "1" : "0"};
}

function showError(run, error) {
  const box = run.root.querySelector(".run-error");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

// ---- rendering ----------------------------------------------------------------------------------------------
function fillPrediction(list, top) {
  list.replaceChildren(...top.map(({class: name, probability}) => {
    const item = document.createElement("li");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, probability * 100).toFixed(1)}%`;
    const label = document.createElement("span");
    label.textContent = name;
    const value = document.createElement("span");
    value.textContent = `${(probability * 100).toFixed(1)}%`;
    const track = document.createElement("span");
    track.append(bar);
    item.append(label, track, value);
    return item;
  }));
}

function setText(run, selector, text) { run.root.querySelector(selector).textContent = text; }
function setImage(run, selector, url) { run.root.querySelector(selector).src = url; }

function lineChart(canvas, rows) {
  // Two panels: loss and error (%) per epoch; train solid, validation dashed, test dotted.
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.font = "10px system-ui, sans-serif";
  if (!rows.length) { g.fillText("no training history in this run", 10, 20); return; }
  const panels = [["loss", "loss"], ["error", "error %"]];
  const styles = {train: [], val: [4, 3], test: [1, 2]};
  const colours = {train: "#2f6fdf", val: "#e08a00", test: "#1d8f4e"};
  const width = canvas.width / 2;
  panels.forEach(([metric, title], p) => {
    const left = p * width + 30, top = 14, w = width - 40, h = canvas.height - 34;
    const series = Object.keys(styles).filter((s) => rows.every((r) => `${s}_${metric}` in r));
    const values = series.flatMap((s) => rows.map((r) => r[`${s}_${metric}`] * (metric === "error" ? 100 : 1)));
    const high = Math.max(...values, 1e-9), low = Math.min(0, ...values);
    const x = (i) => left + (rows.length === 1 ? w / 2 : (i * w) / (rows.length - 1));
    const y = (v) => top + h - ((v - low) / (high - low || 1)) * h;
    g.strokeStyle = "#d8dde5"; g.setLineDash([]); g.strokeRect(left, top, w, h);
    g.fillStyle = "#5b6473";
    g.fillText(title, left, top - 3);
    g.fillText(high.toPrecision(2), left - 28, top + 8);
    g.fillText(`epoch ${rows[rows.length - 1].epoch}`, left + w - 40, top + h + 12);
    series.forEach((s) => {
      g.strokeStyle = colours[s]; g.setLineDash(styles[s]); g.beginPath();
      rows.forEach((r, i) => {
        const v = r[`${s}_${metric}`] * (metric === "error" ? 100 : 1);
        i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v));
      });
      g.stroke();
      if (p === 1) { g.fillStyle = colours[s]; g.fillText(s, left + w - 30, top + 12 + 11 * series.indexOf(s)); }
    });
  });
  g.setLineDash([]);
}

function confusionChart(canvas, {classes, matrix}) {
  const g = canvas.getContext("2d"), k = classes.length, size = canvas.width - 20, cell = size / k;
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.font = `${Math.min(10, cell * 0.45)}px system-ui, sans-serif`;
  g.textAlign = "center"; g.textBaseline = "middle";
  matrix.forEach((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    row.forEach((count, j) => {
      const share = count / total;  // row-normalised: the fraction of class i predicted as j
      g.fillStyle = i === j ? `rgba(29,143,78,${0.15 + 0.85 * share})` : `rgba(179,38,30,${Math.min(1, share * 4)})`;
      g.fillRect(20 + j * cell, 20 + i * cell, cell - 1, cell - 1);
      if (k <= 12 && count) { g.fillStyle = share > 0.5 ? "#fff" : "#1d2330";
        g.fillText(count, 20 + (j + 0.5) * cell, 20 + (i + 0.5) * cell); }
    });
    if (k <= 20) { g.fillStyle = "#5b6473"; g.fillText(classes[i].slice(0, 3), 10, 20 + (i + 0.5) * cell);
      g.fillText(classes[i].slice(0, 3), 20 + (i + 0.5) * cell, 10); }
  });
}

function outlineChart(canvas, seen, outline, inputSize) {
  const g = canvas.getContext("2d"), picture = new Image();
  picture.onload = () => {
    g.imageSmoothingEnabled = false;
    g.clearRect(0, 0, canvas.width, canvas.height);
    g.drawImage(picture, 0, 0, canvas.width, canvas.height);
    const sx = canvas.width / inputSize[2], sy = canvas.height / inputSize[1];
    g.strokeStyle = "#ffb000"; g.lineWidth = 2; g.beginPath();
    outline.forEach(([px, py], i) => {
      const cx = (px + 0.5) * sx, cy = (py + 0.5) * sy;  // pixel centres to canvas units
      i ? g.lineTo(cx, cy) : g.moveTo(cx, cy);
    });
    g.stroke();
    canvas.dataset.drawn = "1";
  };
  picture.src = seen;
}

// ---- the views ---------------------------------------------------------------------------------------------
async function guard(run, work) {
  try { await work(); showError(run, null); } catch (error) { showError(run, error); }
}

async function boxes(run) {
  if (!image) return;
  const answer = await call(run, "boxes", imageQuery({threshold: 0.5}), image);
  if (!answer) return;
  setImage(run, ".boxes", answer.image);
  const items = answer.detections.map((d) => {
    const item = document.createElement("li");
    item.textContent = `${d.class} ${(d.score).toFixed(2)} at [${d.box.join(", ")}]`;
    return item;
  });
  run.root.querySelector(".detections").replaceChildren(...items);
  setText(run, ".boxes-caption", `${answer.detections.length} object(s)`);
  run.root.dataset.detections = String(answer.detections.length);
}

async function predict(run) {
  if (!image) return;
  if (run.info.views.includes("boxes")) return boxes(run);
  const answer = await call(run, "predict", imageQuery(), image);
  if (!answer) return;
  fillPrediction(run.root.querySelector(".prediction"), answer.top);
  setImage(run, ".seen", answer.input);
  run.seen = answer.input;
  run.root.dataset.predicted = answer.top[0].class;
}

async function features(run) {
  if (!image || !run.layer) return;
  const answer = await call(run, "features", imageQuery({layer: run.layer}), image);
  if (!answer) return;
  const maps = answer.maps.map((url, i) => {
    const tile = document.createElement("img");
    tile.src = url; tile.alt = `channel ${i}`; tile.title = `${answer.layer} channel ${i}`;
    return tile;
  });
  run.root.querySelector(".maps").replaceChildren(...maps);
  const more = answer.channels > answer.maps.length ? ` (first ${answer.maps.length} of ${answer.channels})` : "";
  setText(run, ".features-caption", `${answer.qualified}: ${answer.shape.join("×")}${more}; one grey scale ` +
    `for the layer, ${answer.range[0].toPrecision(3)} (black) to ${answer.range[1].toPrecision(3)} (white)`);
  run.root.querySelector(".features-panel").dataset.layer = answer.layer;
}

async function explain(run) {
  if (!image) return;
  const notes = new Set();
  const [occlusion, deconv, guided] = await Promise.all([
    call(run, "occlusion", imageQuery(), image),
    run.layer ? call(run, "deconv", imageQuery({layer: run.layer}), image) : null,
    call(run, "guided-backprop", imageQuery(), image),
  ]);
  if (occlusion) {
    setImage(run, ".occlusion", occlusion.attribution);
    setText(run, ".occlusion-caption", `occlusion, class ${occlusion.class} (${occlusion.size} px square)`);
  }
  if (deconv) {
    setImage(run, ".deconv", deconv.image);
    setText(run, ".deconv-caption", `deconvnet, ${deconv.layer} unit ${deconv.channel}`);
    deconv.notes.forEach((n) => notes.add(n));
  }
  if (guided) {
    setImage(run, ".guided", guided.image);
    setText(run, ".guided-caption", `guided backprop, class ${guided.class}`);
    guided.notes.forEach((n) => notes.add(n));
  }
  notes.add("Occlusion: red where hiding the pixel lowers the class's log-odds, blue where it raises them. " +
            "Deconvnet and guided backprop: red positive, blue negative.");
  run.root.querySelector(".notes ul").replaceChildren(...[...notes].map((text) => {
    const item = document.createElement("li"); item.textContent = text; return item;
  }));
}

async function adversarial(run) {
  if (!image) return;
  const eps = Number(epsInput.value);
  const answer = await call(run, "fgsm", imageQuery({eps}), image);
  if (!answer) return;
  setImage(run, ".adversarial", answer.image);
  setImage(run, ".perturbation", answer.perturbation);
  fillPrediction(run.root.querySelector(".fgsm-prediction"), answer.top);
  setText(run, ".eps-shown", answer.eps.toFixed(2));
  run.root.querySelector(".fgsm-panel").dataset.eps = answer.eps.toFixed(2);
}

async function transformer(run) {
  if (!image || !run.info.views.includes("transformer")) return;
  const answer = await call(run, "transformer", imageQuery(), image);
  if (!answer) return;
  setImage(run, ".transformed", answer.output);
  setText(run, ".transformer-caption", `its output (${answer.output_size.join("×")}, ${answer.transform})`);
  if (run.seen) outlineChart(run.root.querySelector(".outline"), run.seen, answer.outline, run.info.input_size);
}

function everything(run) {
  if (run.info.views.includes("boxes")) return guard(run, () => boxes(run));
  guard(run, async () => {
    await predict(run);
    await Promise.all([features(run), transformer(run), adversarial(run), explain(run)]);
  });
}

// ---- input: drawing, files, controls ----------------------------------------------------------------------
function canvasBlob() { return new Promise((resolve) => pad.toBlob(resolve, "image/png")); }

function clearPad() {
  ink.fillStyle = "#000";
  ink.fillRect(0, 0, pad.width, pad.height);
}

let stroke = null, predicting = false;
pad.addEventListener("pointerdown", (event) => {
  pad.setPointerCapture(event.pointerId);
  stroke = {x: event.offsetX, y: event.offsetY};
  drawn = true;
});
pad.addEventListener("pointermove", async (event) => {
  if (!stroke) return;
  ink.strokeStyle = "#fff"; ink.lineWidth = 20; ink.lineCap = "round"; ink.lineJoin = "round";
  ink.beginPath(); ink.moveTo(stroke.x, stroke.y); ink.lineTo(event.offsetX, event.offsetY); ink.stroke();
  stroke = {x: event.offsetX, y: event.offsetY};
  if (predicting) return;  // as you draw: one prediction in flight per moment, the newest drawing each time
  predicting = true;
  image = await canvasBlob();
  await Promise.all(runs.map((run) => guard(run, () => predict(run))));
  predicting = false;
});
async function endStroke() {
  if (!stroke) return;
  stroke = null;
  image = await canvasBlob();
  runs.forEach(everything);
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function useFile(file) {
  if (!file) return;
  image = file; drawn = false;
  const url = URL.createObjectURL(file), picture = new Image();
  picture.onload = () => { clearPad(); ink.drawImage(picture, 0, 0, pad.width, pad.height); URL.revokeObjectURL(url); };
  picture.onerror = () => URL.revokeObjectURL(url);  // the server says what is wrong with it
  picture.src = url;
  runs.forEach(everything);  // a file the server cannot use gets its message in each run's column
}
pad.addEventListener("dragover", (event) => { event.preventDefault(); pad.classList.add("drop"); });
pad.addEventListener("dragleave", () => pad.classList.remove("drop"));
pad.addEventListener("drop", (event) => {
  event.preventDefault(); pad.classList.remove("drop");
  useFile(event.dataTransfer.files[0]);
});
document.getElementById("file").addEventListener("change", (event) => useFile(event.target.files[0]));
document.getElementById("clear").addEventListener("click", () => { clearPad(); image = null; drawn = true; });
epsInput.addEventListener("input", () => {
  document.getElementById("eps-value").textContent = Number(epsInput.value).toFixed(2);
  runs.filter((run) => run.info.views.includes("fgsm")).forEach((run) => guard(run, () => adversarial(run)));
});
frameInput.addEventListener("change", () => runs.forEach(everything));

// ---- start: one column per run ----------------------------------------------------------------------------
async function start() {
  clearPad();
  const response = await fetch("/api/runs");
  const {runs: infos, max_epsilon: maxEps} = await response.json();
  epsInput.max = maxEps;
  const template = document.getElementById("run-template");
  for (const info of infos) {
    const root = template.content.firstElementChild.cloneNode(true);
    const run = {info, root, layer: info.default_layer};
    root.dataset.run = info.id;
    root.querySelector(".run-name").textContent = info.name;
    const error = info.test_error == null ? "" : `, test error ${(info.test_error * 100).toFixed(2)}%`;
    const adv = info.adversarial ? `, adversarially trained (${info.adversarial})` : "";
    root.querySelector(".run-meta").textContent = `${info.model} on ${info.data}, ${info.epochs} epochs${error}${adv}`;
    const select = root.querySelector(".layer");
    select.replaceChildren(...info.layers.map((name) => new Option(name, name, false, name === run.layer)));
    select.addEventListener("change", () => {
      run.layer = select.value;
      guard(run, () => Promise.all([features(run), explain(run)]));
    });
    root.querySelector(".transformer-panel").hidden = !info.views.includes("transformer");
    if (info.views.includes("boxes")) {  // a detector: its boxes instead of the classifier panels
      for (const name of ["prediction", "features", "explain", "fgsm", "confusion"]) {
        root.querySelector(`.${name}-panel`).hidden = true;
      }
      root.querySelector(".boxes-panel").hidden = false;
      const score = info.test_map50 == null ? "" : `, test mAP@0.5 ${info.test_map50.toFixed(3)}`;
      root.querySelector(".run-meta").textContent = `${info.model} on ${info.data}, ${info.epochs} epochs${score}`;
    }
    document.getElementById("runs").append(root);
    runs.push(run);
    guard(run, async () => lineChart(root.querySelector(".curves"), (await call(run, "curves")).rows));
    if (info.views.includes("confusion")) guard(run, async () => {
      const confusion = await call(run, "confusion");
      setText(run, ".confusion-caption", `${confusion.data} ${confusion.split} split, ${confusion.samples} ` +
        `images, error ${(confusion.error * 100).toFixed(2)}% (rows: true class, columns: predicted)`);
      confusionChart(root.querySelector(".confusion"), confusion);
    });
  }
  status.textContent = `${infos.length} run(s). Draw a digit on the black square.`;
  document.body.dataset.ready = "1";
}
start().catch((error) => { status.textContent = `could not load the runs: ${error.message}`; });
