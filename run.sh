#!/usr/bin/env bash
# ./run.sh demo [--out DIR] | ./run.sh test [pytest args] (ruff first, then the tests)
# Creates .venv beside this file on first use, installs vitreg into it
# (editable, with the test extra) whenever pyproject.toml changed, then runs.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
say() { echo "run.sh: $*" >&2; }
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$python" --version 2>&1)"
  "$python" -m venv .venv
fi
stamp=.venv/.vitreg-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  start=$SECONDS
  say "installing vitreg and its dependencies into .venv (PyTorch among them: about 6 GB,"
  say "several minutes on a first install; pip lists each package it fetches)"
  .venv/bin/python -m pip install --quiet --upgrade pip 2>/dev/null || true
  # one line per package pip collects: progress without pip's bars and warnings;
  # its whole output in .venv/pip-install.log, whose end is shown if it fails
  if ! .venv/bin/python -m pip install --progress-bar off -e '.[test]' 2>&1 \
    | tee .venv/pip-install.log \
    | { grep --line-buffered -E '^(Collecting|Successfully installed)' || true; } \
    | sed -u -e 's/^Collecting /run.sh:   fetching /' -e 's/^Successfully installed .*/run.sh:   installed/' >&2
  then
    tail -n 20 .venv/pip-install.log >&2
    say "install failed; pip's whole output is in .venv/pip-install.log"
    exit 1
  fi
  echo "$want" > "$stamp"
  say "install done in $((SECONDS - start)) s"
fi
what=${1:-}
shift || true
case "$what" in
  demo) exec .venv/bin/vitreg demo "$@" ;;
  test) .venv/bin/ruff check --quiet . && exec .venv/bin/python -m pytest -q "$@" ;;
  *) echo "usage: ./run.sh demo [--out DIR] | ./run.sh test [pytest args]" >&2; exit 2 ;;
esac
