// Drives the Optimization page in Debian's Chromium (playwright-core), against the server
// that scripts/page-e2e.sh started and seeded with one job named `e2e-seeded-job`, which its
// embedded worker runs against a model endpoint that never answers (so it stays running).
// Every step waits for what the user would see; any browser console error (a CSP violation
// included) fails the run.
'use strict';
const { chromium } = require('playwright-core');

const SERVER = process.env.GEPARD_SERVER;
const KEY = process.env.GEPARD_API_KEY;
const JOBS = '/api/v1/org/local/ws/default/optimization/jobs';
const TIMEOUT = 15000;

async function api(method, path, body, key = KEY) {
  const resp = await fetch(SERVER + path, {
    method,
    headers: { 'X-API-Key': key, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await resp.json().catch(() => null);
  if (!resp.ok) throw new Error(`${method} ${path}: ${resp.status} ${JSON.stringify(json)}`);
  return json;
}

function step(name) {
  console.log(`  - ${name}`);
}

async function waitForStatus(id, wanted) {
  const until = Date.now() + TIMEOUT;
  for (;;) {
    const job = await api('GET', `${JOBS}/${id}`);
    if (job.status === wanted) return job;
    if (Date.now() > until) throw new Error(`job ${id} is ${job.status}, not ${wanted}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function main() {
  const seeded = (await api('GET', `${JOBS}?page_size=10`)).items.find((j) => j.name === 'e2e-seeded-job');
  await waitForStatus(seeded.id, 'running');

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
  const problems = [];
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(TIMEOUT);
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('response', (r) => { if (r.status() >= 400) problems.push(`answer: ${r.status()} ${r.request().method()} ${r.url()}`); });

    step('the key from the URL fragment signs in and leaves the address bar');
    await page.goto(`${SERVER}/#key=${encodeURIComponent(KEY)}`);
    await page.waitForSelector('#main:not([hidden])');
    if (new URL(page.url()).hash !== '') throw new Error(`the key stayed in the address bar: ${page.url()}`);
    if (await page.evaluate(() => localStorage.getItem('gepard.apiKey')) !== KEY) throw new Error('the key was not kept');

    step('the job list shows the seeded job');
    const row = page.locator('#job-rows tr', { hasText: 'e2e-seeded-job' });
    await row.waitFor();
    const rowText = await row.innerText();
    if (!rowText.includes('running') || !rowText.includes('sentiment@1.0.0')) throw new Error(`row: ${rowText}`);
    if (!(await page.locator('#submit-panel').isHidden())) throw new Error('the form opened although the scope has a job');

    step('selecting it shows its detail');
    await row.click();
    await page.waitForSelector('#detail-body:not([hidden])');
    await page.locator('#d-name', { hasText: 'e2e-seeded-job' }).waitFor();
    await page.locator('#d-status', { hasText: 'running' }).waitFor();
    await page.locator('#d-live', { hasText: 'live' }).waitFor();
    await page.locator('#d-logs div').first().waitFor();
    if (await page.locator('#act-cancel').isDisabled()) throw new Error('cancel is disabled on a running job');
    if (!(await page.locator('#act-retry').isDisabled())) throw new Error('retry is enabled on a running job');
    if (!(await page.locator('#act-promote').isDisabled())) throw new Error('promote is enabled without a result');
    if (!(await page.locator('#promote-form').isHidden())) throw new Error('the promote form shows without a result');
    const selectedHash = new URLSearchParams(new URL(page.url()).hash.slice(1));
    if (selectedHash.get('job') !== seeded.id || selectedHash.has('key')) throw new Error(`the address does not name the job: ${page.url()}`);

    step("the worker's progress appears live, without reload");
    const job = seeded;
    const navigations = [];
    page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations.push(f.url()); });
    // The model answers the seed's 30 validation calls with `positive` (15 of the 30 rows are
    // positive), then holds the first iteration's calls, so the job stays running.
    const released = await fetch(`${process.env.E2E_MODEL}/release?n=30`, { method: 'POST' });
    if (!released.ok) throw new Error(`model release: ${released.status}`);
    await page.locator('#d-logs', { hasText: 'candidate 0: validation 0.500 (new best)' }).waitFor();
    await page.locator('#d-stats .card', { hasText: 'best score' }).locator('.value', { hasText: '0.500' }).waitFor();
    await page.locator('#d-sparks [data-metric="val_score"] circle.spark-dot').waitFor();
    await page.locator('#job-rows tr.selected', { hasText: '0.500' }).waitFor();
    if ((await api('GET', `${JOBS}/${job.id}`)).status !== 'running') throw new Error('the seeded job is no longer running');
    const runner = await api('POST', '/api/v1/org/local/keys', { name: 'e2e-runner', scopes: ['runner'] });
    const forged = await fetch(`${SERVER}${JOBS}/${job.id}/progress`, {
      method: 'POST', headers: { 'X-API-Key': runner.key, 'Content-Type': 'application/json' },
      body: JSON.stringify({ event_type: 'optimization_end', summary: { best_score: 1 } }),
    });
    if (forged.status !== 409) throw new Error(`a runner key reported progress for a worker's job: ${forged.status}`);
    if (navigations.length) throw new Error(`the page reloaded: ${navigations}`);
    // For a person checking the layout: PAGE_E2E_SCREENSHOT=/tmp/page.png scripts/page-e2e.sh
    if (process.env.PAGE_E2E_SCREENSHOT) {
      await page.setViewportSize({ width: 1400, height: 1000 });
      await page.screenshot({ path: process.env.PAGE_E2E_SCREENSHOT, fullPage: true });
    }

    step('a reload mid-run opens the same job and its stream resumes');
    await page.reload();
    await page.locator(`#job-rows tr.selected[data-id="${job.id}"]`).waitFor();
    await page.locator('#d-name', { hasText: 'e2e-seeded-job' }).waitFor();
    await page.locator('#d-live', { hasText: 'live' }).waitFor();
    await page.locator('#d-logs', { hasText: 'candidate 0: validation 0.500 (new best)' }).waitFor();
    if (new URL(page.url()).hash.includes('key=')) throw new Error(`the key came back into the address: ${page.url()}`);

    step('a shared link to the job opens it in another tab, with the key link too');
    const shared = await browser.newPage();
    shared.setDefaultTimeout(TIMEOUT);
    shared.on('pageerror', (e) => problems.push(`shared tab: page error: ${e.message}`));
    try {
      // A fresh browser: no key, no remembered scope; the link carries both.
      await shared.goto(`${SERVER}/#key=${encodeURIComponent(KEY)}&job=${job.id}&org=local&ws=default&project=default`);
      await shared.locator(`#job-rows tr.selected[data-id="${job.id}"]`).waitFor();
      await shared.locator('#d-status', { hasText: 'running' }).waitFor();
      const sharedHash = new URL(shared.url()).hash;
      if (sharedHash.includes('key=') || !sharedHash.includes(`job=${job.id}`)) throw new Error(`address after a shared link: ${shared.url()}`);
    } finally {
      await shared.close();
    }

    step('cancel asks first; "No" leaves the job running');
    await page.click('#act-cancel');
    await page.waitForSelector('#cancel-confirm:not([hidden])');
    await page.click('#cancel-no');
    await page.waitForSelector('#cancel-confirm', { state: 'hidden' });
    if ((await api('GET', `${JOBS}/${job.id}`)).status !== 'running') throw new Error('"No" cancelled the job');

    step('cancel stops the running job and the buttons follow the state');
    await page.click('#act-cancel');
    await page.click('#cancel-yes');
    await page.locator('#d-status', { hasText: 'cancelled' }).waitFor();
    await page.locator('#job-rows tr.selected', { hasText: 'cancelled' }).waitFor();
    await page.waitForFunction(() => document.getElementById('act-cancel').disabled && !document.getElementById('act-retry').disabled);
    const after = await api('GET', `${JOBS}/${job.id}`);
    if (after.status !== 'cancelled') throw new Error(`server says ${after.status}`);

    step('retry asks first; "No" leaves the job as it is');
    await page.click('#act-retry');
    await page.waitForSelector('#retry-confirm:not([hidden])');
    await page.click('#retry-no');
    await page.waitForSelector('#retry-confirm', { state: 'hidden' });
    if ((await api('GET', `${JOBS}/${job.id}`)).status !== 'cancelled') throw new Error('"No" retried the job');

    step('a retry made elsewhere (the API) reaches the open detail without reload');
    await api('POST', `${JOBS}/${job.id}/retry`);
    await page.locator('#d-status', { hasText: /queued|running/ }).waitFor();
    await page.waitForFunction(() => !document.getElementById('act-cancel').disabled);

    step('after the retry the detail lists the earlier attempt with its best instructions');
    const attemptRow = page.locator('#d-attempts tr[data-attempt="1"]');
    await attemptRow.waitFor();
    const attemptText = await attemptRow.innerText();
    if (!attemptText.includes('cancelled') || !attemptText.includes('0.500')) throw new Error(`attempt 1: ${attemptText}`);
    if (await page.locator('#d-attempts tr').count() !== 1) throw new Error('the current attempt is listed as an earlier one');
    await attemptRow.click();
    await page.locator('#d-attempt-text', { hasText: 'Attempt 1 best instructions (validation 0.500)' }).waitFor();
    await page.locator('#d-attempt-text', { hasText: 'Classify the sentiment of the text.' }).waitFor();

    step('a status filter that matches nothing says so, not that the scope is empty');
    await page.selectOption('#filter-status', 'failed');
    await page.locator('#jobs-summary', { hasText: 'No failed jobs (1 in this scope).' }).waitFor();
    if (!(await page.locator('#submit-panel').isHidden())) throw new Error('the form opened for an empty filter result');
    await page.selectOption('#filter-status', '');
    await page.locator('#job-rows tr', { hasText: 'e2e-seeded-job' }).waitFor();

    step('the search box asks the server (every job of the scope, not only those loaded)');
    const searched = page.waitForRequest((r) => r.url().includes('/optimization/jobs?') && r.url().includes('search=zzz-nothing'));
    await page.fill('#filter-text', 'zzz-nothing');
    await searched;
    await page.locator('#jobs-summary', { hasText: 'No jobs match “zzz-nothing” (1 in this scope).' }).waitFor();
    if (!(await page.locator('#submit-panel').isHidden())) throw new Error('the form opened for an empty search result');
    await page.fill('#filter-text', 'E2E-SEEDED');
    await page.locator('#job-rows tr', { hasText: 'e2e-seeded-job' }).waitFor();
    await page.fill('#filter-text', '');

    step('a promotion refused for its version names the error once');
    // Only the default target's preview is faked; a typed target's (with a query) reaches the server.
    const defaultPreview = (url) => url.pathname.endsWith('/promotion-preview') && !url.search;
    await page.route(defaultPreview, (route) => route.fulfill({
      status: 200, contentType: 'application/json',
      body: JSON.stringify({ promotable: true, reasons: [], source: {}, target: {}, diff: '' }),
    }));
    await page.click('#act-refresh');
    await page.waitForFunction(() => !document.getElementById('act-promote').disabled);
    await page.click('#act-promote');
    step('"Promote…" brings its form into view, ready to type, and the preview follows the typed name');
    await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'promote-name');
    const formBox = await page.locator('#promote-form').boundingBox();
    const viewport = page.viewportSize();
    if (!formBox || formBox.y < 0 || formBox.y + formBox.height > viewport.height + 2) throw new Error(`the promotion form is out of view: ${JSON.stringify(formBox)}`);
    await page.fill('#promote-name', 'e2e-tuned');
    await page.locator('#d-preview', { hasText: '→ e2e-tuned@1.0.0' }).waitFor();
    await page.fill('#promote-name', '');
    step('a promotion refused for its version names the error once (continued)');
    await page.fill('#promote-version', 'not-semver');
    await page.click('#promote-submit');
    const promoteError = page.locator('#promote-error');
    await promoteError.filter({ hasText: 'version' }).waitFor();
    const promoteText = await promoteError.innerText();
    if (promoteText.split('body.version').length - 1 !== 1) throw new Error(`the error repeats itself: ${promoteText}`);
    await page.unroute(defaultPreview);
    await page.click('#promote-close');

    step('an unknown organization clears the previous one from the screen');
    await page.fill('#scope-org', 'nope');
    await page.press('#scope-org', 'Enter');
    await page.locator('#global-error', { hasText: 'nope' }).waitFor();
    if (await page.locator('#job-rows tr').count()) throw new Error('the jobs of org local stayed on screen');
    if (await page.locator('#scope-ws option').count()) throw new Error('the workspaces of org local stayed on screen');
    if (await page.locator('#scope-project option').count()) throw new Error('the projects of org local stayed on screen');
    if (await page.locator('#detail-body').isVisible()) throw new Error('the selected job of org local stayed on screen');
    await page.fill('#scope-org', 'local');
    await page.press('#scope-org', 'Enter');
    await page.locator('#job-rows tr', { hasText: 'e2e-seeded-job' }).waitFor();
    if (await page.locator('#global-error').isVisible()) throw new Error('the error stayed after a good org');

    step('an empty project opens the submission form by itself');
    await api('POST', '/api/v1/org/local/ws/default/projects', { key: 'e2e-empty', name: 'E2E empty' });
    await page.reload();
    await page.waitForSelector('#main:not([hidden])');
    await page.selectOption('#scope-project', 'e2e-empty');
    await page.waitForSelector('#submit-panel:not([hidden])');
    await page.locator('#submit-form select[name="capability"] option', { hasText: 'sentiment' }).first().waitFor({ state: 'attached' });
    await page.locator('#submit-form select[name="agent"] option').first().waitFor({ state: 'attached' });
    await page.locator('#submit-form select[name="dataset_version"] option').first().waitFor({ state: 'attached' });
    const sets = await page.evaluate(() => [document.querySelector('#submit-form select[name="dataset"]').value,
      document.querySelector('#submit-form select[name="val_dataset"]').value]);
    if (sets.join() !== 'sentiment-train,sentiment-val') throw new Error(`the form proposes datasets ${sets}`);

    step('the form offers builtin/rules as a reflection model, not as the target');
    const listed = await page.evaluate(() => {
      const options = (input) => [...document.querySelector(`#submit-form input[name="${input}"]`).list.options].map((o) => o.value);
      return { target: options('model'), reflection: options('reflection_lm') };
    });
    if (listed.target.includes('builtin/rules') || !listed.target.includes('openai/gpt-4o-mini')) throw new Error(`target models offered: ${listed.target}`);
    if (!listed.reflection.includes('builtin/rules')) throw new Error(`reflection models offered: ${listed.reflection}`);

    step('Escape closes the form');
    await page.focus('#submit-form input[name="objective"]');
    await page.keyboard.press('Escape');
    await page.waitForSelector('#submit-panel', { state: 'hidden' });
    await page.click('#new-job');
    await page.waitForSelector('#submit-panel:not([hidden])');

    step('an empty target model is refused next to the field, before anything is sent');
    let posted = 0;
    const countPosts = (r) => { if (r.method() === 'POST' && r.url().includes('/optimization/jobs')) posted++; };
    page.on('request', countPosts);
    await page.fill('#submit-form input[name="model"]', '');
    await page.click('#submit-go');
    await page.locator('#submit-form label', { hasText: 'target model' }).locator('.field-error', { hasText: 'required' }).waitFor();
    if (await page.getAttribute('#submit-form input[name="model"]', 'aria-invalid') !== 'true') throw new Error('the empty model is not marked');
    await page.waitForTimeout(300);
    page.off('request', countPosts);
    if (posted) throw new Error('the form was sent without a model');

    step('server field errors show once each, beside their field or one a line');
    // A dataset whose rows have no goal is refused at the dataset ref itself (no input of the
    // form has that loc); two errors without any input go under the form.
    const noGoal = 'row 1 of dataset sentiment-train@1.0.0 has no `goal` field (and no dataset_input_mapping was given)';
    await page.route('**/optimization/jobs', (route) => route.request().method() !== 'POST' ? route.fallback() : route.fulfill({
      status: 422, contentType: 'application/json',
      body: JSON.stringify({ code: 422, type: 'validation_error', detail: `invalid body.dataset_ref: ${noGoal}`, errors: [
        { loc: ['body', 'dataset_ref'], msg: noGoal, type: 'value_error' },
        { loc: ['body', 'capability_env'], msg: 'e2e: first without a field', type: 'value_error' },
        { loc: ['body', 'timeout_sec'], msg: 'e2e: second without a field', type: 'value_error' },
      ] }),
    }));
    await page.fill('#submit-form input[name="model"]', 'openai/gpt-4o-mini');
    await page.click('#submit-go');
    await page.locator('#submit-error div', { hasText: 'e2e: second without a field' }).waitFor();
    const panelText = await page.locator('#submit-panel').innerText();
    if (panelText.split('has no `goal` field').length - 1 !== 1) throw new Error(`the dataset error is not shown exactly once: ${panelText}`);
    if (await page.getAttribute('#submit-form select[name="dataset"]', 'aria-invalid') !== 'true') throw new Error('the dataset field is not marked');
    await page.locator('#submit-form label', { hasText: 'dataset *' }).first().locator('.field-error', { hasText: 'has no `goal` field' }).waitFor();
    const lines = await page.locator('#submit-error div').allInnerTexts();
    if (lines.join('|') !== 'body.capability_env: e2e: first without a field|body.timeout_sec: e2e: second without a field') throw new Error(`unplaced errors: ${lines}`);
    await page.unroute('**/optimization/jobs');

    step('a submission error shows its field next to the input');
    await page.fill('#submit-form input[name="model"]', 'not-a-model-id');
    await page.click('#submit-go');
    await page.locator('#submit-form .field-error').first().waitFor();
    step('a valid submission creates the job and selects it');
    await page.fill('#submit-form input[name="model"]', 'openai/gpt-4o-mini');
    await page.fill('#submit-form input[name="run_ref"]', 'e2e-from-form');
    await page.fill('#submit-form input[name="name"]', 'e2e-form-name');
    // 30 validation rows: the seed takes 30 calls, an iteration up to 2 × 3 + 30 more.
    await page.fill('#submit-form input[name="max_metric_calls"]', '40');
    await page.click('#submit-go');
    await page.waitForSelector('#submit-panel', { state: 'hidden' });
    await page.locator('#job-rows tr.selected', { hasText: 'sentiment@1.0.0' }).waitFor();
    await page.locator('#d-status', { hasText: 'queued' }).waitFor();
    await page.locator('#d-name', { hasText: 'e2e-form-name' }).waitFor();
    step("the server's warning about a budget that covers only the seed shows beside the detail");
    await page.locator('#d-notice', { hasText: 'max_metric_calls 40 covers the seed evaluation' }).waitFor();

    step('a refused action shows the envelope detail next to the buttons');
    await page.route('**/cancel', (route) => route.fulfill({
      status: 409, contentType: 'application/json',
      body: JSON.stringify({ code: 409, type: 'conflict', detail: 'e2e: job is already finished' }),
    }));
    await page.click('#act-cancel');
    await page.click('#cancel-yes');
    await page.locator('#act-error', { hasText: 'e2e: job is already finished' }).waitFor();
    await page.unroute('**/cancel');

    step('a #job= link pasted into the tab that shows another job opens the linked job, in its scope');
    await page.goto(`${SERVER}/#job=${job.id}&org=local&ws=default&project=default`);
    await page.locator(`#job-rows tr.selected[data-id="${job.id}"]`).waitFor();
    await page.locator('#d-name', { hasText: 'e2e-seeded-job' }).waitFor();
    if (!new URL(page.url()).hash.includes(`job=${job.id}`)) throw new Error(`address after the link: ${page.url()}`);

    step('a link to a job that is not there says so in place of the detail');
    // (Its 404s are expected: see the end.)
    await page.goto(`${SERVER}/#job=00000000-0000-4000-8000-000000000000&org=local&ws=default&project=default`);
    await page.locator('#detail-empty:not([hidden])', { hasText: 'This job cannot be shown' }).waitFor();
    if (await page.locator('#detail-body').isVisible()) throw new Error('an empty detail is shown for a missing job');

    step('the job list pages: the older page shows the 101st job and stays live');
    await api('POST', '/api/v1/org/local/ws/default/projects', { key: 'e2e-paging', name: 'E2E paging' });
    // 105 jobs, oldest first: page 1 (newest first) ends at page-job-006, page 2 holds 005 … 001.
    const pagingIds = [];
    for (let i = 1; i <= 105; i++) {
      const submitted = await api('POST', JOBS, {
        backend: 'gepa', target_kind: 'capability_agent', model: 'openai/gpt-4o-mini', project: 'e2e-paging',
        name: `page-job-${String(i).padStart(3, '0')}`,
        capability_ref: { name: 'sentiment', version: '1.0.0' },
        dataset_ref: { name: 'sentiment-train', version: '1.0.0' },
        reward_recipe: { name: 'exact_match_v1', params: {} },
        config: { max_metric_calls: 1000 },
      });
      pagingIds.push(submitted.id);
    }
    await page.reload();
    await page.waitForSelector('#main:not([hidden])');
    await page.selectOption('#scope-project', 'e2e-paging');
    await page.locator('#jobs-summary', { hasText: 'Jobs 1–100 of 105.' }).waitFor();
    await page.locator('#job-rows tr', { hasText: 'page-job-105' }).waitFor();
    if (!(await page.locator('#page-newer').isDisabled())) throw new Error('"Newer" is enabled on the newest page');
    await page.click('#page-older');
    await page.locator('#jobs-summary', { hasText: 'Jobs 101–105 of 105.' }).waitFor();
    await page.locator('#job-rows tr', { hasText: 'page-job-005' }).waitFor();
    if (await page.locator('#job-rows tr').count() !== 5) throw new Error(`the older page lists ${await page.locator('#job-rows tr').count()} jobs`);
    if (!(await page.locator('#page-older').isDisabled())) throw new Error('"Older" is enabled on the oldest page');
    // The list's poll refreshes the page shown, not the first one.
    await api('POST', `${JOBS}/${pagingIds[0]}/cancel`);
    await page.locator('#job-rows tr', { hasText: 'page-job-001' }).filter({ hasText: 'cancelled' }).waitFor();
    step('a status filter goes back to the first page');
    await page.selectOption('#filter-status', 'queued');
    await page.locator('#jobs-summary', { hasText: 'Queued jobs 1–100 of 104.' }).waitFor();
    await page.selectOption('#filter-status', '');
    await page.locator('#jobs-summary', { hasText: 'Jobs 1–100 of 105.' }).waitFor();
    await page.click('#page-older');
    await page.locator('#jobs-summary', { hasText: 'Jobs 101–105 of 105.' }).waitFor();
    await page.click('#page-newer');
    await page.locator('#job-rows tr', { hasText: 'page-job-105' }).waitFor();

    step('on a desktop the list and the detail scroll apart: a job low in a long list shows its detail in view');
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.locator('#job-rows tr', { hasText: 'page-job-006' }).click();
    await page.locator('#d-name', { hasText: 'page-job-006' }).waitFor();
    const inView = await page.evaluate(() => {
      const head = document.getElementById('d-name').getBoundingClientRect();
      const doc = document.documentElement;
      return { top: head.top, bottom: head.bottom, height: innerHeight, pageScroll: doc.scrollHeight - doc.clientHeight,
        listScrolled: document.querySelector('.jobs').scrollTop };
    });
    if (inView.top < 0 || inView.bottom > inView.height || inView.pageScroll > 0 || inView.listScrolled <= 0) throw new Error(`desktop layout: ${JSON.stringify(inView)}`);

    step('an unknown key brings the key form back with a message');
    await page.evaluate(() => localStorage.setItem('gepard.apiKey', 'gpd_this_key_does_not_exist_0000'));
    await page.reload();
    await page.waitForSelector('#key-panel:not([hidden])');
    await page.locator('#key-message', { hasText: 'did not accept' }).waitFor();
    await page.fill('#key-input', KEY);
    await page.click('#key-form button[type="submit"]');
    await page.waitForSelector('#main:not([hidden])');

    step('a #key= link opened in the tab that already shows the page switches to that key');
    const other = await api('POST', '/api/v1/org/local/keys', { name: 'e2e-other', scopes: ['read'] });
    // The answer, not the request: rows drawn before it would be replaced under the keyboard step.
    const withOther = page.waitForResponse((r) => r.url().includes('/optimization/jobs?') && r.request().headers()['x-api-key'] === other.key);
    await page.goto(`${SERVER}/#key=${encodeURIComponent(other.key)}`);
    await withOther;
    await page.waitForFunction(() => location.hash === '');
    if (await page.evaluate(() => localStorage.getItem('gepard.apiKey')) !== other.key) throw new Error('the new key was not kept');
    await page.locator('#job-rows tr', { hasText: 'sentiment@1.0.0' }).first().waitFor();

    step('a read-only key sees the write and promote actions greyed out, saying why');
    await page.locator('#new-job[disabled]').waitFor();
    if (!(await page.locator('#new-job').getAttribute('title')).includes('lacks the write scope')) throw new Error('New job does not say why it is disabled');
    step('job rows are reachable by keyboard: a focused row opens with Enter');
    const first = page.locator('#job-rows tr', { hasText: 'sentiment@1.0.0' }).first();
    const firstId = await first.getAttribute('data-id');
    await first.focus();
    await page.keyboard.press('Enter');
    await page.locator(`#job-rows tr.selected[data-id="${firstId}"]`).waitFor();
    await page.waitForSelector('#detail-body:not([hidden])');
    step('the opened row keeps the focus, also across the list\'s refresh, and arrow keys move between rows');
    await page.evaluate(() => renderList());
    if (await page.evaluate(() => document.activeElement.dataset.id) !== firstId) throw new Error('the focus left the opened row');
    await page.keyboard.press('ArrowDown');
    const secondId = await page.locator('#job-rows tr').nth(1).getAttribute('data-id');
    if (await page.evaluate(() => document.activeElement.dataset.id) !== secondId) throw new Error('ArrowDown did not move to the next row');
    await page.keyboard.press('ArrowUp');
    if (await page.evaluate(() => document.activeElement.dataset.id) !== firstId) throw new Error('ArrowUp did not move back');
    for (const [id, scope] of [['#act-cancel', 'write'], ['#act-retry', 'write'], ['#act-promote', 'promote']]) {
      if (!(await page.locator(id).isDisabled())) throw new Error(`${id} is enabled for a read-only key`);
      const title = await page.locator(id).getAttribute('title');
      if (!title.includes(`lacks the ${scope} scope`)) throw new Error(`${id} title: ${title}`);
    }
    if (await page.locator('#act-refresh').isDisabled()) throw new Error('refresh needs only read');

    step('following logs does not pull a reader who scrolled up back down; ticking follow again does');
    const logScroll = await page.evaluate(() => {
      const box = document.getElementById('d-logs');
      const line = (i) => appendLog({ timestamp: new Date().toISOString(), level: 'info', message: `e2e line ${i}` });
      for (let i = 0; i < 80; i++) line(i);
      const followed = box.scrollTop > 0;
      box.scrollTop = 0;
      line(80);
      const stayed = box.scrollTop === 0;
      const follow = document.getElementById('follow-logs');
      follow.checked = false;
      follow.click(); // ticks it again, with its change event
      const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 2;
      return { followed, stayed, atEnd };
    });
    if (!logScroll.followed || !logScroll.stayed || !logScroll.atEnd) throw new Error(`log scrolling: ${JSON.stringify(logScroll)}`);

    step('on a narrow screen the list sits above the detail and nothing scrolls sideways');
    await page.setViewportSize({ width: 390, height: 800 });
    const layout = await page.evaluate(() => {
      const list = document.querySelector('.jobs').getBoundingClientRect();
      const detail = document.querySelector('.detail').getBoundingClientRect();
      return { stacked: detail.top >= list.bottom - 1, overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth };
    });
    if (!layout.stacked || layout.overflow > 0) throw new Error(`narrow layout: ${JSON.stringify(layout)}`);
    // The training-vs-validation chart is drawn at the narrow width, so its labels stay legible.
    const label = await page.evaluate(() => {
      renderTrainVal({ summary: {}, metrics: { val_score: [{ step: 0, value: 0.2 }, { step: 5, value: 0.8 }] } });
      return document.querySelector('#d-trainval .tv-label').getBoundingClientRect().height;
    });
    if (label < 9) throw new Error(`chart labels are ${label} px tall at 390 px`);

    step('at 1000 px (beside the detail) and at 400 px the job table fits its pane, the created column in view');
    for (const width of [1000, 400]) {
      await page.setViewportSize({ width, height: 800 });
      const fit = await page.evaluate(() => {
        const table = document.querySelector('.job-list');
        const pane = document.querySelector('.jobs');
        const created = table.querySelector('thead th.col-created').getBoundingClientRect();
        return { table: table.scrollWidth - table.clientWidth, pane: pane.scrollWidth - pane.clientWidth,
          createdRight: Math.round(created.right), paneRight: Math.round(pane.getBoundingClientRect().right) };
      });
      if (fit.table > 0 || fit.pane > 0 || fit.createdRight > fit.paneRight) throw new Error(`table at ${width} px: ${JSON.stringify(fit)}`);
    }
    if (process.env.PAGE_E2E_SCREENSHOT) await page.screenshot({ path: process.env.PAGE_E2E_SCREENSHOT.replace(/\.png$/, '-narrow.png') });
    step('on a narrow screen a tapped row brings its detail into view');
    const lowRow = page.locator('#job-rows tr').nth(20);
    const lowId = await lowRow.getAttribute('data-id');
    await lowRow.click();
    await page.locator(`#job-rows tr.selected[data-id="${lowId}"]`).waitFor();
    await page.waitForFunction(() => {
      const top = document.getElementById('detail').getBoundingClientRect().top;
      return top >= -1 && top < innerHeight / 2;
    });
    await page.setViewportSize({ width: 1280, height: 800 });

    step('without a key, "New job" asks for the key instead of opening the form');
    await page.click('#forget-key');
    await page.waitForSelector('#key-panel:not([hidden])');
    await page.click('#new-job');
    await page.locator('#key-message', { hasText: 'A job needs an API key' }).waitFor();
    await page.waitForTimeout(300);
    if (!(await page.locator('#submit-panel').isHidden())) throw new Error('the form opened without a key');

    step('the same from the key form');
    await page.evaluate(() => localStorage.setItem('gepard.apiKey', 'gpd_this_key_does_not_exist_0000'));
    await page.reload();
    await page.waitForSelector('#key-panel:not([hidden])');
    step('with a refused key, "New job" asks for another one too');
    await page.click('#new-job');
    await page.locator('#key-message', { hasText: 'A job needs an API key' }).waitFor();
    await page.waitForTimeout(300);
    if (!(await page.locator('#submit-panel').isHidden())) throw new Error('the form opened with a refused key');
    await page.goto(`${SERVER}/#key=${encodeURIComponent(KEY)}`);
    await page.waitForSelector('#main:not([hidden])');
    if (new URL(page.url()).hash !== '') throw new Error(`the key stayed in the address bar: ${page.url()}`);

    // The browser logs the 401, 404, 409 and 422 answers provoked above; anything else is a failure.
    // The unknown org `nope` is a 404 on purpose; any other 404 is not.
    const unexpected = problems.filter((p) => !/status of (401|404|409|422)|^answer: (401|409|422) |^answer: 404 GET \S*\/org\/nope\/|^answer: 404 GET \S*\/jobs\/00000000-0000-4000-8000-000000000000\//.test(p));
    if (unexpected.length) throw new Error(`browser errors:\n${unexpected.join('\n')}`);
    console.log('page-e2e: all steps passed');
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(`page-e2e: FAILED: ${e.stack || e}`);
  process.exit(1);
});
