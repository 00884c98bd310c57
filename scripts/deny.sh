#!/usr/bin/env bash
# Supply-chain check: cargo-deny (deny.toml) on licenses, bans, sources and
# advisories, offline. The RustSec database comes from a git bundle (CI has
# no network to fetch it), cloned once into target/advisory-dbs. The bundle
# is looked for at $MISSIVE_ADVISORY_DB_BUNDLE, then ../shared/ beside the
# repository (where CI's clone has it), then /work/shared/. Without one the
# advisories are skipped with a message, or fail with
# MISSIVE_REQUIRE_SERVICES=1 (CI).
set -euo pipefail
cd "$(dirname "$0")/.."

# The directory name cargo-deny derives from the default database URL
# (deny.toml's db-path is target/advisory-dbs).
db=target/advisory-dbs/advisory-db-3157b0e258782691

checks=(check)
if [ ! -d "$db/.git" ]; then
  bundle=""
  for candidate in "${MISSIVE_ADVISORY_DB_BUNDLE:-}" ../shared/advisory-db.bundle /work/shared/advisory-db.bundle; do
    if [ -n "$candidate" ] && [ -f "$candidate" ]; then
      bundle=$candidate
      break
    fi
  done
  if [ -n "$bundle" ]; then
    mkdir -p "$(dirname "$db")"
    git -c init.defaultBranch=master clone --quiet "$bundle" "$db"
  else
    echo "deny.sh: no advisory-db bundle (set MISSIVE_ADVISORY_DB_BUNDLE, or put it in ../shared/ or /work/shared/)" >&2
    if [ "${MISSIVE_REQUIRE_SERVICES:-}" = 1 ]; then
      exit 1
    fi
    echo "deny.sh: skipping the advisories; checking licenses, bans and sources" >&2
    checks=(check licenses bans sources)
  fi
fi
echo "advisory database: $(git -C "$db" log -1 --format='%h %s' 2>/dev/null || echo none)"

# cargo-deny reads the crates' manifests and licence files from the cargo
# cache: fetch them first (from the registry, as the build does).
cargo fetch --locked
cargo deny --offline "${checks[@]}"
