#!/usr/bin/env bash
# Installs a regtest-capable `bitcoind` (Debian's bitcoin-knots, a Bitcoin Core derivative with
# the same bitcoind and JSON-RPC) into a private folder, for the chain-bitcoin tests.
#
#   install-bitcoind.sh DEST   prints the path of DEST/bitcoind, a wrapper that runs bitcoind
#                              (DEST/bitcoin-cli beside it)
#
# This Debian release has no Bitcoin Core package, and unstable's bitcoin-knots needs a newer
# C++ runtime. So its .deb and the newer libc6, libstdc++6, libgcc-s1, libevent and libzmq (and
# their few dependencies) from the next release are downloaded with `apt-get download` against
# a private sources.list (same mirror and keyring as the machine's own apt sources; private
# lists and cache, so the machine's apt set-up is untouched), unpacked with `dpkg-deb -x`, and
# bitcoind is started through that folder's own ld-linux with --library-path.
# Idempotent: a finished install (DEST/ok) is reused.
set -euo pipefail

dest=${1:?usage: install-bitcoind.sh DEST}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
wrapper="$dest/bitcoind"
stamp="$dest/installed-v1"
if [ -f "$stamp" ] && [ -x "$wrapper" ] && [ -x "$dest/bitcoin-cli" ]; then
  echo "$wrapper"
  exit 0
fi

fail() { echo "install-bitcoind: $*" >&2; exit 1; }
command -v apt-get >/dev/null || fail "needs apt-get (Debian) to download bitcoin-knots; or set COINSENSEI_BITCOIND to a bitcoind binary"
command -v dpkg-deb >/dev/null || fail "needs dpkg-deb"

# The machine's own Debian mirror, read from its apt sources (deb822 or one-line format).
mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
if [ -z "$mirror" ]; then
  mirror=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
fi
[ -n "$mirror" ] || fail "found no Debian mirror in /etc/apt/sources.list{,.d}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || fail "missing $keyring (package debian-archive-keyring)"

apt_dir="$dest/apt"
rm -rf "$apt_dir" "$dest/root" "$dest/debs"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$dest/debs" "$dest/root"
cat > "$apt_dir/sources.list" <<SOURCES
deb [signed-by=$keyring] $mirror trixie main
deb [signed-by=$keyring] $mirror sid main
SOURCES
# Pin: take the next release's packages, unstable's only for what trixie lacks (bitcoin-knots).
cat > "$apt_dir/preferences" <<PREFS
Package: *
Pin: release n=trixie
Pin-Priority: 600

Package: *
Pin: release n=sid
Pin-Priority: 500
PREFS
opts=(
  -o "Dir::Etc::SourceList=$apt_dir/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::Etc::Preferences=$apt_dir/preferences"
  -o "Dir::Etc::PreferencesParts=/dev/null"
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::State::Status=/dev/null"
  -o "Dir::Cache=$apt_dir/cache"
  -o "Dir::Cache::pkgcache="
  -o "Dir::Cache::srcpkgcache="
  -o "APT::Get::List-Cleanup=0"
  -o "Debug::NoLocking=1"
  -o "APT::Architecture=amd64"
  -o "APT::Architectures::=amd64"
)
apt-get "${opts[@]}" -qq update || fail "apt-get update against $mirror (trixie, sid) failed"

packages=(bitcoin-knots libc6 libstdc++6 libgcc-s1 libevent-2.1-7t64 libevent-pthreads-2.1-7t64
  libevent-core-2.1-7t64 libevent-extra-2.1-7t64 libzmq5 libsodium23 libpgm-5.3-0t64 libnorm1t64
  libbsd0 libmd0 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1
  libssl3t64 libsqlite3-0 libminiupnpc18 libnatpmp1t64 libdb5.3t64 libboost-filesystem1.83.0 zlib1g)
( cd "$dest/debs" && for p in "${packages[@]}"; do
    apt-get "${opts[@]}" -qq download "$p" >/dev/null 2>&1 || echo "install-bitcoind: note: no package $p (skipped)" >&2
  done )
ls "$dest/debs"/bitcoin-knots_*.deb >/dev/null 2>&1 || fail "could not download bitcoin-knots from $mirror sid"
for deb in "$dest/debs"/*.deb; do dpkg-deb -x "$deb" "$dest/root"; done

loader="$dest/root/usr/lib64/ld-linux-x86-64.so.2"
[ -e "$loader" ] || loader=$(ls "$dest"/root/lib*/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$dest"/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 2>/dev/null | head -n1)
[ -n "$loader" ] && [ -e "$loader" ] || fail "no ld-linux-x86-64.so.2 in the unpacked libc6"
libs="$dest/root/usr/lib/x86_64-linux-gnu:$dest/root/lib/x86_64-linux-gnu"
for program in bitcoind bitcoin-cli; do
  binary="$dest/root/usr/bin/$program"
  [ -x "$binary" ] || fail "bitcoin-knots unpacked without usr/bin/$program"
  printf '#!/bin/sh\nexec "%s" --library-path "%s" "%s" "$@"\n' "$loader" "$libs" "$binary" > "$dest/$program"
  chmod +x "$dest/$program"
done
"$wrapper" -version >/dev/null 2>"$dest/version-error" || fail "the unpacked bitcoind does not start: $(head -c 2000 "$dest/version-error")"
rm -rf "$dest/debs" "$apt_dir/cache"
touch "$stamp"
echo "$wrapper"
