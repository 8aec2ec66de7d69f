// The studio page: plain ES module, no build step. Everything goes through the REST API.
const $ = (id) => document.getElementById(id);
const STAGES = ["queued", "start", "prompt", "ideate", "refine", "cover", "clip", "score", "done"];
// stages a run only has when asked for; their chips appear once they run
const OPTIONAL = new Set(["refine"]);
const TERMINAL = new Set(["done", "failed", "cancelled", "interrupted"]);
const PAGE = 10;
let current = null; // the run shown
let lastRequest = null; // for "another take"
let stream = null;
// the page fills in after loading: a restored scroll position would land on the wrong spot
window.history.scrollRestoration = "manual";
const picked = new Set(); // runs chosen for "compare", kept across history pages and searches
const history = JSON.parse(localStorage.getItem("popcorn-history") || '{"q":"","offset":0}');

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

async function api(path, options = {}) {
  const token = sessionStorage.getItem("popcorn-token");
  const headers = { ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) $("auth").hidden = false;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const fields = (data.fields || []).map((f) => `${f.field}: ${f.problem}`).join("; ");
    throw new Error([data.error || response.statusText, fields, data.hint].filter(Boolean).join(" — "));
  }
  return data;
}

const fmt = (n) => (n === null || n === undefined ? "–" : Math.round(n).toLocaleString());

// -- settings panel ----------------------------------------------------------------------

function fillSelect(select, rows, chosen) {
  const keep = select.value || chosen;
  select.replaceChildren(
    ...rows.map((row) => {
      // "configured": a server is set but not contacted yet; the check below says more
      const label = row.status === "unreachable" ? `${row.name} (unreachable)`
        : row.usable ? row.name : `${row.name} (unavailable)`;
      const option = el("option", { value: row.name, textContent: label, title: row.reason || row.description });
      option.disabled = !row.usable && row.name !== chosen;
      option.dataset.why = row.reason || row.description || "";
      option.dataset.status = row.status || "";
      if (row.status === "unreachable") option.className = "unreachable";
      return option;
    }),
  );
  select.value = keep;
}

function fillBackends(data) {
  const d = data.defaults;
  fillSelect($("llm"), data.backends.llm || [], d.llm);
  fillSelect($("image"), data.backends.image || [], d.image);
  fillSelect($("video"), data.backends.video || [], d.video);
  $("llm-why").textContent = $("llm").selectedOptions[0]?.dataset.why || "";
}

async function loadBackends() {
  const data = await api("/api/backends");
  fillBackends(data);
  $("mode").value = data.defaults.mode;
  $("llm").addEventListener("change", () => {
    $("llm-why").textContent = $("llm").selectedOptions[0]?.dataset.why || "";
  });
  // then contact the local servers (bounded on the server): unreachable ones are marked
  api("/api/backends?check=1").then(fillBackends).catch(() => {});
}

async function loadData() {
  const status = await api("/api/data");
  $("data-status").textContent = status.ok
    ? "Data folder: ready (PE and corpus-based scoring can run)."
    : `Data folder: ${status.reason}. ${status.hint}`;
}

$("data-set").addEventListener("click", async () => {
  try {
    await api("/api/data", { method: "POST", body: JSON.stringify({ path: $("data-path").value }) });
    await loadData();
  } catch (err) {
    $("data-status").textContent = `Data folder not set: ${err.message}`;
  }
});

function requestFromForm() {
  const body = { query: $("query").value, mode: $("mode").value, variants: Number($("variants").value || 1) };
  const put = (id, convert = (v) => v) => {
    const value = $(id).value.trim();
    if (value !== "") body[id] = convert(value);
  };
  put("seed", Number);
  for (const id of ["llm", "llm_model", "llm_base_url", "llm_api_key", "image", "video", "category_match", "pe_pool"]) put(id);
  for (const id of ["temperature", "n_refs", "ratio", "num_tags", "refine"]) put(id, Number);
  if (!$("render").checked) body.render = false;
  return body;
}

// -- running -----------------------------------------------------------------------------

async function submit(body) {
  $("error").textContent = "";
  $("go").disabled = true;
  try {
    const job = await api("/api/runs", { method: "POST", body: JSON.stringify(body) });
    lastRequest = { ...body };
    delete lastRequest.llm_api_key; // a typed key is sent once, never kept by the page
    location.hash = `run=${job.id}`;
    watch(job.id);
    loadHistory();
  } catch (err) {
    $("error").textContent = `Error: ${err.message}`;
  } finally {
    $("go").disabled = false;
  }
}

$("make").addEventListener("submit", (event) => {
  event.preventDefault();
  submit(requestFromForm());
});

$("another").addEventListener("click", () => {
  const base = lastRequest || (current && current.request) || { query: current.query };
  // the seeds after this run's variants: new ideas, not a repeat of one already shown
  const record = (current && current.record) || {};
  const used = Math.max(1, (record.variants || []).length, Number(base.variants || 1));
  const seed = (record.seed ?? base.seed ?? 42) + used;
  submit({ ...base, seed: seed % 2 ** 31 });
});

$("cancel").addEventListener("click", async () => {
  if (current) await api(`/api/runs/${current.id}`, { method: "DELETE" }).catch(() => {});
});

// a failed, cancelled or interrupted run (a server restart) can be run again as a new job
$("retry").addEventListener("click", async () => {
  if (!current) return;
  $("error").textContent = "";
  const key = $("llm_api_key").value.trim(); // a typed key is not kept by the server
  const body = key ? JSON.stringify({ llm_api_key: key }) : undefined;
  try {
    const job = await api(`/api/runs/${current.id}/retry`, { method: "POST", body });
    location.hash = `run=${job.id}`;
    watch(job.id);
    loadHistory();
  } catch (err) {
    $("error").textContent = `Error: ${err.message}`;
  }
});

function drawStages(view, seen, active, failed = null, ran = null) {
  // ran: for a finished run, the stages it went through (its timings); the others were
  // skipped (rendering off) or never reached (after a failure)
  $("cancel").hidden = TERMINAL.has(view.state);
  $("retry").hidden = !TERMINAL.has(view.state) || view.state === "done";
  const shown = STAGES.filter((s) => !OPTIONAL.has(s) || seen.has(s) || s === active || (ran && ran.has(s)));
  $("stages").replaceChildren(
    ...shown.map((stage) => {
      let cls = "";
      if (seen.has(stage)) cls = "done";
      if (ran && !["queued", "start", "done"].includes(stage)) cls = ran.has(stage) ? "done" : "skipped";
      if (stage === active) cls = "active";
      if (stage === failed) cls = "failed";
      if (stage === "done" && TERMINAL.has(view.state)) cls = view.state === "done" ? "done" : "failed";
      const li = el("li", { className: cls, textContent: stage === "done" && TERMINAL.has(view.state) ? view.state : stage });
      if (cls === "skipped") li.title = failed ? "not reached" : "not run";
      return li;
    }),
  );
}

// which stage a finished run failed at: the last stage it started (its timings are kept
// in order), else the set-up before the first stage
function failedStage(view) {
  const ran = Object.keys((view.record && view.record.timings) || view.stages || {});
  return ran.length ? ran[ran.length - 1] : "start";
}

function watch(id) {
  if (stream) stream.close();
  $("progress").hidden = false;
  $("result").hidden = true;
  $("failure").hidden = true;
  current = { id, state: "queued" };
  const seen = new Set();
  drawStages(current, seen, "queued");
  $("stages").dataset.log = "";
  $("state").textContent = "Queued…";
  stream = new EventSource(`/api/runs/${id}/events`);
  let active = null;
  stream.addEventListener("stage", (event) => {
    const data = JSON.parse(event.data);
    // only what ran turns green: a stage is done when the next one starts
    seen.add("queued");
    if (active) seen.add(active);
    active = data.stage;
    drawStages(current, seen, data.stage);
    $("stages").dataset.log = `${$("stages").dataset.log || ""} ${data.stage}`.trim();
    $("state").textContent = `Running: ${data.stage}`;
  });
  stream.addEventListener("progress", (event) => {
    const data = JSON.parse(event.data);
    const attempt = data.attempt > 1 ? `, attempt ${data.attempt}` : "";
    $("state").textContent = `Running: ideate, variant ${data.variant} of ${data.of}${attempt}`;
  });
  stream.addEventListener("index", (event) => {
    const data = JSON.parse(event.data);
    $("state").textContent = `Running: first PE run, embedding the corpus once (${data.percent}% of ${data.total.toLocaleString()} videos)`;
  });
  stream.addEventListener("state", async (event) => {
    const data = JSON.parse(event.data);
    current.state = data.state;
    if (data.state === "running") seen.add("queued");
    if (data.state === "queued") {
      api(`/api/runs/${id}`).then((view) => {
        if (view.state === "queued") $("state").textContent = `Queued: ${view.position ?? 0} ahead in line…`;
      }).catch(() => {});
    }
    if (!TERMINAL.has(data.state)) return;
    stream.close();
    $("state").textContent = data.state === "done" ? "Done." : `${data.state}: ${data.error || ""}`;
    await show(id);
    loadHistory();
  });
  stream.onerror = () => {
    // the browser retries on its own; a finished run is shown from the API either way
    setTimeout(() => current && current.id === id && !TERMINAL.has(current.state) && show(id, false), 1000);
  };
}

function scoreText(score) {
  if (!score) return "Not scored.";
  let text = `Predicted: ${fmt(score.expected_comments)} comments (log2 ${score.log2_comments.toFixed(2)})`;
  if (score.interval) {
    const level = score.interval_level ? `${Math.round(score.interval_level * 100)}% ` : "";
    text += `, ${level}interval ${fmt(2 ** score.interval[0])}–${fmt(2 ** score.interval[1])}`;
  }
  if (score.percentile !== null && score.percentile !== undefined) text += `, percentile ${Math.round(score.percentile)}`;
  // the creator's calibration (popcorn predictor calibrate): shown beside, never instead
  const cal = score.extra && score.extra.calibrated;
  if (cal) text += `. Calibrated to your posts: ${fmt(cal.expected_comments)} comments (from ${cal.posts} posts)`;
  return text;
}

function refItem(ref) {
  const count = ref.comment_count === null || ref.comment_count === undefined ? "" : ` — ${fmt(ref.comment_count)} comments`;
  const label = ref.label && ref.label !== "neighbour" ? ` [${ref.label}]` : "";
  return el("li", { textContent: `${ref.title || ref.video_id}${count}${label}${ref.category ? ` (${ref.category})` : ""}` });
}

async function show(id, watchIfLive = true) {
  let view;
  try {
    view = await api(`/api/runs/${id}`);
  } catch (err) {
    $("error").textContent = `Error: ${err.message}`;
    return;
  }
  current = view;
  if (!TERMINAL.has(view.state)) {
    if (watchIfLive) watch(id);
    return;
  }
  const record = view.record || {};
  $("progress").hidden = false;
  const ran = new Set(Object.keys(record.timings || view.stages || {}));
  const failed = view.state === "done" ? null : failedStage(view);
  if (failed) ran.delete(failed);
  drawStages(view, new Set(["queued", "start"]), null, failed, ran);
  $("state").textContent = view.state === "done" ? "Done." : `Run ${view.state}.`;
  // a run that did not finish shows where it stopped, why, and what to do: no result card
  $("failure").hidden = view.state === "done";
  if (view.state !== "done") {
    $("failed-stage").textContent = failed;
    $("failure-error").textContent = view.error || `the run was ${view.state}`;
    $("failure-hint").textContent = view.hint ? `Hint: ${view.hint}` : "";
    $("result").hidden = true;
    $("another").hidden = true;
    return;
  }
  $("result").hidden = false;
  $("title").textContent = record.idea ? record.idea.title : view.query;
  const category = record.category ? `category ${record.category.name}` : "no category";
  // the seed of the idea shown: the chosen variant's (ranked first), not the run's first
  const variantsRan = (record.variants || []).filter((v) => v.idea);
  const seed = variantsRan.length ? variantsRan[0].seed : record.seed;
  const which = variantsRan.length > 1 ? ` (best of ${variantsRan.length} variants)` : "";
  $("meta").textContent = `“${view.query}” · ${view.mode} · seed ${seed ?? "?"}${which} · ${category}`;
  $("caption").textContent = (record.idea && record.idea.caption) || "";
  $("hashtags").textContent = ((record.idea && record.idea.hashtags) || []).join(" ");
  const credits = (record.artifacts || [])
    .map((a) => a.meta && a.meta.credit)
    .filter(Boolean)
    .map((c) => `${c.what}: ${c.author ? `by ${c.author} ` : ""}on ${c.source} (${c.licence_url || c.url || ""})`);
  $("credits").hidden = !credits.length;
  $("credits").textContent = credits.length ? `Stock media: ${[...new Set(credits)].join("; ")}` : "";
  $("score").textContent = scoreText(record.score);
  const hasMedia = view.state === "done" && (record.artifacts || []).some((a) => a.kind === "clip");
  $("cover").hidden = $("clip").hidden = !hasMedia;
  if (hasMedia) {
    $("cover").src = `/api/runs/${id}/files/cover.png`;
    $("clip").src = `/api/runs/${id}/files/clip.mp4`;
  }
  $("cover-prompt").textContent = record.idea ? record.idea.cover_prompt : "";
  $("video-prompt").textContent = record.idea ? record.idea.video_prompt : "";
  $("notes").replaceChildren(...(record.notes || []).map((n) => el("p", { className: "note", textContent: n })));
  const variants = record.variants || [];
  $("variants-view").replaceChildren(
    ...(variants.length
      ? variants.map((v, i) =>
          el("div", { className: i === 0 ? "card best" : "card" },
            el("strong", { textContent: `#${i + 1} · seed ${v.seed}` }),
            el("p", { textContent: v.idea ? v.idea.title : `failed: ${v.error}` }),
            el("p", { textContent: v.expected_comments ? `${fmt(v.expected_comments)} comments` : "" })))
      : [el("p", { textContent: "One variant (ask for more to rank them side by side)." })]),
  );
  const neighbours = (record.score && record.score.neighbours) || [];
  $("neighbours").replaceChildren(...(neighbours.length ? neighbours.map(refItem) : [el("li", { textContent: "none" })]));
  const refs = record.references || [];
  $("references").replaceChildren(...(refs.length ? refs.map(refItem) : [el("li", { textContent: "none (basic mode)" })]));
  $("download").hidden = view.state !== "done" || !hasMedia;
  $("download").href = `/api/runs/${id}/package`;
  $("report").href = `/api/runs/${id}/files/report.html`;
  $("another").hidden = false;
}

// -- history and compare -------------------------------------------------------------------

async function loadHistory() {
  localStorage.setItem("popcorn-history", JSON.stringify(history));
  $("search").value = history.q;
  const params = new URLSearchParams({ q: history.q, limit: PAGE, offset: history.offset });
  let data;
  try {
    data = await api(`/api/runs?${params}`);
  } catch (err) {
    $("page-info").textContent = err.message;
    return;
  }
  $("history-list").replaceChildren(
    ...data.runs.map((run) => {
      const box = el("input", { type: "checkbox", value: run.id, className: "pick", checked: picked.has(run.id) });
      box.setAttribute("aria-label", `select “${run.query}” to compare`);
      box.addEventListener("change", () => {
        if (box.checked) picked.add(run.id);
        else picked.delete(run.id);
        updateCompare();
      });
      const open = el("a", { href: `#run=${run.id}`, textContent: run.query });
      // the run opens where its progress and result are shown (the same run: scroll there)
      open.addEventListener("click", () => { if (current && current.id === run.id) reveal(); });
      return el("tr", {},
        el("td", {}, box), el("td", {}, open), el("td", { textContent: run.title || "" }),
        el("td", { className: `state-${run.state}`, textContent: run.state }),
        el("td", { textContent: run.score ? fmt(run.score.expected_comments) : "" }),
        el("td", { textContent: (run.submitted || "").replace("T", " ").replace("Z", "") }));
    }),
  );
  const last = Math.min(data.total, history.offset + data.runs.length);
  $("page-info").textContent = data.total ? `${history.offset + 1}–${last} of ${data.total}` : "no runs yet";
  $("prev").disabled = history.offset === 0;
  $("next").disabled = last >= data.total;
  updateCompare();
}

function updateCompare() {
  $("compare").disabled = picked.size !== 2;
}

$("history-form").addEventListener("submit", (event) => {
  event.preventDefault();
  history.q = $("search").value;
  history.offset = 0;
  loadHistory();
});
$("prev").addEventListener("click", () => { history.offset = Math.max(0, history.offset - PAGE); loadHistory(); });
$("next").addEventListener("click", () => { history.offset += PAGE; loadHistory(); });

$("compare").addEventListener("click", async () => {
  const ids = [...picked];
  const views = await Promise.all(ids.map((id) => api(`/api/runs/${id}`)));
  $("compare-cols").replaceChildren(
    ...views.map((view) => {
      const record = view.record || {};
      const idea = record.idea || {};
      return el("div", { className: "card" },
        el("h3", { textContent: idea.title || view.query }),
        el("p", { textContent: `“${view.query}” · ${view.mode} · seed ${record.seed ?? "?"}` }),
        view.state === "done" ? el("img", { src: `/api/runs/${view.id}/files/cover.png`, alt: `cover of ${idea.title || view.query}` }) : null,
        view.state === "done" && view.has_clip
          ? el("video", { src: `/api/runs/${view.id}/files/clip.mp4`, controls: true, loop: true, muted: true, autoplay: true, playsInline: true, ariaLabel: `clip of ${idea.title || view.query}` })
          : null,
        el("p", { textContent: scoreText(record.score) }),
        el("p", { textContent: `Cover: ${idea.cover_prompt || ""}` }),
        el("p", { textContent: `Video: ${idea.video_prompt || ""}` }));
    }),
  );
  $("compare-view").hidden = false;
  $("compare-h").focus();
});
$("compare-close").addEventListener("click", () => { $("compare-view").hidden = true; });

$("auth-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem("popcorn-token", $("token").value);
  try {
    await api("/api/session", { method: "POST" }); // sets a cookie for media and event streams
    $("auth").hidden = true;
    init();
  } catch (err) {
    $("error").textContent = `Error: ${err.message}`;
  }
});

function reveal() {
  $("progress").scrollIntoView({ block: "start" });
}

function fromHash(event) {
  const match = location.hash.match(/run=([0-9a-f]+)/);
  if (match && (!current || current.id !== match[1])) {
    show(match[1]).then(() => { if (event) reveal(); });
  }
}
window.addEventListener("hashchange", fromHash);

async function init() {
  try {
    await loadBackends();
    await loadData();
  } catch (err) {
    $("error").textContent = `Error: ${err.message}`;
  }
  await loadHistory();
  fromHash(null);
}
init();
