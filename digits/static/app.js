// Draw on the canvas, send it to /api/predict while drawing, show the digit, the bars and the model input.
// An answer the server did not accept is shown as such: "not a digit", or the two digits it is unsure of.
// "Wrong? It was a ..." sends a drawing's correct label to /api/feedback, which stores it only on a server
// run with --collect DIR (GET /api/model says; the page says so when it does not).
// "Write a number" widens the canvas and sends it to /api/read: one card per digit read. "Show why" asks
// for the occlusion map and tints the model input red where the answer relied on the ink.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const preview = document.getElementById("preview").getContext("2d");
const resultEl = document.getElementById("result");
const digitEl = document.getElementById("digit");
const verdictEl = document.getElementById("verdict");
const statusEl = document.getElementById("status");
const barsEl = document.getElementById("bars");
const digitsEl = document.getElementById("digits");
const modeButton = document.getElementById("mode");
const whyButton = document.getElementById("why");
const correctEl = document.getElementById("correct");
const noteEl = document.getElementById("correct-note");

// px on the 280 px canvas: medium is about MNIST's stroke width once scaled to 20x20. The pen keeps its width
// on the wide canvas too: a digit there is as tall as on the square one.
let stroke = 22;
const DEBOUNCE_MS = 150;
const UNDO_STEPS = 30; // strokes Undo can take back (a 280x280 snapshot each, 300 KB)
const NUMBER_WIDTH = 840; // px: the canvas in number mode, three digits' widths by one tall
const UPLOAD_SIDE = 1024; // px: bigger uploads are shrunk here first (phone photos exceed the 2 MiB limit)

let drawing = false; // a pointer is down
let hasInk = false; // something was drawn since the last Clear: an empty canvas is never sent
let last = null; // previous point of the current stroke
let timer = null;
let inFlight = false; // at most one request at a time ...
let again = false; // ... and one more when it returns if the drawing changed meanwhile
const undoStack = []; // the canvas before each stroke, the latest last
const undoButton = document.getElementById("undo");
let generation = 0; // bumped by Clear/upload so late answers for an old drawing are ignored
let numberMode = false; // the wide canvas, read by /api/read
let explain = false; // ask for the occlusion map
let collecting = false; // the server stores corrections (GET /api/model)
let sentImage = null; // the drawing's PNG data URL as last sent, for a correction
let answered = null; // {image, answered, model} of the answer shown, for a correction

// "Wrong? It was a": one button per digit and one for "not a digit".
const choices = [...Array(10).keys(), "not a digit"].map((label) => {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = String(label);
  button.dataset.label = String(label);
  button.addEventListener("click", () => sendCorrection(label));
  document.getElementById("choices").appendChild(button);
  return button;
});

// One row per class: <div class="bar" data-digit="d"><span>d</span><div class="track"><div class="fill">
const bars = [];
for (let d = 0; d < 10; d++) {
  const row = document.createElement("div");
  row.className = "bar";
  row.dataset.digit = String(d);
  row.innerHTML = `<span class="label">${d}</span><div class="track"><div class="fill"></div></div><span class="pct"></span>`;
  barsEl.appendChild(row);
  bars.push({ row, fill: row.querySelector(".fill"), pct: row.querySelector(".pct") });
}

function resetPad() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = ctx.fillStyle = "#fff";
  ctx.lineWidth = stroke;
  ctx.lineCap = ctx.lineJoin = "round";
}

// empty | accepted | unsure ("unsure between 4 and 9") | rejected ("not a digit")
function stateOf(result) {
  if (!result) return "empty";
  if (result.accepted !== false) return "accepted"; // a server without the field accepts everything
  return result.reason === "not a digit" ? "rejected" : "unsure";
}

// The two most probable digits, most probable first.
function candidates(result) {
  return result.probabilities.map((p, d) => [p, d]).sort((a, b) => b[0] - a[0]).map(([, d]) => d);
}

// The 28x28 model input in grey; with an occlusion map, red where hiding the ink lowered the answer most.
function drawInput(target, input, why) {
  target.clearRect(0, 0, 28, 28);
  if (!input) return;
  const img = target.createImageData(28, 28);
  const support = why ? why.flat() : null;
  const strongest = support ? Math.max(1e-6, ...support) : 1;
  input.flat().forEach((v, i) => {
    const a = support ? 0.85 * Math.min(1, Math.max(0, support[i] / strongest)) : 0;
    const grey = v * 255 * (1 - a);
    img.data.set([grey + 255 * a, grey + 40 * a, grey + 40 * a, 255], i * 4);
  });
  target.putImageData(img, 0, 0);
}

function show(data) {
  if (numberMode) showReading(data);
  else showResult(data);
}

// One digit of a number, in words: "7 99%", "4 or 9?", "not a digit".
function describe(result) {
  const state = stateOf(result);
  if (state === "accepted") return `${result.digit} ${Math.floor(result.confidence * 100)}%`;
  if (state === "unsure") return `${candidates(result).slice(0, 2).join(" or ")}?`;
  return "not a digit";
}

function showReading(reading) {
  digitsEl.replaceChildren();
  offerCorrection(null); // corrections are for one digit
  resultEl.dataset.state = !reading ? "empty" : reading.accepted ? "accepted" : "unsure";
  digitEl.textContent = reading ? reading.digits.map((d) => (d.accepted ? d.digit : "?")).join("") : "";
  if (!reading) {
    verdictEl.textContent = "";
    return;
  }
  const doubtful = reading.digits.filter((d) => !d.accepted).length;
  verdictEl.textContent = doubtful
    ? `Not sure of ${doubtful} of ${reading.digits.length} digits: write them apart and clearly.`
    : `Read ${reading.number}`;
  for (const result of reading.digits) {
    const card = document.createElement("figure");
    card.className = "read-digit";
    card.dataset.state = stateOf(result);
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 28;
    drawInput(canvas.getContext("2d"), result.input, result.explain);
    const caption = document.createElement("figcaption");
    caption.textContent = describe(result);
    card.append(canvas, caption);
    digitsEl.append(card);
  }
}

// The correction row under an answer for a drawing: live when the server collects, else a note saying not.
function offerCorrection(result) {
  answered = result && sentImage ? { image: sentImage, model: result.model } : null;
  if (answered) {
    const state = stateOf(result);
    answered.answered = state === "rejected" ? "not a digit" : result.digit;
  }
  correctEl.hidden = !answered;
  choices.forEach((button) => (button.disabled = !collecting));
  noteEl.textContent = collecting ? "" : "This server does not collect corrections.";
}

async function sendCorrection(label) {
  if (!answered || !collecting) return;
  const mine = answered;
  choices.forEach((button) => (button.disabled = true));
  noteEl.textContent = "sending ...";
  try {
    const response = await fetch("/api/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...mine, label }),
    });
    const data = await response.json();
    if (mine !== answered) return; // the drawing changed meanwhile
    noteEl.textContent = response.ok
      ? `Thanks: kept for review as ${data.stored}.`
      : typeof data.detail === "string" ? data.detail : `error ${response.status}`;
    if (!response.ok) choices.forEach((button) => (button.disabled = false));
  } catch (err) {
    noteEl.textContent = `request failed: ${err}`;
    choices.forEach((button) => (button.disabled = false));
  }
}

function showResult(result) {
  const state = stateOf(result);
  resultEl.dataset.state = state;
  offerCorrection(result);
  const [first, second] = result ? candidates(result) : [];
  if (state === "accepted") {
    digitEl.textContent = String(result.digit);
    // Floored: a calibrated 0.996 is "99% sure", never a rounded-up 100%.
    const confidence = result.confidence ?? result.probabilities[result.digit];
    verdictEl.textContent = `${Math.floor(confidence * 100)}% sure`;
  } else if (state === "unsure") {
    digitEl.textContent = `${first} or ${second}`;
    verdictEl.textContent = `Not sure: ${first} or ${second}? Try drawing it more clearly.`;
  } else if (state === "rejected") {
    digitEl.textContent = "?";
    verdictEl.textContent = "That doesn't look like a digit. Draw one digit, 0 to 9, large and centred.";
  } else {
    digitEl.textContent = "";
    verdictEl.textContent = "";
  }
  bars.forEach((bar, d) => {
    const p = result ? result.probabilities[d] : 0;
    bar.fill.style.width = `${(p * 100).toFixed(1)}%`;
    bar.pct.textContent = result ? `${(p * 100).toFixed(1)}%` : "";
    bar.row.classList.toggle("top", Boolean(result) && d === result.digit);
    bar.row.classList.toggle("candidate", state === "unsure" && (d === first || d === second));
  });
  drawInput(preview, result?.input, result?.explain);
}

function setStatus(text, isError = false) {
  statusEl.textContent = text;
  statusEl.classList.toggle("error", isError);
}

async function send(body, headers = {}) {
  const mine = generation;
  // Busy until the answer for the latest drawing is shown: screen readers (and tests) wait for it.
  resultEl.setAttribute("aria-busy", "true");
  try {
    const query = `?input=true${explain ? "&explain=true" : ""}`;
    const path = numberMode ? "/api/read" : "/api/predict";
    const response = await fetch(path + query, { method: "POST", body, headers });
    const data = await response.json();
    if (mine !== generation) return;
    if (response.ok) {
      show(data);
      setStatus(`model ${data.model}`);
    } else {
      show(null);
      setStatus(typeof data.detail === "string" ? data.detail : `error ${response.status}`, true);
    }
  } catch (err) {
    if (mine === generation) setStatus(`request failed: ${err}`, true);
  } finally {
    if (!again) resultEl.setAttribute("aria-busy", "false");
  }
}

async function predictDrawing() {
  clearTimeout(timer);
  if (!hasInk) return;
  if (inFlight) {
    again = true;
    return;
  }
  inFlight = true;
  sentImage = pad.toDataURL("image/png");
  await send(JSON.stringify({ image: sentImage }), { "Content-Type": "application/json" });
  inFlight = false;
  if (again) {
    again = false;
    predictDrawing();
  }
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(predictDrawing, DEBOUNCE_MS);
}

// Pointer position in canvas pixels, whatever size CSS gives the canvas.
function point(event) {
  const rect = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - rect.left) * pad.width) / rect.width,
    y: ((event.clientY - rect.top) * pad.height) / rect.height,
  };
}

pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId); // keep the stroke even if the pointer leaves the canvas
  undoStack.push(ctx.getImageData(0, 0, pad.width, pad.height));
  if (undoStack.length > UNDO_STEPS) undoStack.shift();
  undoButton.disabled = false;
  drawing = true;
  hasInk = true;
  last = point(event);
  ctx.beginPath();
  ctx.arc(last.x, last.y, stroke / 2, 0, 2 * Math.PI); // a tap leaves a dot
  ctx.fill();
  schedule();
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  // Coalesced events carry the in-between samples a fast pen or finger produces between frames.
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  ctx.beginPath();
  ctx.moveTo(last.x, last.y);
  for (const e of events.length ? events : [event]) {
    last = point(e);
    ctx.lineTo(last.x, last.y);
  }
  ctx.stroke();
  schedule();
});

function endStroke() {
  if (!drawing) return;
  drawing = false;
  predictDrawing(); // at once, not debounced: the stroke is complete
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function clearPad() {
  generation++;
  clearTimeout(timer);
  hasInk = false;
  again = false;
  undoStack.length = 0;
  undoButton.disabled = true;
  resetPad();
  show(null);
  setStatus("Draw with a mouse, pen or finger, or upload a picture.");
}
document.getElementById("clear").addEventListener("click", clearPad);

modeButton.addEventListener("click", () => {
  numberMode = !numberMode;
  const mode = numberMode ? "number" : "digit";
  modeButton.setAttribute("aria-pressed", String(numberMode));
  pad.closest(".pad").dataset.mode = resultEl.dataset.mode = mode;
  document.getElementById("title").textContent = numberMode ? "Write a number" : "Draw a digit";
  pad.width = numberMode ? NUMBER_WIDTH : pad.height; // resizing empties the canvas
  digitsEl.replaceChildren();
  clearPad();
});

document.getElementById("pen").addEventListener("change", (event) => {
  stroke = Number(event.target.value);
  ctx.lineWidth = stroke; // the next strokes; what is drawn stays
});

whyButton.addEventListener("click", () => {
  explain = !explain;
  whyButton.setAttribute("aria-pressed", String(explain));
  predictDrawing(); // the drawing again, with or without the map
});

// Back to the canvas before the last stroke; before the first one, that is an empty pad.
function undo() {
  if (drawing || !undoStack.length) return;
  const before = undoStack.pop();
  if (!undoStack.length && !(before.data.some((v, i) => i % 4 === 0 && v > 0))) {
    clearPad();
    return;
  }
  ctx.putImageData(before, 0, 0);
  undoButton.disabled = !undoStack.length;
  generation++; // an answer on its way is for the stroke taken back
  predictDrawing();
}
undoButton.addEventListener("click", undo);
document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z" && !event.shiftKey) {
    event.preventDefault();
    undo();
  }
});

// The picture at most UPLOAD_SIDE pixels a side, as a PNG (keeps transparency) or, if that is big, a JPEG;
// the file itself if it is small already or the browser cannot decode it (the server then says why).
async function shrunk(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file); // applies the EXIF orientation
  } catch {
    return file;
  }
  const scale = Math.min(1, UPLOAD_SIDE / Math.max(bitmap.width, bitmap.height));
  if (scale === 1 && file.size <= 1024 * 1024) {
    bitmap.close();
    return file;
  }
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  const encode = (type, quality) => new Promise((resolve) => canvas.toBlob(resolve, type, quality));
  const png = await encode("image/png");
  // A noisy photo is megabytes as PNG: JPEG then (no transparency in a photo to lose).
  return png && png.size <= 1024 * 1024 ? png : (await encode("image/jpeg", 0.9)) || file;
}

document.getElementById("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  generation++;
  clearTimeout(timer);
  hasInk = false;
  undoStack.length = 0;
  undoButton.disabled = true;
  resetPad();
  sentImage = null; // an upload is not offered for correction
  setStatus(`reading ${file.name} ...`);
  const form = new FormData();
  form.append("file", await shrunk(file), file.name);
  await send(form);
  event.target.value = ""; // choosing the same file again fires another change
});

resetPad();
// Whether corrections are stored decides what the correction row offers.
fetch("/api/model")
  .then((response) => (response.ok ? response.json() : null))
  .then((info) => {
    collecting = Boolean(info && info.collecting);
  })
  .catch(() => {});
