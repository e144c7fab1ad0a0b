#!/usr/bin/env bash
# On the GPU machine, from a copy of the repository with the bundle of
# bench/gpu/prepare.sh in .whl/: install the bundle into a temporary folder
# (no network, nothing else touched) and run the check; its arguments go to
# bench/gpu/check.py (--models, --seconds, --device, ...).
#
#   bash bench/gpu/run.sh                    # ViT-S and ViT-L, under 8 minutes
#   bash bench/gpu/run.sh --models vit-s,vit-l,vit-g
set -euo pipefail
cd "$(dirname "$0")/../.."
bundle=${VITREG_BUNDLE:-.whl}
python=${PYTHON:-python3}
site=$(mktemp -d "${TMPDIR:-/tmp}/vitreg-site.XXXXXX")
trap 'rm -rf "$site"' EXIT
"$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$site" "$bundle"/*.whl
PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" "$python" -u bench/gpu/check.py \
    --images "$bundle/images" "$@"
