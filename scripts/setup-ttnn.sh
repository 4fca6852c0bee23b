#!/usr/bin/env bash
# Installs the real TT-Metal runtime (the `ttnn` wheel from PyPI, which bundles libtt_metal.so)
# into a cached Python 3.12 virtual environment, and builds the runtime-root overlay that lets it
# open mock chips on a machine with no Tenstorrent card (TT_METAL_MOCK_CLUSTER_DESC_PATH):
#   - runtime/sfpi/compiler/bin/riscv-tt-elf-g++: a stub that only answers --version (the real
#     RISC-V toolchain is a separate download, and mock mode never runs a device kernel);
#   - tt_metal/pre-compiled/<key>: links from the firmware build keys mock mode asks for to the
#     pre-compiled firmware the wheel ships for the same architecture (tests/ttmetal derive a
#     key that is missing from the failed open's log and add the link).
# Safe to run again: a complete cache is reused (a second run takes well under a second).
#
#   TTMEM_TTNN_HOME   the cache (default ~/.cache/ttmem/ttnn-0.81.1): venv/ and rtroot/ inside
#
# Prints the cache directory on its last line. Exits 3 when no Python 3.12 can be found (the
# wheel exists for CPython 3.10 and 3.12 only), so callers can say why the real-runtime tests
# could not run.
set -euo pipefail
VERSION=0.81.1
HOME_DIR=${TTMEM_TTNN_HOME:-${HOME}/.cache/ttmem/ttnn-${VERSION}}
VENV=$HOME_DIR/venv
RT=$HOME_DIR/rtroot

if [[ -f $HOME_DIR/.complete ]] && "$VENV/bin/python" -c 'import ttnn' >/dev/null 2>&1; then
    echo "$HOME_DIR"
    exit 0
fi

python=""
for candidate in \
    "$( (pyenv root 2>/dev/null || echo "$HOME/.pyenv") )"/versions/3.12*/bin/python3.12 \
    "$(command -v python3.12 || true)"; do
    if [[ -x $candidate ]]; then
        python=$candidate
        break
    fi
done
if [[ -z $python ]]; then
    echo "setup-ttnn: no Python 3.12 (pyenv or python3.12 on PATH); ttnn $VERSION needs it" >&2
    exit 3
fi

rm -rf "$HOME_DIR"
mkdir -p "$HOME_DIR"
"$python" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "ttnn==$VERSION"

PKG=$("$VENV/bin/python" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("ttnn").origin))')
mkdir -p "$RT/tt_metal/pre-compiled" "$RT/runtime/sfpi/compiler/bin" "$RT/runtime/sfpi/include"
# The overlay mirrors the package by links, replacing only what mock mode needs replaced.
for entry in "$PKG"/*; do
    name=$(basename "$entry")
    [[ $name == tt_metal || $name == runtime ]] || ln -s "$entry" "$RT/$name"
done
for entry in "$PKG"/tt_metal/*; do
    name=$(basename "$entry")
    [[ $name == pre-compiled ]] || ln -s "$entry" "$RT/tt_metal/$name"
done
for entry in "$PKG"/runtime/*; do
    name=$(basename "$entry")
    [[ $name == sfpi ]] || ln -s "$entry" "$RT/runtime/$name"
done
for entry in "$PKG"/tt_metal/pre-compiled/*; do
    ln -s "$entry" "$RT/tt_metal/pre-compiled/$(basename "$entry")"
done
cat >"$RT/runtime/sfpi/compiler/bin/riscv-tt-elf-g++" <<'STUB'
#!/bin/sh
# Not a compiler: answers the toolchain's version probe, which opening a device makes.
if [ "$1" = "--version" ]; then
    echo "riscv-tt-elf-g++ (ttmem mock-mode stub) 15.1.0"
    exit 0
fi
echo "riscv-tt-elf-g++ stub: mock mode cannot compile device code ($*)" >&2
exit 1
STUB
chmod +x "$RT/runtime/sfpi/compiler/bin/riscv-tt-elf-g++"
touch "$HOME_DIR/.complete"
echo "$HOME_DIR"
