#!/usr/bin/env bash
# Compatibility with the Dreadnode client: installs `dreadnode` (its `dn` CLI) in a venv and
# runs crates/gepard/tests/dn_compat.rs, which drives every `dn optimize …` subcommand
# against a real gepard server. Needs python3 (with venv) and network access to PyPI.
#   DN_VENV     where the venv lives (default: target/dn-venv; reused when present)
#   DN_VERSION  the dreadnode version to test (default: 2.0.52)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${DN_VENV:-target/dn-venv}"
version="${DN_VERSION:-2.0.52}"
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('dreadnode') != '$version')" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -U pip
    "$venv/bin/pip" install --quiet "dreadnode==$version"
fi
GEPARD_DN_BIN="$(cd "$venv/bin" && pwd)/dn" exec cargo test -p gepard --test dn_compat --locked -- --nocapture "$@"
