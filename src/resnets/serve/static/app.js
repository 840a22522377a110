// The resnets serve page: send the chosen photo to /v1/predict and draw its top-5 classes as bars; with several
// models served, a list chooses the one to ask (?model=NAME).
"use strict";

const $ = (id) => document.getElementById(id);

function headers() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function render(answer) {
  const list = $("classes");
  list.replaceChildren();
  for (const p of answer.predictions) {
    const item = document.createElement("li");
    item.dataset.index = p.index;
    const label = document.createElement("div");
    label.className = "label";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = p.name;
    const prob = document.createElement("span");
    prob.className = "probability";
    prob.textContent = (100 * p.probability).toFixed(2) + "%";
    label.append(name, prob);
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = (100 * p.probability).toFixed(2) + "%";
    bar.append(fill);
    item.append(label, bar);
    list.append(item);
  }
  const t = answer.timings_ms;
  $("timings").textContent = `decode ${t.decode.toFixed(1)} ms · queue ${t.queue.toFixed(1)} ms · ` +
    `model ${t.model.toFixed(1)} ms (batch of ${answer.batch_size})`;
  $("result").hidden = false;
}

async function post(path, file) {
  const form = new FormData();
  form.append("file", file);
  const response = await fetch(path, { method: "POST", body: form, headers: headers() });
  if (!response.ok) {
    if (response.status === 401) $("key-box").open = true;
    const problem = await response.json().catch(() => ({}));
    throw new Error(problem.detail || response.statusText);
  }
  return response;
}

async function classify(file) {
  if (!file) return;
  document.body.dataset.state = "busy";
  $("error").hidden = true;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  try {
    const answer = await post("/v1/predict?top=5" + chosen("&"), file);
    render(await answer.json());
    if ($("heatmap").checked) {
      const picture = await post("/v1/explain" + chosen("?"), file);
      URL.revokeObjectURL(preview.src);
      preview.src = URL.createObjectURL(await picture.blob());
      preview.alt = "the photo with the heat map of " + decodeURIComponent(picture.headers.get("X-Class-Name"));
    }
    document.body.dataset.state = "done";
  } catch (e) {
    $("result").hidden = true;
    document.body.dataset.state = "error";
    showError("Could not classify " + file.name + ": " + e.message);
  }
}

let served = {};  // name -> what /readyz says of it

function chosen(separator) {
  const name = $("models").value;
  return name ? separator + "model=" + encodeURIComponent(name) : "";
}

function describe(info) {
  $("model").textContent = `${info.model} · weights ${info.weights || "random"} · ${info.precision} · ${info.backend}`;
}

async function describeModel() {
  try {
    const response = await fetch("/readyz");
    const info = await response.json();
    if (!response.ok) {
      $("model").textContent = "model not ready: " + info.detail;
      return;
    }
    served = info.models || {};
    const names = Object.keys(served);
    if (names.length > 1) {
      $("models").replaceChildren(...names.map((name) => new Option(name, name)));
      $("choose").hidden = false;
    }
    describe(names.length ? served[names[0]] : info);
  } catch (e) {
    $("model").textContent = "server unreachable";
  }
}

$("models").addEventListener("change", () => describe(served[$("models").value]));

$("file").addEventListener("change", (e) => classify(e.target.files[0]));
const drop = $("drop");
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (e) => classify(e.dataTransfer.files[0]));
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
describeModel();
