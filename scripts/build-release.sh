#!/bin/sh
# Builds the static k3rs release binaries into dist/:
#   k3rs-amd64  x86_64-unknown-linux-musl        cargo + musl-gcc (Debian musl-tools)
#   k3rs-arm64  aarch64-unknown-linux-musl       cargo zigbuild (zig from PyPI ziglang)
#   k3rs-armhf  armv7-unknown-linux-musleabihf   cargo zigbuild; when rustup cannot download
#               that target's standard library, it is built from the rust-src component
#               (-Z build-std, allowed on stable with RUSTC_BOOTSTRAP=1) and zig supplies musl
# each with sha256sum-<arch>.txt next to it, in the size-tuned `dist` profile (Cargo.toml).
# The version (`k3rs --version`) carries `git describe` of the checkout.
#
# Usage: scripts/build-release.sh [amd64|arm64|armhf]...     (default: all three)
# Environment:
#   K3RS_DIST_DIR            output folder (default: dist/ in the checkout)
#   K3RS_RELEASE_TARGET_DIR  cargo target dir for these builds (default: $CARGO_TARGET_DIR,
#                            else target/)
#   K3RS_NICE                niceness of the builds (default 10: they are long and heavy)
#
# Needs: cargo, rustup, musl-gcc, cargo-zigbuild and zig (`pip install ziglang`); .ci/run
# installs them. A missing tool stops the build with the command that installs it.
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)

dist=${K3RS_DIST_DIR:-${repo}/dist}
target_dir=${K3RS_RELEASE_TARGET_DIR:-${CARGO_TARGET_DIR:-${repo}/target}}
nice_level=${K3RS_NICE:-10}
profile=dist

fail() {
    echo "build-release.sh: $*" >&2
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || fail "$1 is not on PATH; $2"
}

need cargo "install Rust from https://rustup.rs"
need rustup "install Rust from https://rustup.rs"

installed_targets=$(rustup target list --installed)
has_target() {
    printf '%s\n' "${installed_targets}" | grep -qx "$1"
}
need_target() {
    has_target "$1" || fail "the Rust target $1 is missing; run: rustup target add $1"
}
need_zig() {
    need cargo-zigbuild "run: cargo install --locked cargo-zigbuild"
    if ! command -v zig >/dev/null 2>&1 && ! python3 -m ziglang version >/dev/null 2>&1; then
        fail "zig is missing; run: pip install ziglang"
    fi
}

K3RS_GIT_COMMIT=$(git describe --tags --always --dirty 2>/dev/null || echo unknown)
export K3RS_GIT_COMMIT
export CARGO_TARGET_DIR="${target_dir}"

# build <arch> <rust target> <cargo subcommand> [extra cargo args...]
build() {
    arch=$1
    triple=$2
    shift 2
    echo "==> k3rs-${arch}: ${triple} ($*)"
    start=$(date +%s)
    nice -n "${nice_level}" cargo "$@" --locked --profile "${profile}" --target "${triple}" --bin k3rs
    end=$(date +%s)
    mkdir -p "${dist}"
    cp "${target_dir}/${triple}/${profile}/k3rs" "${dist}/k3rs-${arch}"
    (cd "${dist}" && sha256sum "k3rs-${arch}" >"sha256sum-${arch}.txt")
    size=$(wc -c <"${dist}/k3rs-${arch}")
    echo "==> k3rs-${arch}: $((end - start))s, ${size} bytes, $(cut -c1-16 "${dist}/sha256sum-${arch}.txt")..."
}

build_amd64() {
    need musl-gcc "run: apt-get install musl-tools"
    need_target x86_64-unknown-linux-musl
    (
        export CC_x86_64_unknown_linux_musl=musl-gcc
        build amd64 x86_64-unknown-linux-musl build
    )
}

build_arm64() {
    need_zig
    need_target aarch64-unknown-linux-musl
    build arm64 aarch64-unknown-linux-musl zigbuild
}

build_armhf() {
    need_zig
    triple=armv7-unknown-linux-musleabihf
    if has_target "${triple}"; then
        build armhf "${triple}" zigbuild
        return
    fi
    sysroot=$(rustc --print sysroot)
    [ -d "${sysroot}/lib/rustlib/src/rust/library" ] ||
        fail "the Rust target ${triple} is missing; run: rustup target add ${triple} (or, when its download fails: rustup component add rust-src)"
    echo "==> ${triple}: no prebuilt standard library; building it from rust-src"
    # Without a prebuilt std there are no self-contained crt objects: zig's musl provides
    # crt1.o, libc and libunwind.
    (
        export RUSTC_BOOTSTRAP=1
        export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_RUSTFLAGS="-C link-self-contained=no"
        build armhf "${triple}" zigbuild -Z build-std=std,panic_unwind
    )
}

arches=${*:-amd64 arm64 armhf}
for a in ${arches}; do
    case "${a}" in
        amd64) build_amd64 ;;
        arm64) build_arm64 ;;
        armhf) build_armhf ;;
        *) fail "unknown architecture ${a} (amd64, arm64 or armhf)" ;;
    esac
done
echo "==> dist: ${dist}"
ls -l "${dist}"
