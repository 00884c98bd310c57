#!/usr/bin/env bash
# Rebuilds the browser bundle web/pkg/ (missive_web.js + missive_web_bg.wasm)
# from crates/missive-web, reproducibly: the same sources, Cargo.lock,
# toolchain and wasm-bindgen give the same bytes whatever the checkout path
# and HOME.
#
#   scripts/build-web.sh          rebuild web/pkg/ (commit the result)
#   scripts/build-web.sh --check  rebuild into a temporary directory and fail
#                                 if it differs from the committed web/pkg/
#
# Needs the wasm32-unknown-unknown target (rustup target add
# wasm32-unknown-unknown) and the wasm-bindgen CLI of exactly the version
# Cargo.lock pins for the wasm-bindgen crate (the command is printed when it
# is missing). The bundle is committed so that building missive-server needs
# none of this.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  *)
    echo "usage: scripts/build-web.sh [--check]" >&2
    exit 2
    ;;
esac

# The CLI must match the crate: wasm-bindgen refuses (or miscompiles) a
# module built against another version.
pinned=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
found=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$found" != "$pinned" ]; then
  echo "build-web: wasm-bindgen $pinned is required (Cargo.lock pins it), found: ${found:-none}." >&2
  echo "build-web: install it with: cargo install wasm-bindgen-cli --version =$pinned --locked" >&2
  exit 1
fi

# Paths that would end up in the module (panic locations) are rewritten to
# fixed ones. The flags differ from the native build's, so the wasm build
# gets its own target directory and does not invalidate target/debug.
# Crates are unpacked under $CARGO_HOME/registry/src/<index>/ (fetched first,
# so that the directories exist); each index directory becomes /crates.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo fetch --locked --target wasm32-unknown-unknown
flags=(
  "--remap-path-prefix=$cargo_home=/cargo"
  "--remap-path-prefix=$rustup_home=/rustup"
)
for index in "$cargo_home"/registry/src/*/; do
  flags+=("--remap-path-prefix=${index%/}=/crates")
done
flags+=("--remap-path-prefix=$repo=/missive")
CARGO_ENCODED_RUSTFLAGS=$(IFS=$'\x1f'; echo "${flags[*]}")
export CARGO_ENCODED_RUSTFLAGS
export CARGO_TARGET_DIR="$repo/target/web"
cargo build --locked --profile wasm-release --target wasm32-unknown-unknown -p missive-web
module="$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/missive_web.wasm"

if $check; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
else
  out="$repo/web/pkg"
  rm -rf "$out"
fi
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
  --out-dir "$out" --out-name missive_web "$module"

wasm="$out/missive_web_bg.wasm"
echo "build-web: $(wc -c < "$wasm") bytes raw, $(gzip -9 -n -c "$wasm" | wc -c) bytes gzip -9 (missive_web_bg.wasm)"

if $check; then
  if ! diff -r --brief "$out" "$repo/web/pkg"; then
    echo "build-web: web/pkg differs from a rebuild of the sources: run scripts/build-web.sh and commit web/pkg" >&2
    exit 1
  fi
  echo "build-web: web/pkg matches the sources"
fi
