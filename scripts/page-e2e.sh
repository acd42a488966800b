#!/usr/bin/env bash
# The Optimization page in a real browser: starts a real `gepard serve` on a fresh SQLite
# directory with a seeded job, and drives Debian's Chromium through playwright-core
# (scripts/page-e2e.cjs): the key from the URL fragment, the job list, the detail, the
# worker's progress arriving live (and a runner key refused for a worker's job), cancel (asked
# first) of a running job, an empty status filter, a refused promotion, an unknown org, the
# empty-scope form with its dataset defaults and the server's budget warning, the 401 key form,
# a `#key=` link followed in an open tab, a read-only key's greyed-out actions, keyboard
# selection and the narrow-screen layout; the selected job kept in the fragment across a reload
# and a shared link, paging through 105 jobs, earlier attempts after a retry, the form's
# Escape / name / required model / target-model list / field errors, panes that scroll apart on
# a desktop, a job table that fits 400 px, and "New job" asking for a key when there is none;
# retry asked first, a `#job=` link pasted into an open tab, a link to a missing job, and the
# promotion form brought into view with a preview that follows the typed target.
#
# Installs what it needs itself: the Debian package `chromium` (with apt-get, as root) and the
# npm package playwright-core into target/page-e2e (git-ignored). When either cannot be had
# it fails loudly; it never skips.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

E2E_DIR=${GEPARD_E2E_DIR:-target/page-e2e}
PLAYWRIGHT_VERSION=${PLAYWRIGHT_VERSION:-1.64.1}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [ ! -x "$CHROMIUM" ]; then
    log "installing chromium (Debian)"
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "page-e2e: $CHROMIUM is missing and cannot be installed here (needs apt-get as root)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    [ -x "$CHROMIUM" ] || { echo "page-e2e: chromium install did not produce $CHROMIUM" >&2; exit 1; }
fi

if ! command -v node >/dev/null 2>&1; then
    echo "page-e2e: node is required" >&2
    exit 1
fi
if [ ! -f "$E2E_DIR/node_modules/playwright-core/package.json" ] ||
   ! grep -q "\"version\": \"$PLAYWRIGHT_VERSION\"" "$E2E_DIR/node_modules/playwright-core/package.json"; then
    log "installing playwright-core@$PLAYWRIGHT_VERSION into $E2E_DIR"
    mkdir -p "$E2E_DIR"
    npm install --silent --no-audit --no-fund --prefix "$E2E_DIR" "playwright-core@$PLAYWRIGHT_VERSION"
fi

log "building gepard"
cargo build -p gepard --locked
BIN="${CARGO_TARGET_DIR:-target}/debug/gepard"

DATA=$(mktemp -d)
PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
SERVER="http://127.0.0.1:$PORT"
# A chosen admin key (the automation path): no credentials file, nothing printed.
KEY="gpd_e2e_$(node -e 'console.log(require("crypto").randomBytes(18).toString("hex"))')"
cleanup() {
    if [ -n "${SERVER_PID:-}" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    if [ -n "${MODEL_PID:-}" ]; then kill "$MODEL_PID" 2>/dev/null || true; wait "$MODEL_PID" 2>/dev/null || true; fi
    rm -rf "$DATA"
}
trap cleanup EXIT

# A model endpoint that holds every chat call until the browser test releases some
# (`POST /release?n=N` answers the next N with `positive`): the seeded job is claimed by the
# embedded worker and stays `running` (its sandbox waiting on the model) while the browser
# watches it; releasing its seed evaluation makes the real worker report live progress; and
# cancelling it exercises the real stop path.
MODEL_PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
node -e "
let budget = 0; const held = [];
const answer = (res, body) => {
  let model = 'e2e'; try { model = JSON.parse(body).model; } catch (e) {}
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ id: 'e2e', object: 'chat.completion', model,
    choices: [{ index: 0, message: { role: 'assistant', content: 'positive' }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }));
};
require('http').createServer((req, res) => {
  let body = ''; req.on('data', (c) => { body += c; });
  req.on('end', () => {
    if (req.url.startsWith('/release')) {
      budget += Number(new URL(req.url, 'http://x').searchParams.get('n'));
      while (budget > 0 && held.length) { budget--; const [r, b] = held.shift(); answer(r, b); }
      res.end('ok'); return;
    }
    if (budget > 0) { budget--; answer(res, body); } else held.push([res, body]);
  });
}).listen($MODEL_PORT, '127.0.0.1');
" &
MODEL_PID=$!

log "starting gepard serve on $SERVER"
GEPARD_ADMIN_KEY="$KEY" GEPARD_LOG=warn OPENAI_BASE_URL="http://127.0.0.1:$MODEL_PORT/v1" OPENAI_API_KEY=e2e \
    "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --workers 1 >"$DATA/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    curl -fsS "$SERVER/readyz" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$DATA/server.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS "$SERVER/readyz" >/dev/null

log "seeding: capability, datasets, one job"
export GEPARD_SERVER="$SERVER" GEPARD_API_KEY="$KEY"
"$BIN" capability push examples/capabilities/sentiment >/dev/null
"$BIN" dataset push examples/datasets/sentiment-train >/dev/null
"$BIN" dataset push examples/datasets/sentiment-val >/dev/null
# Sorts before sentiment-train: the form must still prefer the training and validation sets.
"$BIN" dataset push examples/datasets/sentiment-test >/dev/null
"$BIN" optimize submit --model openai/gpt-4o-mini --capability sentiment@1.0.0 \
    --dataset sentiment-train@1.0.0 --val-dataset sentiment-val@1.0.0 --max-metric-calls 1000 \
    --name e2e-seeded-job >/dev/null

log "browser"
NODE_PATH="$E2E_DIR/node_modules" PAGE_E2E_SCREENSHOT="${PAGE_E2E_SCREENSHOT:-}" E2E_MODEL="http://127.0.0.1:$MODEL_PORT" GEPARD_SERVER="$SERVER" GEPARD_API_KEY="$KEY" CHROMIUM="$CHROMIUM" \
    node scripts/page-e2e.cjs || { echo "page-e2e: server log:" >&2; tail -50 "$DATA/server.log" >&2; exit 1; }
