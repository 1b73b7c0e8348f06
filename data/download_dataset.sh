#!/usr/bin/env bash
# Download LM-BFF's original datasets into data/original (and the published k-shot
# checksum into data/k-shot/checksum). Safe to re-run: finished steps are skipped.
# Then, from the repository root:
#   python tools/generate_k_shot_data.py && (cd data/k-shot && md5sum -c checksum)
set -euo pipefail

TAR_URL="https://nlp.cs.princeton.edu/projects/lm-bff/datasets.tar"
CHECKSUM_URL="https://raw.githubusercontent.com/princeton-nlp/LM-BFF/HEAD/data/k-shot/checksum"

cd "$(dirname "$0")"

fetch() {  # fetch URL DEST: download to DEST.part, rename only when complete
    if command -v curl >/dev/null; then
        curl -fL --retry 3 -o "$2.part" "$1"
    else
        wget -O "$2.part" "$1"
    fi
    mv "$2.part" "$2"
}

[ -f datasets.tar ] || fetch "$TAR_URL" datasets.tar

if [ ! -f original/.extracted ]; then
    rm -rf .extract && mkdir .extract
    tar -xf datasets.tar -C .extract
    # The archive holds a top-level original/ folder; accept a flat layout too.
    src=.extract; [ -d .extract/original ] && src=.extract/original
    mkdir -p original
    cp -a "$src"/. original/
    rm -rf .extract
    touch original/.extracted
fi

mkdir -p k-shot
[ -f k-shot/checksum ] || fetch "$CHECKSUM_URL" k-shot/checksum

echo "Done: $(pwd)/original (checksum: $(pwd)/k-shot/checksum)"
