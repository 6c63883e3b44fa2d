#!/usr/bin/env bash
# Is the committed viewer bundle what its committed sources make? Installs the locked npm packages
# (npm ci, no install scripts) and builds in a temporary copy, then compares the sha256 of every file
# with dashboard/viewer_component/build. Exit 0: identical; 1: different (rebuild and commit); 2: no node/npm.
set -euo pipefail
cd "$(dirname "$0")/.."
comp=dashboard/viewer_component
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "check_viewer_bundle: node and npm are needed (apt-get install nodejs npm)" >&2
  exit 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/frontend"
cp -R "$comp/frontend/package.json" "$comp/frontend/package-lock.json" "$comp/frontend/build.mjs" \
  "$comp/frontend/src" "$tmp/frontend/"
(
  cd "$tmp/frontend"
  nice -n 10 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  VIEWER_BUILD_DIR="$tmp/build" nice -n 10 node build.mjs
)
sums() { (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); }
if diff <(sums "$comp/build") <(sums "$tmp/build") >"$tmp/diff"; then
  echo "check_viewer_bundle: committed build matches its sources ($(sums "$comp/build" | wc -l) files)"
else
  echo "check_viewer_bundle: $comp/build differs from what the sources build:" >&2
  cat "$tmp/diff" >&2
  echo "rebuild with: (cd $comp/frontend && npm ci && npm run build) and commit $comp/build" >&2
  exit 1
fi
