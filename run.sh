#!/usr/bin/env bash
# ./run.sh demo [--out DIR] | ./run.sh test [pytest args] (ruff first, then the tests)
# Creates .venv beside this file on first use, installs vitreg into it
# (editable, with the test extra) whenever pyproject.toml changed, then runs.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.vitreg-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]'
  echo "$want" > "$stamp"
fi
what=${1:-}
shift || true
case "$what" in
  demo) exec .venv/bin/vitreg demo "$@" ;;
  test) .venv/bin/ruff check --quiet . && exec .venv/bin/python -m pytest -q "$@" ;;
  *) echo "usage: ./run.sh demo [--out DIR] | ./run.sh test [pytest args]" >&2; exit 2 ;;
esac
