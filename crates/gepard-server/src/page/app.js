// The gepard Optimization page: jobs of one workspace + project on the left, the selected job
// on the right, live. Vanilla JS with no build step, served from the binary.
//
// Rules kept throughout: data only ever reaches the DOM through textContent / createElement
// (never by parsing HTML strings), every action calls an API route from the API table below, and errors are
// shown next to what caused them using the error envelope's `detail` (and field errors).
'use strict';

// Every API route this page calls, as "METHOD path-template". A server test reads this table
// and checks each entry against the router's OpenAPI document, so a renamed route fails CI.
const API = {
  user: 'GET /api/v1/user',
  workspaces: 'GET /api/v1/org/{org}/ws',
  projects: 'GET /api/v1/org/{org}/ws/{ws}/projects',
  jobs: 'GET /api/v1/org/{org}/ws/{ws}/optimization/jobs',
  submit: 'POST /api/v1/org/{org}/ws/{ws}/optimization/jobs',
  job: 'GET /api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}',
  events: 'GET /api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/events',
  candidates: 'GET /api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/candidates',
  attempts: 'GET /api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/attempts',
  preview: 'GET /api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/promotion-preview',
  promote: 'POST /api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/promote',
  cancel: 'POST /api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/cancel',
  retry: 'POST /api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/retry',
  capabilities: 'GET /api/v1/org/{org}/capabilities',
  capabilityVersions: 'GET /api/v1/org/{org}/capabilities/{name}/versions',
  capabilityVersion: 'GET /api/v1/org/{org}/capabilities/{name}/{version}',
  datasets: 'GET /api/v1/org/{org}/datasets',
  datasetVersions: 'GET /api/v1/org/{org}/datasets/{name}/versions',
};

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
const KEY_STORE = 'gepard.apiKey';
const SCOPE_STORE = 'gepard.scope';
// The job list has no stream of its own (SSE covers one job), and jobs change without this
// page: the CLI submits, workers claim and finish. A modest poll keeps the list current; the
// selected job needs none, its stream is live.
const LIST_POLL_MS = 5000;
const MAX_LOG_LINES = 2000;
// The largest page the jobs route serves.
const PAGE_SIZE = 100;

const $ = (id) => document.getElementById(id);

const state = {
  key: null,
  org: 'local',
  ws: null,
  project: null,
  jobs: [],
  page: 1, // the page of the job list shown, newest first
  total: 0, // jobs matching the status filter, as the server counts them
  scopeTotal: 0, // jobs in the scope whatever their status
  selected: null, // id of the selected job
  job: null, // the selected job, as the stream last sent it
  candidates: [],
  attempts: [], // the selected job's earlier attempts (a retry keeps what each one found)
  preview: null,
  targetPreview: null, // the preview of the target typed into the promotion form
  streamGen: 0, // bumped on every selection: an old stream loop notices and stops
  streamAbort: null,
  streaming: false, // whether the selected job's stream loop is running
  autoOpenedFor: null, // the scope whose empty list already opened the form once
  idempotencyKey: null,
  pendingJob: null, // a job named by the URL fragment, selected once its scope has loaded
  allowed: null, // scopes the key may act with, from GET /user; null (nothing greyed out) until known
  keyAccepted: false, // whether the server took the key (GET /user answered); the form needs it
};

// ---------------------------------------------------------------- HTTP

class ApiFailure extends Error {
  constructor(status, body) {
    const detail = body && typeof body.detail === 'string' ? body.detail : `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.detail = detail;
    this.errors = (body && Array.isArray(body.errors)) ? body.errors : [];
  }
}

function routeUrl(route, params) {
  const [method, template] = route.split(' ');
  const path = template.replace(/\{(\w+)\}/g, (_, name) => {
    if (params[name] === undefined || params[name] === null) throw new Error(`missing ${name}`);
    return encodeURIComponent(params[name]);
  });
  return { method, path };
}

function scopeParams(extra) {
  return Object.assign({ org: state.org, ws: state.ws }, extra || {});
}

function authHeaders() {
  return { 'X-API-Key': state.key || '' };
}

// Calls a route of the API table; resolves to the JSON body, rejects with an ApiFailure.
async function api(route, params, opts) {
  opts = opts || {};
  const { method, path } = routeUrl(route, params);
  let url = path;
  if (opts.query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(opts.query)) {
      if (v !== undefined && v !== null && v !== '') q.set(k, v);
    }
    const s = q.toString();
    if (s) url += '?' + s;
  }
  const headers = Object.assign({ Accept: 'application/json' }, authHeaders(), opts.headers || {});
  let body;
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  let resp;
  try {
    resp = await fetch(url, { method, headers, body, cache: 'no-store' });
  } catch (e) {
    throw new ApiFailure(0, { detail: 'the server is not reachable' });
  }
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
  if (!resp.ok) {
    const failure = new ApiFailure(resp.status, json);
    if (resp.status === 401) askForKey(`The server did not accept this key: ${failure.detail}`);
    throw failure;
  }
  return json;
}

// ---------------------------------------------------------------- DOM helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// Makes a clickable row reachable by keyboard: it takes focus in tab order and Enter or Space
// acts like a click, so the page works without a mouse.
function activatable(node, act) {
  node.setAttribute('tabindex', '0');
  node.addEventListener('click', act);
  node.addEventListener('keydown', (ev) => {
    // Up and down move between rows, as in any list.
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      const next = ev.key === 'ArrowDown' ? node.nextElementSibling : node.previousElementSibling;
      if (next) { ev.preventDefault(); next.focus(); }
      return;
    }
    if (ev.key !== 'Enter' && ev.key !== ' ') return;
    ev.preventDefault();
    act();
  });
}

// Tables of rows are redrawn on every refresh: a row that had the keyboard focus gets it back
// (rows are known by their data attributes), or a keyboard user is sent to the top of the
// page by each poll.
function focusedRow(body) {
  return body.contains(document.activeElement) ? JSON.stringify({ ...document.activeElement.dataset }) : null;
}

function restoreFocus(body, key) {
  if (!key) return;
  for (const row of body.children) {
    if (JSON.stringify({ ...row.dataset }) === key) { row.focus({ preventScroll: true }); return; }
  }
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function fmtScore(v) {
  return typeof v === 'number' && isFinite(v) ? v.toFixed(3) : '—';
}

function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

function ago(iso) {
  if (!iso) return 'never';
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (!isFinite(s)) return String(iso);
  if (s < 5) return 'just now';
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return fmtTime(iso);
}

function showError(node, err) {
  node.textContent = err ? (err.detail || err.message || String(err)) : '';
}

// ---------------------------------------------------------------- key

function askForKey(message) {
  stopStream();
  state.keyAccepted = false;
  // What the previous key allowed says nothing about the next one; "New job" stays clickable
  // and asks for the key (see newJob).
  state.allowed = null;
  allow($('new-job'), 'write', true);
  $('submit-panel').hidden = true;
  $('main').hidden = true;
  $('key-panel').hidden = false;
  $('key-message').textContent = message || '';
  $('key-input').focus();
}

function fragment() {
  return new URLSearchParams(location.hash.replace(/^#/, ''));
}

function setFragment(params) {
  const s = params.toString();
  history.replaceState(null, '', location.pathname + location.search + (s ? '#' + s : ''));
}

// Returns whether the fragment carried a key.
function takeKeyFromFragment() {
  const params = fragment();
  if (!params.has('key')) return false;
  localStorage.setItem(KEY_STORE, params.get('key'));
  // Out of the address bar (and so out of history and screenshots) at once; the rest of the
  // fragment (a job to open) stays.
  params.delete('key');
  setFragment(params);
  return true;
}

// The selected job and its scope live in the fragment, so a reload or a shared link opens
// the same job (a job id alone would not do: its routes are under org and workspace). Never
// the key: that is only ever read from the fragment, then removed.
function writeJobFragment() {
  const params = new URLSearchParams();
  if (state.selected) {
    params.set('job', state.selected);
    params.set('org', state.org);
    if (state.ws) params.set('ws', state.ws);
    if (state.project) params.set('project', state.project);
  }
  setFragment(params);
}

// Takes the scope and job named by the fragment: the scope goes to the selectors before they
// load, the job is selected once they have.
function takeJobFromFragment(params = fragment()) {
  if (!params.get('job')) return false;
  state.pendingJob = params.get('job');
  if (params.get('org')) $('scope-org').value = params.get('org');
  state.ws = params.get('ws') || null;
  state.project = params.get('project') || null;
  return true;
}

// A link changing only the fragment does not load the page again: a `#key=` link switches
// to that key, a `#job=` link (pasted into an open tab) opens that job.
function fragmentChanged() {
  const hadKey = takeKeyFromFragment();
  if (hadKey) state.key = localStorage.getItem(KEY_STORE);
  const params = fragment();
  const job = params.get('job');
  if (!hadKey && (!job || job === state.selected)) return;
  // Read before the reset, which writes the (then empty) selection into the fragment.
  resetSelection();
  // The link names the job to open, if any; not one remembered from an earlier address.
  state.pendingJob = null;
  if (job) takeJobFromFragment(params);
  loadScope();
}

// ---------------------------------------------------------------- scope

function saveScope() {
  localStorage.setItem(SCOPE_STORE, JSON.stringify({ org: state.org, ws: state.ws, project: state.project }));
}

function fillSelect(select, items, value, labelOf, valueOf, blank) {
  select.replaceChildren();
  if (blank !== undefined) select.append(el('option', { value: '', text: blank }));
  for (const item of items) {
    const v = valueOf(item);
    select.append(el('option', { value: v, text: labelOf(item), selected: v === value }));
  }
  if (value !== undefined && value !== null) select.value = value;
}

// Whether the key may take actions that need `needed`, as the server decided it (GET /user's
// `allowed`). The server still checks; this only spares a click that would be a 403.
function can(needed) {
  return !state.allowed || state.allowed.includes(needed);
}

// Enables a button only when the job's state allows the action and the key holds `scope`, and
// says which scope is missing when that is the reason.
function allow(button, scope, enabled) {
  const permitted = can(scope);
  button.disabled = !enabled || !permitted;
  button.title = permitted ? '' : `This API key lacks the ${scope} scope.`;
}

async function loadScope() {
  $('global-error').hidden = true;
  const saved = JSON.parse(localStorage.getItem(SCOPE_STORE) || '{}');
  state.org = $('scope-org').value.trim() || saved.org || 'local';
  $('scope-org').value = state.org;
  try {
    const me = await api(API.user, {});
    state.keyAccepted = true;
    state.allowed = Array.isArray(me.allowed) ? me.allowed : null;
    allow($('new-job'), 'write', true);
    if (!can('write')) $('submit-panel').hidden = true;
    const workspaces = await api(API.workspaces, { org: state.org });
    const wantWs = state.ws || saved.ws;
    const ws = workspaces.find((w) => w.key === wantWs) || workspaces.find((w) => w.is_default) || workspaces[0];
    state.ws = ws ? ws.key : null;
    fillSelect($('scope-ws'), workspaces, state.ws, (w) => w.name || w.key, (w) => w.key);
    await loadProjects(saved.project);
  } catch (e) {
    if (e.status === 401) return;
    // Nothing of the previous scope may stay on screen under an org that failed to load.
    clearScope();
    $('global-error').hidden = false;
    showError($('global-error'), e);
    return;
  }
  $('key-panel').hidden = true;
  $('main').hidden = false;
  saveScope();
  await refreshList();
  if (state.pendingJob) {
    const id = state.pendingJob;
    state.pendingJob = null;
    selectJob(id);
  }
}

function clearScope() {
  state.ws = null;
  state.project = null;
  state.pendingJob = null;
  resetSelection();
  state.total = 0;
  state.scopeTotal = 0;
  $('scope-ws').replaceChildren();
  $('scope-project').replaceChildren();
  $('job-rows').replaceChildren();
  $('jobs-summary').textContent = '';
  $('jobs-error').textContent = '';
  $('main').hidden = true;
  // No workspace to submit into.
  $('new-job').disabled = true;
}

async function loadProjects(wanted) {
  if (!state.ws) { state.project = null; $('scope-project').replaceChildren(); return; }
  const projects = await api(API.projects, scopeParams());
  const want = state.project || wanted;
  const p = projects.find((x) => x.key === want) || projects.find((x) => x.is_default) || projects[0];
  state.project = p ? p.key : null;
  fillSelect($('scope-project'), projects, state.project, (x) => x.name || x.key, (x) => x.key);
}

// ---------------------------------------------------------------- job list

// What the list shows: the scope, the page and the filters, as seen with the current key (a
// request in flight with a key just replaced must neither stand in for the new key's request
// nor be drawn when it returns). The server searches every job of the scope, not only the
// page shown here.
function listQuery() {
  const query = { page: state.page, page_size: PAGE_SIZE, status: $('filter-status').value,
    search: $('filter-text').value.trim(), project: state.project };
  return { query, id: `${state.key}|${state.org}/${state.ws}/${JSON.stringify(query)}` };
}

let listInFlight = null;
let listInFlightFor = null;
async function refreshList() {
  if (!state.ws || !state.key) return;
  const scopeId = `${state.org}/${state.ws}/${state.project}`;
  let q = listQuery();
  const current = () => q.id === listQuery().id;
  // Collapse overlapping refreshes (poll + stream + action) of one list into one request; one
  // for another scope, page or filter waits for it, then asks again.
  if (listInFlight) return listInFlightFor === q.id ? listInFlight : listInFlight.then(() => refreshList());
  listInFlightFor = q.id;
  listInFlight = (async () => {
    try {
      const { status, search } = q.query;
      let page = await api(API.jobs, scopeParams(), { query: q.query });
      // Jobs went away (or the filter narrowed) under a later page: show the last one there is.
      if (!(page.items || []).length && state.page > 1 && page.total > 0 && current()) {
        state.page = Math.ceil(page.total / PAGE_SIZE);
        q = listQuery();
        listInFlightFor = q.id;
        page = await api(API.jobs, scopeParams(), { query: q.query });
      }
      // An empty filter result is not an empty scope: count the scope's jobs to tell them apart.
      let scopeTotal = page.total || 0;
      if ((status || search) && scopeTotal === 0) {
        const all = await api(API.jobs, scopeParams(), { query: { page: 1, page_size: 1, project: state.project } });
        scopeTotal = all.total || 0;
      }
      // The scope changed while this was on its way: its answer is no longer what is shown.
      if (!current()) return;
      state.jobs = page.items || [];
      state.total = page.total || 0;
      state.scopeTotal = scopeTotal;
      $('jobs-error').textContent = '';
      // A finished job's stream has ended; if the job changed since (a retry from the CLI,
      // say), pick it up from the list and watch it again.
      const sel = state.jobs.find((j) => j.id === state.selected);
      if (sel && state.job && !state.streaming && sel.updated_at !== state.job.updated_at) {
        state.job = sel;
        renderJob();
        restartStreamIfNeeded();
        loadEvidence(sel.id);
      }
      renderList();
      if (scopeTotal === 0 && can('write') && state.autoOpenedFor !== scopeId) {
        state.autoOpenedFor = scopeId;
        openSubmitForm();
      }
    } catch (e) {
      if (current()) showError($('jobs-error'), e);
    } finally {
      listInFlight = null;
    }
  })();
  return listInFlight;
}

function jobName(job) {
  return job.name || job.run_ref || job.id.slice(0, 8);
}

function capabilityLabel(job) {
  const c = job.capability || {};
  return c.name ? `${c.name}@${c.version}` : '—';
}

function renderList() {
  const text = $('filter-text').value.trim().toLowerCase();
  const rows = $('job-rows');
  const focused = focusedRow(rows);
  rows.replaceChildren();
  let shown = 0;
  for (const job of state.jobs) {
    // The same fields the server's `search` looks at, so typing narrows the list at once and
    // the server's answer (debounced) agrees with it.
    const hay = [job.id, jobName(job), capabilityLabel(job), job.model, ...(job.tags || [])].join(' ').toLowerCase();
    if (text && !hay.includes(text)) continue;
    shown++;
    const tr = el('tr', { 'data-id': job.id, class: job.id === state.selected ? 'selected' : null,
      'aria-current': job.id === state.selected ? 'true' : null },
      el('td', {}, el('span', { class: `status ${job.status}`, text: job.status })),
      el('td', { class: 'col-name', text: jobName(job), title: job.id }),
      el('td', { class: 'col-cap', text: capabilityLabel(job) }),
      el('td', { class: 'num', text: fmtScore(job.summary && job.summary.best_score) }),
      el('td', { class: 'small col-created', text: fmtTime(job.created_at) }));
    activatable(tr, () => { selectJob(job.id); revealDetail(); });
    rows.append(tr);
  }
  restoreFocus(rows, focused);
  const all = Math.max(state.total, state.jobs.length);
  const status = $('filter-status').value;
  const from = (state.page - 1) * PAGE_SIZE + 1;
  const to = from + state.jobs.length - 1;
  const paged = state.page > 1 || all > state.jobs.length;
  const label = `${status ? status + ' ' : ''}job${all === 1 ? '' : 's'}`;
  const range = paged ? `${label} ${from}–${to} of ${all}` : `${all} ${label}`;
  let summary;
  if (state.scopeTotal === 0 && all === 0) summary = 'No jobs in this scope yet.';
  else if ((all === 0 || shown === 0) && text) summary = `No${status ? ' ' + status : ''} jobs match “${text}” (${state.scopeTotal} in this scope).`;
  else if (all === 0) summary = `No ${status} jobs (${state.scopeTotal} in this scope).`;
  else if (shown < state.jobs.length) summary = `${shown} shown of ${range}.`;
  else summary = `${range.charAt(0).toUpperCase()}${range.slice(1)}.`;
  $('jobs-summary').textContent = summary;
  $('pager').hidden = !paged;
  $('page-newer').disabled = state.page <= 1;
  $('page-older').disabled = state.page * PAGE_SIZE >= all;
}

function turnPage(delta) {
  state.page = Math.max(1, state.page + delta);
  $('jobs-pane').scrollTop = 0;
  refreshList();
}

// ---------------------------------------------------------------- selected job

function stopStream() {
  state.streamGen++;
  state.streaming = false;
  if (state.streamAbort) state.streamAbort.abort();
  state.streamAbort = null;
}

function jobUnavailable(detail) {
  $('detail-body').hidden = true;
  $('detail-empty').hidden = false;
  $('detail-empty').textContent = `This job cannot be shown: ${detail}. Select a job on the left.`;
}

function selectJob(id) {
  stopStream();
  state.selected = id;
  state.job = null;
  state.candidates = [];
  state.attempts = [];
  state.preview = null;
  state.targetPreview = null;
  $('detail-empty').hidden = true;
  $('detail-body').hidden = false;
  $('d-logs').replaceChildren();
  $('d-notice').textContent = '';
  $('cancel-confirm').hidden = true;
  $('retry-confirm').hidden = true;
  $('d-candidate-text').hidden = true;
  $('d-attempt-text').hidden = true;
  $('d-attempts-box').hidden = true;
  $('promote-form').hidden = true;
  $('promote-name').value = '';
  $('promote-version').value = '';
  $('act-error').textContent = '';
  for (const tr of $('job-rows').children) tr.classList.toggle('selected', tr.dataset.id === id);
  writeJobFragment();
  // A new job's detail starts at its head, not where the previous one was scrolled to.
  $('detail').scrollTop = 0;
  const cached = state.jobs.find((j) => j.id === id);
  if (cached) { state.job = cached; renderJob(); }
  streamJob(id, state.streamGen);
  loadEvidence(id);
}

// On a narrow screen the detail sits below the list, often below the fold: bring it up, or a
// tap on a row seems to do nothing. (Beside the list it is always in view.)
function revealDetail() {
  const top = $('detail').getBoundingClientRect().top;
  if (top < 0 || top > window.innerHeight / 2) $('detail').scrollIntoView({ block: 'start' });
}

// Candidates and the promotion preview are not in the stream; they are re-read when the job
// changes in a way that can change them (throttled, a run reports many events a second).
let evidenceTimer = null;
let evidenceKey = null;
function evidenceMaybeChanged(job) {
  const key = [job.status, job.attempt, job.summary && job.summary.best_score,
    job.summary && job.summary.frontier_size, job.usage && job.usage.metric_calls].join('|');
  if (key === evidenceKey) return;
  evidenceKey = key;
  if (evidenceTimer) return;
  evidenceTimer = setTimeout(() => { evidenceTimer = null; if (state.selected) loadEvidence(state.selected); }, 1500);
}

// The target typed into the open promotion form, if any: the preview then shows what that
// promotion would write. The default target's preview still decides whether Promote is on.
function promoteTarget() {
  if ($('promote-form').hidden) return null;
  const target = { name: $('promote-name').value.trim(), version: $('promote-version').value.trim() };
  return target.name || target.version ? target : null;
}

let targetPreviewGen = 0;
async function refreshTargetPreview() {
  // Only the newest request's answer is shown: typing sends one per pause, and an older,
  // slower answer must not replace it.
  const gen = ++targetPreviewGen;
  const id = state.selected;
  const target = promoteTarget();
  let preview = null;
  if (id && target) {
    try {
      preview = await api(API.preview, scopeParams({ id }), { query: target });
    } catch (e) {
      preview = { error: e };
    }
  }
  if (gen !== targetPreviewGen || state.selected !== id) return;
  state.targetPreview = preview;
  renderPreview();
}

async function loadEvidence(id) {
  const params = scopeParams({ id });
  const [cands, preview, attempts] = await Promise.allSettled([api(API.candidates, params), api(API.preview, params),
    api(API.attempts, params)]);
  if (state.selected !== id) return;
  state.candidates = cands.status === 'fulfilled' ? (cands.value.items || []) : [];
  state.preview = preview.status === 'fulfilled' ? preview.value : { error: preview.reason };
  state.attempts = attempts.status === 'fulfilled' && Array.isArray(attempts.value) ? attempts.value : [];
  renderCandidates();
  renderAttempts();
  renderActions();
  await refreshTargetPreview();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Reads `GET …/events` with fetch, because the browser's own SSE client cannot send the
// key header. Parses
// the SSE lines itself, and on a dropped stream reconnects with Last-Event-ID (the server
// resumes after that log entry) until the job is terminal or another job is selected.
async function streamJob(id, gen) {
  state.streaming = true;
  try {
    await streamLoop(id, gen);
  } finally {
    if (gen === state.streamGen) state.streaming = false;
  }
}

async function streamLoop(id, gen) {
  let lastId = null;
  let backoff = 500;
  while (gen === state.streamGen) {
    const ctrl = new AbortController();
    state.streamAbort = ctrl;
    const headers = Object.assign({ Accept: 'text/event-stream' }, authHeaders());
    if (lastId !== null) headers['Last-Event-ID'] = lastId;
    const { path } = routeUrl(API.events, scopeParams({ id }));
    let ended = false;
    try {
      const resp = await fetch(path, { headers, signal: ctrl.signal, cache: 'no-store' });
      if (!resp.ok) {
        let body = null;
        try { body = await resp.json(); } catch (e) { body = null; }
        const failure = new ApiFailure(resp.status, body);
        if (resp.status === 401) { askForKey(`The server did not accept this key: ${failure.detail}`); return; }
        if (resp.status === 404 || resp.status === 422) {
          // A link to a job that is not there (or not this key's to see): say so in place of
          // the detail, not as an empty detail with a note in small print.
          if (!state.job && state.selected === id) jobUnavailable(failure.detail);
          else setLive(`stream: ${failure.detail}`);
          return;
        }
        throw failure;
      }
      setLive('live');
      backoff = 500;
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      let ev = { type: 'message', data: [], id: null };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === '') {
            if (ev.id !== null) lastId = ev.id;
            if (ev.data.length && gen === state.streamGen) onStreamEvent(ev.type, ev.data.join('\n'));
            ev = { type: 'message', data: [], id: null };
            continue;
          }
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let v = colon < 0 ? '' : line.slice(colon + 1);
          if (v.startsWith(' ')) v = v.slice(1);
          if (field === 'event') ev.type = v;
          else if (field === 'data') ev.data.push(v);
          else if (field === 'id') ev.id = v;
        }
      }
      ended = true;
    } catch (e) {
      if (ctrl.signal.aborted || gen !== state.streamGen) return;
      setLive(`reconnecting (${e.detail || e.message})`);
    }
    if (gen !== state.streamGen) return;
    if (state.job && state.job.id === id && TERMINAL.has(state.job.status)) {
      setLive('finished');
      return;
    }
    if (ended) setLive('reconnecting');
    await sleep(backoff);
    backoff = Math.min(backoff * 2, 10000);
  }
}

function setLive(text) {
  $('d-live').textContent = text;
}

function onStreamEvent(type, data) {
  if (type === 'heartbeat') return;
  let payload;
  try { payload = JSON.parse(data); } catch (e) { return; }
  if (type === 'snapshot' || type === 'job') {
    const before = state.job && state.job.id === payload.id ? state.job.status : undefined;
    state.job = payload;
    // Keep the list row in step; a status change may move the job in or out of a filter.
    const i = state.jobs.findIndex((j) => j.id === payload.id);
    if (i >= 0) state.jobs[i] = payload;
    renderList();
    if (before !== payload.status) refreshList();
    renderJob();
    evidenceMaybeChanged(payload);
  } else if (type === 'log') {
    appendLog(payload);
  }
}

// The server logs at submission when the budget pays for the seed evaluation but no
// iteration; that sentence is worth more than a line in the log box.
function isBudgetWarning(message) {
  return typeof message === 'string' && message.startsWith('max_metric_calls ') && message.includes('but no iteration');
}

function appendLog(entry) {
  const box = $('d-logs');
  const e = entry.entry || entry;
  if (isBudgetWarning(e.message)) $('d-notice').textContent = e.message;
  const line = el('div', { class: `lvl-${e.level || 'info'}` },
    `${fmtTime(e.timestamp)}  ${(e.level || 'info').toUpperCase().padEnd(7)} ${e.message || ''}`);
  // Follow only while the reader is at the end: someone who scrolled up to read an earlier
  // line is not pulled back down by the next one.
  const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
  box.append(line);
  while (box.childElementCount > MAX_LOG_LINES) box.firstElementChild.remove();
  if ($('follow-logs').checked && atEnd) box.scrollTop = box.scrollHeight;
}

function renderJob() {
  const job = state.job;
  if (!job) return;
  $('d-name').textContent = jobName(job);
  const st = $('d-status');
  st.textContent = job.status + (job.cancel_requested_at && !TERMINAL.has(job.status) ? ' (cancel requested)' : '');
  st.className = `status ${job.status}`;
  $('d-meta').textContent = [
    `id ${job.id}`, `attempt ${job.attempt}`, `model ${job.model}`, capabilityLabel(job),
    `agent ${job.agent_name || '—'}`,
    `dataset ${job.dataset_ref ? job.dataset_ref.name + '@' + job.dataset_ref.version : '—'}`,
    `validation ${job.val_dataset_ref ? job.val_dataset_ref.name + '@' + job.val_dataset_ref.version : '(training set)'}`,
    `recipe ${job.reward_recipe ? job.reward_recipe.name : '—'}`,
    `last event ${ago(job.last_event_at)}`,
  ].join(' · ');
  $('d-error').textContent = job.error ? `Error: ${job.error}` : '';
  renderStats(job);
  renderSparks(job);
  renderTrainVal(job);
  renderActions();
}

function card(label, value, extra) {
  return el('div', { class: 'card' }, el('div', { class: 'label', text: label }),
    el('div', { class: 'value', text: value }), extra || null);
}

function renderStats(job) {
  const s = job.summary || {};
  const u = job.usage || {};
  const max = job.config && job.config.max_metric_calls;
  // Sizes are reported by the run: a job that never started has none yet (not zero).
  const size = (v) => (job.started_at ? (v ?? '—') : '—');
  // The budget series and the usage are two reports of one count: show the later.
  const series = (job.metrics && job.metrics.metric_calls_used) || [];
  const counted = series.length ? series[series.length - 1].value : 0;
  const used = Math.max(u.metric_calls || 0, counted || 0);
  $('d-stats').replaceChildren(
    card('status', job.status),
    card('last event', ago(job.last_event_at)),
    card('best score', fmtScore(s.best_score)),
    card('seed score', fmtScore(s.seed_score)),
    card('frontier size', size(s.frontier_size)),
    card('train size', size(s.train_size)),
    card('validation size', size(s.val_size)),
    card('metric calls', max ? `${used} / ${max}` : String(used)),
  );
}

function series(job, name) {
  return ((job.metrics || {})[name] || []).filter((p) => typeof p.value === 'number' && isFinite(p.value));
}

// A sparkline of one series as inline SVG; x is the point's position, y its value.
function sparkline(points) {
  const W = 160, H = 40, pad = 3;
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' });
  if (points.length === 0) return s;
  const vals = points.map((p) => p.value);
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (hi === lo) { hi += 1; lo -= 1; }
  const x = (i) => points.length === 1 ? W / 2 : pad + (i * (W - 2 * pad)) / (points.length - 1);
  const y = (v) => H - pad - ((v - lo) * (H - 2 * pad)) / (hi - lo);
  s.append(svg('polyline', { class: 'spark-line', points: vals.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ') }));
  s.append(svg('circle', { class: 'spark-dot', cx: x(vals.length - 1), cy: y(vals[vals.length - 1]), r: 2.5 }));
  return s;
}

function renderSparks(job) {
  const cards = [
    ['val score', 'val_score', fmtScore],
    ['best score', 'best_score', fmtScore],
    ['frontier size', 'frontier_size', (v) => String(v)],
    ['metric calls used', 'metric_calls_used', (v) => String(v)],
  ].map(([label, name, fmt]) => {
    const pts = series(job, name);
    const last = pts.length ? fmt(pts[pts.length - 1].value) : '—';
    const c = card(label, last, sparkline(pts));
    c.dataset.metric = name;
    c.title = `${pts.length} point${pts.length === 1 ? '' : 's'}`;
    return c;
  });
  $('d-sparks').replaceChildren(...cards);
}

// Training behaviour is what GEPA sees on its minibatches (accepted and rejected children's
// scores); validation is the full-valset score of each accepted candidate. Far apart means
// the run is learning the minibatches more than the task.
function renderTrainVal(job) {
  const acc = series(job, 'accepted_score');
  const rej = series(job, 'rejected_score');
  const val = series(job, 'val_score');
  const box = $('d-trainval');
  box.replaceChildren();
  if (!acc.length && !rej.length && !val.length) {
    box.append(el('p', { class: 'muted', text: 'No scores reported yet.' }));
    return;
  }
  // Drawn at the box's own width (up to 720): a fixed 720-wide drawing squeezed onto a phone
  // shrinks its labels to a few pixels.
  const W = Math.max(280, Math.min(720, Math.round(box.clientWidth) || 720)), H = 180, L = 34, R = 8, T = 8, B = 20;
  const all = [...acc, ...rej, ...val];
  const steps = all.map((p) => p.step ?? 0);
  const s0 = Math.min(...steps), s1 = Math.max(...steps) === s0 ? s0 + 1 : Math.max(...steps);
  const x = (st) => L + ((st - s0) * (W - L - R)) / (s1 - s0);
  const y = (v) => T + (1 - Math.max(0, Math.min(1, v))) * (H - T - B);
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' });
  for (const v of [0, 0.5, 1]) {
    chart.append(svg('line', { class: 'tv-axis', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    const t = svg('text', { class: 'tv-label', x: 2, y: y(v) + 4 });
    t.textContent = v.toFixed(1);
    chart.append(t);
  }
  const t = svg('text', { class: 'tv-label', x: L, y: H - 4 });
  t.textContent = `step ${s0} … ${s1}`;
  chart.append(t);
  if (val.length) {
    chart.append(svg('polyline', { class: 'tv-val', points: val.map((p) => `${x(p.step ?? 0).toFixed(1)},${y(p.value).toFixed(1)}`).join(' ') }));
  }
  for (const p of rej) chart.append(svg('circle', { class: 'tv-rejected', cx: x(p.step ?? 0), cy: y(p.value), r: 3 }));
  for (const p of acc) chart.append(svg('circle', { class: 'tv-accepted', cx: x(p.step ?? 0), cy: y(p.value), r: 3.5 }));
  const mean = (ps) => ps.length ? ps.reduce((a, p) => a + p.value, 0) / ps.length : null;
  const s = job.summary || {};
  box.append(chart,
    el('div', { class: 'legend' },
      el('span', {}, el('span', { class: 'swatch val' }), 'validation score'),
      el('span', {}, el('span', { class: 'swatch acc' }), `training minibatch, accepted (${acc.length})`),
      el('span', {}, el('span', { class: 'swatch rej' }), `training minibatch, rejected (${rej.length})`)),
    el('p', { class: 'small muted', text:
      `Training: ${acc.length} of ${acc.length + rej.length} proposals accepted, mean accepted minibatch score ${fmtScore(mean(acc))} ` +
      `on ${s.train_size ?? '?'} training rows. Validation: seed ${fmtScore(s.seed_score)} → best ${fmtScore(s.best_score)} on ${s.val_size ?? '?'} rows.` }));
}

function renderCandidates() {
  const body = $('d-candidates');
  const focused = focusedRow(body);
  body.replaceChildren();
  const bestIdx = state.preview && state.preview.candidate_index;
  for (const c of state.candidates) {
    const parents = Array.isArray(c.parents) && c.parents.length ? c.parents.map((p) => `#${p}`).join(', ') : 'seed';
    const tr = el('tr', { class: [c.on_frontier ? 'frontier' : '', c.index === bestIdx ? 'best' : ''].join(' ').trim() || null, 'data-index': c.index },
      el('td', { class: 'num', text: `#${c.index}` }),
      el('td', { text: c.index === 0 && parents === 'seed' ? '(seed)' : `← ${parents}` }),
      el('td', { class: 'num', text: fmtScore(c.val_score) }),
      el('td', { text: c.on_frontier ? '◆ frontier' : '' }),
      el('td', { class: 'num', text: c.discovered_at_metric_calls ?? '—' }),
      el('td', { class: 'num', text: c.iteration ?? '—' }));
    activatable(tr, () => {
      const pre = $('d-candidate-text');
      pre.hidden = false;
      pre.textContent = `Candidate #${c.index} instructions:\n\n${c.instructions || ''}`;
    });
    body.append(tr);
  }
  if (!state.candidates.length) body.append(el('tr', {}, el('td', { colspan: 6, class: 'muted', text: 'No candidates yet.' })));
  restoreFocus(body, focused);
}

// A summary's best candidate is `{"instructions": …}` for gepard's runs; other runtimes may
// report another shape, shown as JSON rather than dropped.
function bestInstructions(summary) {
  const best = summary && summary.best_candidate;
  if (best === null || best === undefined) return null;
  if (typeof best === 'string') return best;
  if (typeof best.instructions === 'string') return best.instructions;
  return JSON.stringify(best, null, 2);
}

function renderAttempts() {
  const body = $('d-attempts');
  const focused = focusedRow(body);
  body.replaceChildren();
  $('d-attempts-box').hidden = state.attempts.length === 0;
  // Newest first, like the job list: the attempt just retried is the one most often looked at.
  for (const a of [...state.attempts].reverse()) {
    const s = a.summary || {};
    const tr = el('tr', { 'data-attempt': a.attempt },
      el('td', { class: 'num', text: `#${a.attempt}` }),
      el('td', {}, el('span', { class: `status ${a.status}`, text: a.status })),
      el('td', { class: 'num', text: fmtScore(s.best_score) }),
      el('td', { class: 'num', text: (a.usage && a.usage.metric_calls) ?? '—' }),
      el('td', { class: 'small', text: fmtTime(a.completed_at) }),
      el('td', { class: 'small', text: a.error || '' }));
    activatable(tr, () => {
      const pre = $('d-attempt-text');
      const text = bestInstructions(s);
      pre.hidden = false;
      pre.textContent = text === null
        ? `Attempt ${a.attempt} found no best candidate.`
        : `Attempt ${a.attempt} best instructions (validation ${fmtScore(s.best_score)}):\n\n${text}`;
    });
    body.append(tr);
  }
  restoreFocus(body, focused);
}

function renderPreview() {
  const box = $('d-preview');
  box.replaceChildren();
  const p = (!$('promote-form').hidden && state.targetPreview) || state.preview;
  if (!p) return;
  if (p.error) { box.append(el('p', { class: 'error', text: p.error.detail || String(p.error) })); return; }
  const src = p.source || {};
  const tgt = p.target || {};
  box.append(el('p', { text:
    `${src.name}@${src.version} (agent ${src.agent_name}) → ${tgt.name}@${tgt.version} · seed ${fmtScore(p.seed_score)} → best ${fmtScore(p.best_score)}` }));
  if (!p.promotable && p.reasons && p.reasons.length) {
    const ul = el('ul', { class: 'muted small' });
    for (const r of p.reasons) ul.append(el('li', { text: r }));
    box.append(el('p', { class: 'small', text: 'Not promotable now:' }), ul);
  }
  if (p.diff) {
    const diff = el('div', { class: 'diff mono', 'aria-label': 'source vs optimized instructions' });
    for (const line of p.diff.split('\n')) {
      let cls = null;
      if (line.startsWith('+++') || line.startsWith('---')) cls = 'meta';
      else if (line.startsWith('@@')) cls = 'hunk';
      else if (line.startsWith('+')) cls = 'add';
      else if (line.startsWith('-')) cls = 'del';
      diff.append(el('div', { class: cls, text: line || ' ' }));
    }
    box.append(diff);
  } else if (p.optimized_instructions) {
    box.append(el('p', { class: 'muted small', text: 'The optimized instructions equal the source.' }));
  }
}

function renderActions() {
  const job = state.job;
  const status = job ? job.status : null;
  $('act-refresh').disabled = !job;
  allow($('act-cancel'), 'write', !!job && !TERMINAL.has(status) && !job.cancel_requested_at);
  if ($('act-cancel').disabled) $('cancel-confirm').hidden = true;
  allow($('act-retry'), 'write', !!job && TERMINAL.has(status));
  if ($('act-retry').disabled) $('retry-confirm').hidden = true;
  allow($('act-promote'), 'promote', !!(state.preview && state.preview.promotable));
  if ($('act-promote').disabled) $('promote-form').hidden = true;
}

async function runAction(button, fn) {
  $('act-error').textContent = '';
  button.disabled = true;
  try {
    await fn();
  } catch (e) {
    showError($('act-error'), e);
  } finally {
    renderActions();
  }
}

async function refreshSelected() {
  if (!state.selected) return;
  const job = await api(API.job, scopeParams({ id: state.selected }));
  state.job = job;
  renderJob();
  await Promise.all([refreshList(), loadEvidence(job.id)]);
}

function restartStreamIfNeeded() {
  // Retry turns a finished job (whose stream has ended) into a queued one: watch it again.
  if (state.selected) {
    const id = state.selected;
    stopStream();
    $('d-logs').replaceChildren();
    $('d-notice').textContent = '';
    streamJob(id, state.streamGen);
  }
}

// ---------------------------------------------------------------- promotion

async function promote(ev) {
  ev.preventDefault();
  $('promote-error').textContent = '';
  const body = {};
  const name = $('promote-name').value.trim();
  const version = $('promote-version').value.trim();
  if (name) body.name = name;
  if (version) body.version = version;
  $('promote-submit').disabled = true;
  try {
    const written = await api(API.promote, scopeParams({ id: state.selected }), { body });
    $('promote-form').hidden = true;
    $('promote-name').value = '';
    $('promote-version').value = '';
    $('act-error').textContent = '';
    await loadEvidence(state.selected);
    $('d-preview').prepend(el('p', { class: 'ok', text: `Promoted: wrote ${written.name}@${written.version}.` }));
  } catch (e) {
    // The detail repeats the first field error: with field errors, list them instead, one a line.
    const errors = e.errors || [];
    if (!errors.length) showError($('promote-error'), e);
    else $('promote-error').replaceChildren(...errors.map((fe) => el('div', { text: `${(fe.loc || []).join('.')}: ${fe.msg}` })));
  } finally {
    $('promote-submit').disabled = false;
  }
}

// ---------------------------------------------------------------- submission form

const F = () => $('submit-form').elements;

// Without a key the server takes, the form could only say who it cannot reach ("workspace
// local / null", "the API key is unknown or revoked"): ask for the key instead.
function newJob() {
  if (!state.key || !state.keyAccepted) {
    askForKey('A job needs an API key: enter one here, then "New job" again.');
    return;
  }
  openSubmitForm();
}

async function openSubmitForm() {
  $('submit-panel').hidden = false;
  $('submit-scope').textContent = `${state.org} / ${state.ws} / ${state.project || 'default project'}`;
  $('submit-error').textContent = '';
  clearFieldErrors();
  // One idempotency key per opening: a double submit returns the same job, not two.
  state.idempotencyKey = (crypto.randomUUID && crypto.randomUUID()) || String(Date.now()) + Math.random();
  try {
    const [caps, sets] = await Promise.all([
      api(API.capabilities, { org: state.org }, { query: { page_size: 100 } }),
      api(API.datasets, { org: state.org }, { query: { page_size: 100 } }),
    ]);
    const f = F();
    // On the first opening, propose a training set and a validation set by their names when
    // there are such; afterwards keep what the person chose.
    const first = f.dataset.options.length === 0;
    const named = (part) => { const d = (sets.items || []).find((x) => x.name.includes(part)); return d ? d.name : undefined; };
    const trainPick = first ? named('train') : f.dataset.value || undefined;
    const valPick = first ? (named('val') || '') : f.val_dataset.value || '';
    fillSelect(f.capability, caps.items || [], f.capability.value || undefined, (a) => a.name, (a) => a.name);
    fillSelect(f.dataset, sets.items || [], trainPick, (a) => a.name, (a) => a.name);
    fillSelect(f.val_dataset, sets.items || [], valPick, (a) => a.name, (a) => a.name, '— none: use the training set —');
    if (!(caps.items || []).length) $('submit-error').textContent = 'This organization has no capabilities yet: publish one with `gepard capability push DIR`.';
    else if (!(sets.items || []).length) $('submit-error').textContent = 'This organization has no datasets yet: publish one with `gepard dataset push DIR`.';
    await Promise.all([capabilityChanged(), datasetChanged('dataset', 'dataset_version'), datasetChanged('val_dataset', 'val_dataset_version')]);
  } catch (e) {
    showError($('submit-error'), e);
  }
}

async function versionsOf(route, name) {
  if (!name) return [];
  const page = await api(route, { org: state.org, name }, { query: { page_size: 100 } });
  return page.items || page || [];
}

async function capabilityChanged() {
  const f = F();
  const versions = await versionsOf(API.capabilityVersions, f.capability.value);
  fillSelect(f.capability_version, versions, versions.length ? versions[0].version : undefined, (v) => v.version, (v) => v.version);
  await capabilityVersionChanged();
}

async function capabilityVersionChanged() {
  const f = F();
  if (!f.capability.value || !f.capability_version.value) { f.agent.replaceChildren(); return; }
  const detail = await api(API.capabilityVersion, { org: state.org, name: f.capability.value, version: f.capability_version.value });
  fillSelect(f.agent, detail.agents || [], undefined, (a) => a.name, (a) => a.name);
}

async function datasetChanged(nameField, versionField) {
  const f = F();
  const versions = await versionsOf(API.datasetVersions, f[nameField].value);
  fillSelect(f[versionField], versions, versions.length ? versions[0].version : undefined, (v) => v.version, (v) => v.version);
}

function clearFieldErrors() {
  for (const n of $('submit-form').querySelectorAll('.field-error')) n.remove();
  for (const n of $('submit-form').querySelectorAll('[aria-invalid]')) n.removeAttribute('aria-invalid');
}

function markField(input, msg) {
  input.setAttribute('aria-invalid', 'true');
  input.parentElement.append(el('span', { class: 'field-error', text: msg }));
}

// The input an error's loc points at: loc is like ["body", "config", "max_metric_calls"],
// inputs carry data-loc="config.max_metric_calls". A loc may be deeper than the form
// (reward_recipe.params.needle → the params box) or shallower: ["body", "dataset_ref"] (a row
// of that dataset) belongs to the dataset's first input, its name.
function fieldFor(loc) {
  const path = (loc || []).filter((p) => p !== 'body').join('.');
  if (!path) return null;
  const inputs = [...$('submit-form').querySelectorAll('[data-loc]')];
  let best = null;
  for (const input of inputs) {
    const at = input.dataset.loc;
    if ((path === at || path.startsWith(at + '.')) && (!best || at.length > best.dataset.loc.length)) best = input;
  }
  return best || inputs.find((input) => input.dataset.loc.startsWith(path + '.')) || null;
}

function fieldError(loc, msg) {
  const input = fieldFor(loc);
  if (input) markField(input, msg);
  return !!input;
}

function formBody() {
  const f = F();
  const optional = (v) => { const t = v.trim(); return t === '' ? null : t; };
  const number = (input) => { const t = input.value.trim(); return t === '' ? null : Number(t); };
  let params;
  try {
    params = JSON.parse(f.recipe_params.value.trim() || '{}');
  } catch (e) {
    return { invalid: ['reward_recipe', 'params'], msg: 'must be a JSON object' };
  }
  return {
    body: {
      backend: 'gepa',
      target_kind: 'capability_agent',
      model: f.model.value.trim(),
      name: optional(f.name.value),
      project: state.project,
      run_ref: optional(f.run_ref.value),
      capability_ref: { name: f.capability.value, version: f.capability_version.value },
      agent_name: optional(f.agent.value),
      dataset_ref: { name: f.dataset.value, version: f.dataset_version.value },
      val_dataset_ref: f.val_dataset.value ? { name: f.val_dataset.value, version: f.val_dataset_version.value } : null,
      reward_recipe: { name: f.recipe.value, params },
      components: ['instructions'],
      objective: optional(f.objective.value),
      tags: f.tags.value.split(',').map((t) => t.trim()).filter(Boolean),
      config: {
        seed: number(f.seed),
        max_metric_calls: number(f.max_metric_calls),
        reflection_lm: optional(f.reflection_lm.value),
      },
    },
  };
}

async function submitJob(ev) {
  ev.preventDefault();
  clearFieldErrors();
  $('submit-error').textContent = '';
  // Said here, before a round trip: the server would only answer that the field is missing.
  const missing = [...$('submit-form').querySelectorAll('[required]')].filter((n) => !n.value.trim());
  for (const input of missing) markField(input, 'required');
  if (missing.length) { missing[0].focus(); return; }
  const built = formBody();
  if (built.invalid) { fieldError(built.invalid, built.msg); return; }
  $('submit-go').disabled = true;
  try {
    const job = await api(API.submit, scopeParams(), { body: built.body, headers: { 'Idempotency-Key': state.idempotencyKey } });
    $('submit-panel').hidden = true;
    await refreshList();
    selectJob(job.id);
  } catch (e) {
    // Each field error once: beside its input, or listed here one a line when the form has no
    // input for it. The envelope's detail only repeats the first, so it stands alone only
    // when there are no field errors.
    const errors = e.errors || [];
    if (!errors.length) { showError($('submit-error'), e); return; }
    const unplaced = errors.filter((fe) => !fieldError(fe.loc, fe.msg));
    const placed = errors.length - unplaced.length;
    $('submit-error').textContent = unplaced.length
      ? `The server refused the job${placed ? ' (see also the marked fields)' : ''}:`
      : 'The server refused the job: see the marked fields.';
    for (const fe of unplaced) $('submit-error').append(el('div', { text: `${(fe.loc || []).join('.')}: ${fe.msg}` }));
    const first = $('submit-form').querySelector('[aria-invalid="true"]');
    if (first) first.focus();
  } finally {
    $('submit-go').disabled = false;
  }
}

// ---------------------------------------------------------------- wiring

function wire() {
  $('key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const key = $('key-input').value.trim();
    if (!key) return;
    localStorage.setItem(KEY_STORE, key);
    state.key = key;
    $('key-input').value = '';
    loadScope();
  });
  $('forget-key').addEventListener('click', () => {
    localStorage.removeItem(KEY_STORE);
    state.key = null;
    askForKey('Enter the API key to use.');
  });
  $('scope').addEventListener('submit', (ev) => ev.preventDefault());
  window.addEventListener('hashchange', fragmentChanged);
  $('scope-org').addEventListener('change', () => { state.ws = null; state.project = null; resetSelection(); loadScope(); });
  $('scope-ws').addEventListener('change', async () => {
    state.ws = $('scope-ws').value; state.project = null; resetSelection();
    try { await loadProjects(); saveScope(); await refreshList(); } catch (e) { showError($('jobs-error'), e); }
  });
  $('scope-project').addEventListener('change', () => { state.project = $('scope-project').value; resetSelection(); saveScope(); refreshList(); });
  // A new filter starts from its newest jobs: the page shown was a page of another list.
  $('filter-status').addEventListener('change', () => { state.page = 1; refreshList(); });
  let searchTimer = null;
  $('filter-text').addEventListener('input', () => {
    renderList();
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { state.page = 1; refreshList(); }, 300);
  });
  $('page-newer').addEventListener('click', () => turnPage(-1));
  $('page-older').addEventListener('click', () => turnPage(1));
  $('filters').addEventListener('submit', (ev) => ev.preventDefault());
  $('new-job').addEventListener('click', newJob);
  $('submit-close').addEventListener('click', () => { $('submit-panel').hidden = true; });
  document.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Escape' || $('submit-panel').hidden) return;
    $('submit-panel').hidden = true;
    $('new-job').focus();
  });
  $('submit-form').addEventListener('submit', submitJob);
  const f = F();
  const guard = (p) => p.catch((e) => showError($('submit-error'), e));
  f.capability.addEventListener('change', () => guard(capabilityChanged()));
  f.capability_version.addEventListener('change', () => guard(capabilityVersionChanged()));
  f.dataset.addEventListener('change', () => guard(datasetChanged('dataset', 'dataset_version')));
  f.val_dataset.addEventListener('change', () => guard(datasetChanged('val_dataset', 'val_dataset_version')));

  $('act-refresh').addEventListener('click', (ev) => runAction(ev.target, refreshSelected));
  $('follow-logs').addEventListener('change', () => {
    if ($('follow-logs').checked) $('d-logs').scrollTop = $('d-logs').scrollHeight;
  });
  // Cancel asks first, as the CLI does without --yes; inline, the page shows no dialogs.
  $('act-cancel').addEventListener('click', () => { $('act-error').textContent = ''; $('cancel-confirm').hidden = false; $('cancel-yes').focus(); });
  // A confirmation's buttons disappear with it: the focus goes back to the action's button.
  $('cancel-no').addEventListener('click', () => { $('cancel-confirm').hidden = true; $('act-cancel').focus(); });
  $('cancel-yes').addEventListener('click', () => {
    $('cancel-confirm').hidden = true;
    $('act-cancel').focus();
    runAction($('act-cancel'), async () => {
      state.job = await api(API.cancel, scopeParams({ id: state.selected }));
      renderJob();
      await refreshList();
    });
  });
  // Retry asks first too: it starts the run over (the earlier attempt stays listed).
  $('act-retry').addEventListener('click', () => { $('act-error').textContent = ''; $('retry-confirm').hidden = false; $('retry-yes').focus(); });
  $('retry-no').addEventListener('click', () => { $('retry-confirm').hidden = true; $('act-retry').focus(); });
  $('retry-yes').addEventListener('click', () => {
    $('retry-confirm').hidden = true;
    $('act-retry').focus();
    runAction($('act-retry'), async () => {
      state.job = await api(API.retry, scopeParams({ id: state.selected }));
      renderJob();
      restartStreamIfNeeded();
      await Promise.all([refreshList(), loadEvidence(state.selected)]);
    });
  });
  // The form sits below the candidates: bring it into view, ready to type.
  $('act-promote').addEventListener('click', () => {
    $('promote-form').hidden = false;
    $('promote-error').textContent = '';
    $('promote-form').scrollIntoView({ block: 'nearest' });
    $('promote-name').focus();
    refreshTargetPreview();
  });
  // Closing drops the typed target, so the preview and a later Promote agree on the default.
  $('promote-close').addEventListener('click', () => {
    $('promote-form').hidden = true;
    $('promote-name').value = '';
    $('promote-version').value = '';
    state.targetPreview = null;
    renderPreview();
    $('act-promote').focus();
  });
  let targetTimer = null;
  for (const input of [$('promote-name'), $('promote-version')]) {
    input.addEventListener('input', () => {
      clearTimeout(targetTimer);
      targetTimer = setTimeout(refreshTargetPreview, 300);
    });
  }
  $('promote-form').addEventListener('submit', promote);

  setInterval(() => { if (!document.hidden && !$('main').hidden) refreshList(); }, LIST_POLL_MS);
  // "last event … ago" ages without new events; redraw the header now and then.
  setInterval(() => { if (state.job && !document.hidden) renderJob(); }, 15000);
}

function resetSelection() {
  stopStream();
  state.selected = null;
  state.job = null;
  state.jobs = [];
  state.page = 1;
  // Rows of the list being replaced must not stay clickable until the new list arrives.
  $('job-rows').replaceChildren();
  state.candidates = [];
  state.preview = null;
  state.targetPreview = null;
  $('detail-body').hidden = true;
  $('detail-empty').hidden = false;
  $('detail-empty').textContent = 'Select a job on the left.';
  writeJobFragment();
}

function start() {
  wire();
  takeKeyFromFragment();
  state.key = localStorage.getItem(KEY_STORE);
  const saved = JSON.parse(localStorage.getItem(SCOPE_STORE) || '{}');
  if (saved.org) $('scope-org').value = saved.org;
  takeJobFromFragment();
  if (!state.key) { askForKey(''); return; }
  loadScope();
}

document.addEventListener('DOMContentLoaded', start);
