#!/usr/bin/env bash
# Installs what building and testing ttmem needs on a fresh Debian machine with a Rust
# toolchain: a C compiler (the C ABI test), tmux (the TUI test), Prometheus and promtool (the
# /metrics test), Alertmanager (the alerting test), systemd-analyze (the unit's check),
# Chromium (the web dashboard's test), rustfmt and clippy. Safe to run again.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux) # the ttmem top end-to-end test
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus) # a real Prometheus scrapes /metrics
command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager) # receives ttmem's alerts
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd) # verifies deploy/systemd/ttmem.service
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium) # the web dashboard's browser test
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver) # which WebDriver drives
if ((${#need_apt[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
    else
        echo "setup: please install ${need_apt[*]} (needs root)" >&2
        exit 1
    fi
fi

for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
        rustup component add "${component}"
    fi
done
