// The voxprint page: plain JavaScript, no build step, no third-party code.
// Recordings are made with MediaRecorder, then decoded and re-encoded as 16 kHz mono 16-bit WAV in
// the browser, because the service decodes WAV/FLAC/OGG/MP3 (not the WebM/Opus that Chromium records).
"use strict";

const TARGET_RATE = 16000;
const KEY_STORAGE = "voxprint.apiKey";
const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------------------------------ the API

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

// Calls the API; resolves to the JSON body, rejects with the service's one-line message.
async function api(method, path, form) {
  const headers = { "Authorization": "Bearer " + apiKey() };
  let response;
  try {
    response = await fetch(path, { method, headers, body: form || undefined });
  } catch (err) {
    throw new Error("the service cannot be reached (" + err.message + ")");
  }
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    throw new Error((body && body.error) || ("HTTP " + response.status));
  }
  return body;
}

function say(element, text, isError) {
  element.textContent = text;
  element.classList.toggle("error", Boolean(isError));
}

// ------------------------------------------------------------------------------- recording to WAV

function encodeWav(samples, rate) {
  const buffer = new ArrayBuffer(44 + samples.length * 2);
  const view = new DataView(buffer);
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([buffer], { type: "audio/wav" });
}

// A recorded blob (WebM/Opus, Ogg...) as a 16 kHz mono WAV blob.
async function toWav(blob) {
  const context = new AudioContext();
  let decoded;
  try {
    decoded = await context.decodeAudioData(await blob.arrayBuffer());
  } finally {
    context.close();
  }
  const frames = Math.max(1, Math.ceil(decoded.duration * TARGET_RATE));
  const offline = new OfflineAudioContext(1, frames, TARGET_RATE);  // mixes down and resamples
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const rendered = await offline.startRendering();
  return encodeWav(rendered.getChannelData(0), TARGET_RATE);
}

// ------------------------------------------------------------------ clips: recordings and uploads

// One "record or upload" widget; clips() gives what will be sent.
class ClipPicker {
  constructor(name) {
    this.name = name;
    this.box = document.querySelector(`[data-clips="${name}"]`);
    this.multiple = this.box.dataset.multiple === "true";
    this.button = $(name + "-record");
    this.list = $(name + "-clips");
    this.input = this.box.querySelector("input[type=file]");
    this.items = [];
    this.recorder = null;
    this.count = 0;
    this.button.addEventListener("click", () => this.toggle());
    this.input.addEventListener("change", () => {
      for (const file of this.input.files) this.add(file, file.name);
      this.input.value = "";
    });
  }

  clips() { return this.items.map((item) => item); }

  add(blob, name) {
    if (!this.multiple) this.clear();
    const url = URL.createObjectURL(blob);
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.textContent = name;
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.src = url;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", "remove " + name);
    const item = { blob, name, url, li };
    remove.addEventListener("click", () => this.remove(item));
    li.append(label, audio, remove);
    this.list.append(li);
    this.items.push(item);
  }

  remove(item) {
    URL.revokeObjectURL(item.url);
    item.li.remove();
    this.items = this.items.filter((other) => other !== item);
  }

  clear() { for (const item of [...this.items]) this.remove(item); }

  async toggle() {
    if (this.recorder) { this.recorder.stop(); return; }
    let stream;
    try {
      // Echo cancellation, noise suppression and gain control reshape the voice; the model wants it as is.
      stream = await navigator.mediaDevices.getUserMedia(
        { audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
    } catch (err) {
      say($(this.name + "-status") || $(this.name + "-result"), "no microphone: " + err.message, true);
      return;
    }
    const chunks = [];
    const recorder = new MediaRecorder(stream);
    this.recorder = recorder;
    const started = Date.now();
    const tick = setInterval(() => {
      this.button.textContent = "■ Stop (" + Math.round((Date.now() - started) / 1000) + " s)";
    }, 250);
    recorder.addEventListener("dataavailable", (event) => { if (event.data.size) chunks.push(event.data); });
    recorder.addEventListener("stop", async () => {
      clearInterval(tick);
      stream.getTracks().forEach((track) => track.stop());
      this.recorder = null;
      this.button.classList.remove("recording");
      this.button.textContent = "● Record";
      this.button.disabled = true;  // until the clip is converted
      try {
        const wav = await toWav(new Blob(chunks, { type: recorder.mimeType }));
        this.count += 1;
        this.add(wav, `recording-${this.count}.wav`);
      } catch (err) {
        say($(this.name + "-status") || $(this.name + "-result"), "the recording could not be read: " + err.message, true);
      } finally {
        this.button.disabled = false;
      }
    });
    recorder.start();
    this.button.classList.add("recording");
    this.button.textContent = "■ Stop (0 s)";
  }
}

// ------------------------------------------------------------------------------------- the sections

function formatScore(x) { return Number(x).toFixed(2); }

async function enroll(picker) {
  const status = $("enroll-status");
  const id = $("enroll-id").value.trim();
  const clips = picker.clips();
  if (!id) return say(status, "enter a speaker id", true);
  if (!clips.length) return say(status, "record or upload at least one recording", true);
  const form = new FormData();
  for (const clip of clips) form.append("files", clip.blob, clip.name);
  const name = $("enroll-name").value.trim();
  if (name) form.append("name", name);
  say(status, "enrolling…");
  try {
    const record = await api("POST", `/v1/speakers/${encodeURIComponent(id)}/enrollments`, form);
    say(status, `Enrolled ${record.id}: ${record.enrollments} recording(s), ${formatScore(record.seconds)} s of speech.`);
    picker.clear();
    refreshSpeakers();
  } catch (err) {
    say(status, "Not enrolled: " + err.message, true);
  }
}

function showVerdict(box, good, headline, details) {
  box.replaceChildren();
  box.classList.remove("error");
  const verdict = document.createElement("p");
  verdict.className = "verdict " + (good ? "accept" : "reject");
  verdict.textContent = headline;
  box.append(verdict);
  for (const line of details) {
    const p = document.createElement("p");
    p.className = "detail";
    p.textContent = line;
    box.append(p);
  }
}

async function verify(picker) {
  const box = $("verify-result");
  const speaker = $("verify-speaker").value.trim();
  const clips = picker.clips();
  if (!speaker) return say(box, "enter the claimed speaker's id", true);
  if (!clips.length) return say(box, "record or upload a recording", true);
  const form = new FormData();
  form.append("speaker", speaker);
  form.append("file", clips[0].blob, clips[0].name);
  say(box, "verifying…");
  try {
    const r = await api("POST", "/v1/verify", form);
    const accepted = r.decision === "accept";
    showVerdict(box, accepted,
      accepted ? `Accepted: this sounds like ${r.speaker}.` : `Rejected: this does not sound like ${r.speaker}.`,
      [`Score ${formatScore(r.score)} is ${accepted ? "at or above" : "below"} the threshold ${formatScore(r.threshold)}` +
       ` (${r.scale || "score"}; higher means more alike).`]);
  } catch (err) {
    say(box, "Could not verify: " + err.message, true);
  }
}

async function identify(picker) {
  const box = $("identify-result");
  const clips = picker.clips();
  if (!clips.length) return say(box, "record or upload a recording", true);
  const form = new FormData();
  form.append("file", clips[0].blob, clips[0].name);
  form.append("top_k", "5");
  say(box, "identifying…");
  try {
    const r = await api("POST", "/v1/identify", form);
    // The store accepts the best speaker when score - ln(gallery) reaches the threshold.
    const needed = r.threshold + Math.log(r.gallery);
    const best = r.top.length ? r.top[0] : null;
    const candidates = r.top.map((c) => `${c.speaker} ${formatScore(c.score)}`).join(", ");
    if (r.speaker) {
      showVerdict(box, true, `This sounds like ${r.speaker}.`,
        [`Score ${formatScore(r.score)} reaches the ${formatScore(needed)} needed among ${r.gallery} enrolled speaker(s).`,
         `Candidates: ${candidates}.`]);
    } else {
      showVerdict(box, false, "Nobody enrolled matches this voice.",
        [best ? `The closest, ${best.speaker}, scores ${formatScore(best.score)}, below the ${formatScore(needed)} needed.` : "",
         `Candidates: ${candidates}.`]);
    }
  } catch (err) {
    say(box, "Could not identify: " + err.message, true);
  }
}

async function refreshSpeakers() {
  const status = $("speakers-status");
  const body = $("speakers-table").querySelector("tbody");
  try {
    const { speakers } = await api("GET", "/v1/speakers");
    body.replaceChildren();
    const ids = $("speaker-ids");
    ids.replaceChildren();
    for (const s of speakers) {
      const row = document.createElement("tr");
      for (const value of [s.id, s.name, s.enrollments, formatScore(s.seconds) + " s"]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.append(cell);
      }
      const cell = document.createElement("td");
      const del = document.createElement("button");
      del.type = "button";
      del.textContent = "Delete";
      del.dataset.speaker = s.id;
      // Two clicks instead of a confirm() dialog: one click never deletes.
      del.addEventListener("click", async () => {
        if (!del.classList.contains("confirm")) {
          del.classList.add("confirm");
          del.textContent = "Really delete?";
          return;
        }
        try {
          await api("DELETE", `/v1/speakers/${encodeURIComponent(s.id)}`);
          say(status, `Deleted ${s.id}.`);
          refreshSpeakers();
        } catch (err) {
          say(status, "Not deleted: " + err.message, true);
        }
      });
      cell.append(del);
      row.append(cell);
      body.append(row);
      const option = document.createElement("option");
      option.value = s.id;
      ids.append(option);
    }
    say(status, speakers.length ? `${speakers.length} speaker(s) enrolled.` : "Nobody is enrolled yet.");
  } catch (err) {
    say(status, "Cannot list speakers: " + err.message, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const pickers = { enroll: new ClipPicker("enroll"), verify: new ClipPicker("verify"), identify: new ClipPicker("identify") };
  $("api-key").value = apiKey();
  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    try {
      await api("GET", "/v1/speakers");
      say($("key-status"), "Key accepted.");
      refreshSpeakers();
    } catch (err) {
      say($("key-status"), err.message, true);
    }
  });
  $("enroll-submit").addEventListener("click", () => enroll(pickers.enroll));
  $("verify-submit").addEventListener("click", () => verify(pickers.verify));
  $("identify-submit").addEventListener("click", () => identify(pickers.identify));
  $("refresh").addEventListener("click", refreshSpeakers);
  if (apiKey()) refreshSpeakers();
});
