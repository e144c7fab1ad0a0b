#!/usr/bin/env bash
# Here (with PyPI): make the bundle the GPU check needs on a machine without
# network: the wheels its Python lacks, a wheel of this checkout, and the
# ImageNet sample images, in .whl/ at the repository's root (ignored by git;
# the device tool carries it: carry [".whl"]).
#
#   VITREG_IMAGES=DIR bench/gpu/prepare.sh            # for the GPU machine's Python 3.12
#   VITREG_IMAGES=DIR VITREG_BUNDLE=/tmp/b bench/gpu/prepare.sh 3.11   # for a test here
#
# DIR: a folder of ImageNet JPEGs (*.JPEG; a synsets.txt beside it labels them).
#
# The GPU machine's Python has torch, timm, numpy, pillow, pyyaml, packaging,
# typing-extensions, rich, click, scikit-image/learn, matplotlib, xarray and
# fsspec (/work/.library/device/KINDS.md), not what is listed below.
set -euo pipefail
cd "$(dirname "$0")/../.."
pyver=${1:-3.12}
bundle=${VITREG_BUNDLE:-.whl}
images=${VITREG_IMAGES:?set VITREG_IMAGES to a folder of ImageNet *.JPEG files}
python=${PYTHON:-python3}
# the versions this project is tested with
wheels=(zarr==3.1.6 numcodecs==0.16.6 google-crc32c==1.9.0 crc32c==2.9.post0 donfig==0.8.1.post1
        webdataset==1.0.2 braceexpand==0.1.7)
mkdir -p "$bundle"
rm -f "$bundle"/*.whl
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version "$pyver" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$bundle" "${wheels[@]}"
"$python" -m pip wheel --quiet --no-deps -w "$bundle" .
rm -rf "$bundle/images"
mkdir -p "$bundle/images"
cp "$images"/*.JPEG "$bundle/images/"
if [ -f "$images/../synsets.txt" ]; then install -m 644 "$images/../synsets.txt" "$bundle/"; fi
ls -l "$bundle"
du -sh "$bundle"
