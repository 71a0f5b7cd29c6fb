#!/usr/bin/env bash
# The release binary on AWS-LC's FIPS module (README "FIPS build"): installs cmake and
# Go from Debian's packages when missing (aws-lc-fips-sys runs a CMake build whose Go
# tools place the module and inject its integrity hash), builds
# `cargo build --release --no-default-features --features fips`, then prints
# `directmail --version` and fails unless it names the FIPS module (AWS-LC's
# FIPS_mode() is 1). Not part of scripts/test.sh or CI: a cold build takes about
# 13 minutes on 2 cores. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root (or sudo) to install: $*" >&2; return 1; fi
}

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v go >/dev/null || missing+=(golang-go)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]} from Debian's packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "==> $(cmake --version | head -n1), $(go version)"

start=$(date +%s)
cargo build --locked --release --no-default-features --features fips
echo "==> built in $(($(date +%s) - start)) s"

bin="${CARGO_TARGET_DIR:-target}/release/directmail"
version=$("$bin" --version)
echo "$version"
case "$version" in
  *"(FIPS 140-3 module"*) ;;
  *) echo "the binary does not run in FIPS mode" >&2; exit 1 ;;
esac
