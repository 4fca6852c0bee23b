#!/usr/bin/env bash
# Installs ttmem on this host: the binary, the client libraries and header, an example config,
# and the systemd unit. Run as root for the system paths; safe to run again (an existing
# config is kept).
#
#   scripts/install.sh                  # build (release) and install under /usr/local
#   scripts/install.sh --prefix /usr    # elsewhere
#   scripts/install.sh --destdir /tmp/stage --artifacts target/debug   # stage, no build (tests, packagers)
#
# Then: systemctl daemon-reload && systemctl enable --now ttmem
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
destdir=
artifacts=
sysconfdir=/etc
while (($#)); do
    case "$1" in
        --prefix) prefix=$2; shift 2 ;;
        --destdir) destdir=$2; shift 2 ;;
        --artifacts) artifacts=$2; shift 2 ;;
        --sysconfdir) sysconfdir=$2; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [[ -z $artifacts ]]; then
    cargo build --release --locked -p ttmem-cli -p ttmem-ffi -p ttmem-preload
    artifacts=target/release
fi
for f in ttmem libttmem.so libttmem.a libttmem_ttmetal.so; do
    [[ -f $artifacts/$f ]] || { echo "install.sh: $artifacts/$f is missing (build it, or drop --artifacts)" >&2; exit 1; }
done

root=${destdir%/}
install -d "$root$prefix/bin" "$root$prefix/lib" "$root$prefix/include" \
    "$root$sysconfdir/ttmem" "$root$sysconfdir/systemd/system"
install -m 0755 "$artifacts/ttmem" "$root$prefix/bin/ttmem"
install -m 0755 "$artifacts/libttmem.so" "$artifacts/libttmem_ttmetal.so" "$root$prefix/lib/"
install -m 0644 "$artifacts/libttmem.a" "$root$prefix/lib/"
install -m 0644 include/ttmem.h "$root$prefix/include/ttmem.h"
if [[ -e $root$sysconfdir/ttmem/ttmem.toml ]]; then
    echo "install.sh: keeping $root$sysconfdir/ttmem/ttmem.toml (the example is docs/ttmem.example.toml)"
else
    install -m 0644 docs/ttmem.example.toml "$root$sysconfdir/ttmem/ttmem.toml"
fi
sed -e "s|/usr/local/bin/ttmem|$prefix/bin/ttmem|" -e "s|/etc/ttmem/ttmem.toml|$sysconfdir/ttmem/ttmem.toml|" \
    deploy/systemd/ttmem.service > "$root$sysconfdir/systemd/system/ttmem.service"
chmod 0644 "$root$sysconfdir/systemd/system/ttmem.service"
echo "installed ttmem under $root$prefix; config $root$sysconfdir/ttmem/ttmem.toml"
if [[ -z $destdir ]]; then
    "$prefix/bin/ttmem" serve --check-config --config "$sysconfdir/ttmem/ttmem.toml" >/dev/null
    echo "next: systemctl daemon-reload && systemctl enable --now ttmem"
fi
