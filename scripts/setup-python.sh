#!/usr/bin/env bash
# Builds and installs the `ttmem` Python package (python/: PyO3 + maturin, one abi3 wheel for
# CPython >= 3.10) into a test virtual environment, with pytest and pandas:
#   $TTMEM_PY_VENV (default target/python-venv, from the system's python3)
# and, when the ttnn cache exists (scripts/setup-ttnn.sh), into its Python 3.12 venv too, so the
# plugin can be tested against a real ttnn test suite on mock chips.
#
# The install is the README's one command, `pip install ./python`, which builds the wheel with
# maturin (a PEP 517 build backend fetched from PyPI) and cargo. Prints the venv's python on
# its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${TTMEM_PY_VENV:-$PWD/target/python-venv}
# The build backend runs `maturin` from PATH.
PYTHON=${TTMEM_PYTHON:-python3}
pip_quiet=(--quiet --disable-pip-version-check)
export PATH="$VENV/bin:$PATH"

if [[ ! -x $VENV/bin/python ]]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install "${pip_quiet[@]}" "maturin>=1.9,<2" "pytest>=7" "pandas>=1.5" "mypy>=1.10" pandas-stubs >&2
# One abi3 wheel, built once by the same PEP 517 backend `pip install ./python` uses
# (--no-build-isolation reuses the venv's maturin instead of fetching one per build), and
# installed into every venv that needs it.
wheel_dir=$(mktemp -d)
trap 'rm -rf "$wheel_dir"' EXIT
"$VENV/bin/pip" wheel "${pip_quiet[@]}" --no-build-isolation --no-deps -w "$wheel_dir" ./python >&2
"$VENV/bin/pip" install "${pip_quiet[@]}" --force-reinstall --no-deps "$wheel_dir"/ttmem-*.whl >&2

if [[ -n ${TTMEM_TTNN_HOME:-} && -x $TTMEM_TTNN_HOME/venv/bin/python ]]; then
    TTNN_PY=$TTMEM_TTNN_HOME/venv/bin/python
    "$TTNN_PY" -m pip install "${pip_quiet[@]}" "pytest>=7" >&2
    "$TTNN_PY" -m pip install "${pip_quiet[@]}" --force-reinstall --no-deps "$wheel_dir"/ttmem-*.whl >&2
fi
echo "$VENV/bin/python"
