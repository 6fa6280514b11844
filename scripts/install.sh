#!/bin/sh
# k3rs installer: downloads (or builds) the k3rs binary, verifies it, installs the container
# runtime it needs, writes a systemd unit (or an OpenRC script), starts it, and leaves
# k3rs-killall.sh and k3rs-uninstall.sh behind. POSIX sh; k3s's conventions with K3RS names.
#
# Usage:
#   curl -sfL https://get.k3rs.dev | sh -                              # a server
#   curl -sfL https://get.k3rs.dev | K3RS_URL=https://server:6443 K3RS_TOKEN=... sh -   # an agent
#   curl -sfL https://get.k3rs.dev | sh -s - server --tls-san k3rs.example.com
#   scripts/install.sh        # from a source checkout: build it, then install that binary
#
# Environment:
#   K3RS_*                      Written to the service's environment file (mode 0600) for
#                               k3rs to read, with CONTAINERD_* and the proxy variables.
#   K3RS_URL                    The server to join. Makes the default command `agent` and
#                               needs K3RS_TOKEN or K3RS_TOKEN_FILE. Must be https://.
#   K3RS_TOKEN, K3RS_TOKEN_FILE The join token (or the file holding it).
#   K3RS_NODE_NAME              The node name (default: the hostname).
#   K3RS_KUBECONFIG_MODE        Mode of the admin kubeconfig the server writes (default 0600).
#   K3RS_DATA_DIR               k3rs's data dir (default /var/lib/k3rs); the uninstall script
#                               removes it.
#   INSTALL_K3RS_EXEC           The command and flags of the service ("server --tls-san x",
#                               or just flags). Arguments after `sh -s -` are appended.
#   INSTALL_K3RS_VERSION        The release to install (default: the channel's newest).
#   INSTALL_K3RS_CHANNEL        The release channel (default: stable).
#   INSTALL_K3RS_CHANNEL_URL    Where channels are resolved
#                               (default: https://update.k3rs.dev/v1-release/channels).
#   INSTALL_K3RS_DOWNLOAD_URL   Base URL of the releases, for mirrors and tests: the files
#                               are fetched from <url>/<version>/k3rs-<arch> and
#                               <url>/<version>/sha256sum-<arch>.txt
#                               (default: https://github.com/k3rs-dev/k3rs/releases/download).
#   INSTALL_K3RS_SKIP_DOWNLOAD  true: use the k3rs binary already in the bin dir (airgap).
#   INSTALL_K3RS_SOURCE_DIR     Build this k3rs checkout with cargo and install the result.
#                               The default when this script is run from a checkout and no
#                               version or download URL is given.
#   INSTALL_K3RS_SKIP_BUILD     true: with a source checkout, install the binary cargo built
#                               already (for `sudo`, whose PATH often has no cargo).
#   INSTALL_K3RS_SKIP_DEPS      true: do not install containerd, runc and nftables.
#   INSTALL_K3RS_SKIP_ENABLE    true: do not enable (nor start) the service.
#   INSTALL_K3RS_SKIP_START     true: do not start the service.
#   INSTALL_K3RS_FORCE_RESTART  true: restart the service even when nothing changed.
#   INSTALL_K3RS_BIN_DIR        Where the binary and scripts go (default /usr/local/bin).
#   INSTALL_K3RS_SYSTEMD_DIR    Where the unit and its env file go (default /etc/systemd/system).
#   INSTALL_K3RS_NAME           Service name suffix: k3rs-<name> (default: k3rs for a server,
#                               k3rs-agent for an agent).
#   INSTALL_K3RS_SYMLINK        skip: no kubectl/ctr symlinks; force: replace existing ones
#                               (default: create them where no such command is on PATH).
#   INSTALL_K3RS_INIT           systemd, openrc or none (default: detected).
#   INSTALL_K3RS_ROOT           Write every file under this directory instead of / (tests,
#                               image builds). Commands (systemctl, package managers) still
#                               run on this host, and PATH is used as given; the generated
#                               killall script only prints what it would kill and delete.
#
# Re-running upgrades in place: the service restarts only when the binary, unit or
# environment file changed.

set -e
set -o noglob

DOWNLOAD_URL=${INSTALL_K3RS_DOWNLOAD_URL:-https://github.com/k3rs-dev/k3rs/releases/download}
CHANNEL_URL=${INSTALL_K3RS_CHANNEL_URL:-https://update.k3rs.dev/v1-release/channels}
CHANNEL=${INSTALL_K3RS_CHANNEL:-stable}
ROOT=${INSTALL_K3RS_ROOT%/}

info() {
    echo "[INFO]  $*"
}
warn() {
    echo "[WARN]  $*" >&2
}
fatal() {
    echo "[ERROR] $*" >&2
    exit 1
}

# A path as written on this machine: under INSTALL_K3RS_ROOT when set.
r() {
    printf '%s%s' "${ROOT}" "$1"
}

# One shell word in single quotes.
sq() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# --- the command line of the service ---------------------------------------------------------

setup_env() {
    # The generated scripts remember the root: it must not depend on the current directory.
    case "${ROOT}" in
        "" | /*) ;;
        *) ROOT=$(cd "${ROOT}" && pwd) || fatal "INSTALL_K3RS_ROOT=${INSTALL_K3RS_ROOT} is not a directory" ;;
    esac
    case "$1" in
        -* | "")
            if [ -z "${K3RS_URL}" ]; then
                CMD_K3RS=server
            else
                if [ -z "${K3RS_TOKEN}" ] && [ -z "${K3RS_TOKEN_FILE}" ]; then
                    fatal "K3RS_URL is set, so k3rs would run as an agent, but neither K3RS_TOKEN nor K3RS_TOKEN_FILE is set. Get the token from the server's /var/lib/k3rs/server/token."
                fi
                CMD_K3RS=agent
            fi
            ;;
        *)
            CMD_K3RS=$1
            shift
            ;;
    esac
    case "${CMD_K3RS}" in
        server | agent) ;;
        *) fatal "Unknown k3rs command '${CMD_K3RS}': the service runs 'server' or 'agent'" ;;
    esac
    case "${K3RS_URL}" in
        "" | https://*) ;;
        *) fatal "Only https:// URLs are supported for K3RS_URL (have ${K3RS_URL})" ;;
    esac
    # The arguments, one per line (none may hold a quote or newline: see check_arg).
    EXEC_ARGS=
    for arg in "$@"; do
        check_arg "${arg}"
        EXEC_ARGS="${EXEC_ARGS}${arg}
"
    done

    if [ -n "${INSTALL_K3RS_NAME}" ]; then
        SYSTEM_NAME=k3rs-${INSTALL_K3RS_NAME}
    elif [ "${CMD_K3RS}" = server ]; then
        SYSTEM_NAME=k3rs
    else
        SYSTEM_NAME=k3rs-${CMD_K3RS}
    fi
    case "${SYSTEM_NAME}" in
        *[!A-Za-z0-9_.-]*) fatal "Invalid characters in the service name '${SYSTEM_NAME}' (letters, digits, '.', '_' and '-' only)" ;;
    esac

    SUDO=sudo
    if [ "$(id -u)" -eq 0 ] || [ -n "${ROOT}" ]; then
        SUDO=
    fi
    if [ -n "${SUDO}" ] && ! command -v sudo >/dev/null 2>&1; then
        fatal "Run the installer as root (sudo is not available)"
    fi
    # nft and runc live in sbin, which a user's PATH often lacks.
    if [ -z "${ROOT}" ]; then
        PATH=${PATH}:/usr/local/sbin:/usr/sbin:/sbin
    fi

    BIN_DIR=${INSTALL_K3RS_BIN_DIR:-/usr/local/bin}
    SYSTEMD_DIR=${INSTALL_K3RS_SYSTEMD_DIR:-/etc/systemd/system}
    DATA_DIR=${K3RS_DATA_DIR:-/var/lib/k3rs}
    KILLALL_SH=${BIN_DIR}/k3rs-killall.sh
    UNINSTALL_SH=${BIN_DIR}/${SYSTEM_NAME}-uninstall.sh

    INIT=${INSTALL_K3RS_INIT:-}
    if [ -z "${INIT}" ]; then
        if [ -x /sbin/openrc-run ]; then
            INIT=openrc
        elif command -v systemctl >/dev/null 2>&1; then
            INIT=systemd
        else
            INIT=none
        fi
    fi
    case "${INIT}" in
        systemd)
            FILE_SERVICE=${SYSTEMD_DIR}/${SYSTEM_NAME}.service
            FILE_ENV=${SYSTEMD_DIR}/${SYSTEM_NAME}.service.env
            ;;
        openrc)
            FILE_SERVICE=/etc/init.d/${SYSTEM_NAME}
            FILE_ENV=/etc/k3rs/${SYSTEM_NAME}.env
            ;;
        none)
            FILE_SERVICE=
            FILE_ENV=/etc/k3rs/${SYSTEM_NAME}.env
            ;;
        *) fatal "INSTALL_K3RS_INIT must be systemd, openrc or none (have ${INIT})" ;;
    esac

    PRE_INSTALL_HASHES=$(installed_hashes)
}

# A service argument must survive the unit file's and the OpenRC script's quoting.
check_arg() {
    case "$1" in
        *"'"* | *'
'*) fatal "Argument $1 contains a quote or newline, which the service file cannot hold; put it in /etc/k3rs/config.yaml instead" ;;
    esac
}

# The arguments for an ExecStart= line: systemd expands %, $ and backslashes even in quotes.
systemd_args() {
    printf '%s' "${EXEC_ARGS}" | while IFS= read -r arg; do
        case "${arg}" in
            '' | *[!A-Za-z0-9_./:=,@+-]*)
                printf " '%s'" "$(printf '%s' "${arg}" | sed -e 's/\\/\\\\/g' -e 's/%/%%/g' -e 's/\$/$$/g')"
                ;;
            *) printf ' %s' "${arg}" ;;
        esac
    done
}

# The arguments for OpenRC's command_args="...": shell words inside double quotes.
openrc_args() {
    printf '%s' "${EXEC_ARGS}" | while IFS= read -r arg; do
        printf ' %s' "$(sq "${arg}" | sed -e 's/[\\"$`]/\\&/g')"
    done
}

# --- what is installed now ---------------------------------------------------------------------

installed_hashes() {
    for f in "${BIN_DIR}/k3rs" "${FILE_SERVICE}" "${FILE_ENV}"; do
        [ -n "${f}" ] || continue
        if [ -f "$(r "${f}")" ]; then
            $SUDO sha256sum "$(r "${f}")"
        else
            echo "absent ${f}"
        fi
    done
}

# --- download or build ---------------------------------------------------------------------------

setup_tmp() {
    TMP_DIR=$(mktemp -d -t k3rs-install.XXXXXXXXXX)
    TMP_HASH=${TMP_DIR}/k3rs.hash
    TMP_BIN=${TMP_DIR}/k3rs.bin
    cleanup() {
        code=$?
        set +e
        trap - EXIT
        rm -rf "${TMP_DIR}"
        exit "${code}"
    }
    trap cleanup INT EXIT
}

setup_verify_arch() {
    machine=$(uname -m)
    case "${machine}" in
        amd64 | x86_64) ARCH=amd64 ;;
        arm64 | aarch64) ARCH=arm64 ;;
        armv7* | armv8l | armhf) ARCH=armhf ;;
        armv6* | armv5*) fatal "Unsupported architecture ${machine}: k3rs needs ARMv7 or newer (a Raspberry Pi 2 or later)" ;;
        *) fatal "Unsupported architecture ${machine}" ;;
    esac
}

verify_downloader() {
    if command -v curl >/dev/null 2>&1; then
        DOWNLOADER=curl
    elif command -v wget >/dev/null 2>&1; then
        DOWNLOADER=wget
    else
        fatal "Cannot find curl or wget for downloading files"
    fi
}

download() {
    case "${DOWNLOADER}" in
        curl) curl -o "$1" -sfL "$2" || fatal "Download failed: $2" ;;
        wget) wget -qO "$1" "$2" || fatal "Download failed: $2" ;;
    esac
}

get_release_version() {
    if [ -n "${INSTALL_K3RS_VERSION}" ]; then
        VERSION_K3RS=${INSTALL_K3RS_VERSION}
    else
        info "Finding release for channel ${CHANNEL}"
        version_url=${CHANNEL_URL}/${CHANNEL}
        case "${DOWNLOADER}" in
            curl) VERSION_K3RS=$(curl -w '%{url_effective}' -L -s -S "${version_url}" -o /dev/null | sed -e 's|.*/||') ;;
            wget) VERSION_K3RS=$(wget -SqO /dev/null "${version_url}" 2>&1 | grep -i Location | sed -e 's|.*/||') ;;
        esac
        [ -n "${VERSION_K3RS}" ] || fatal "Cannot find the release of channel ${CHANNEL} at ${version_url}; set INSTALL_K3RS_VERSION"
    fi
    info "Using ${VERSION_K3RS} as release"
}

download_hash() {
    HASH_URL=${DOWNLOAD_URL}/${VERSION_K3RS}/sha256sum-${ARCH}.txt
    info "Downloading hash ${HASH_URL}"
    download "${TMP_HASH}" "${HASH_URL}"
    HASH_EXPECTED=$(awk -v f="k3rs-${ARCH}" '$2 == f || $2 == "*" f { print $1; exit }' "${TMP_HASH}")
    case "${HASH_EXPECTED}" in
        "") fatal "No hash for k3rs-${ARCH} in ${HASH_URL}" ;;
        *[!0-9a-f]*) fatal "The hash for k3rs-${ARCH} in ${HASH_URL} is not a sha256" ;;
    esac
}

installed_hash_matches() {
    installed=$(r "${BIN_DIR}/k3rs")
    [ -x "${installed}" ] || return 1
    hash_installed=$(sha256sum "${installed}")
    [ "${HASH_EXPECTED}" = "${hash_installed%%[[:blank:]]*}" ]
}

download_binary() {
    BIN_URL=${DOWNLOAD_URL}/${VERSION_K3RS}/k3rs-${ARCH}
    info "Downloading binary ${BIN_URL}"
    download "${TMP_BIN}" "${BIN_URL}"
}

verify_binary() {
    info "Verifying binary download"
    hash_bin=$(sha256sum "${TMP_BIN}")
    hash_bin=${hash_bin%%[[:blank:]]*}
    if [ "${HASH_EXPECTED}" != "${hash_bin}" ]; then
        fatal "Download sha256 does not match ${HASH_EXPECTED}, got ${hash_bin}"
    fi
}

# Installs $1 as $3 with mode $2, only when the content or mode differ, so a re-run leaves
# an unchanged file alone. The copy is renamed into place: a running binary is replaced, not
# overwritten.
put_file() {
    dest=$(r "$3")
    if [ -f "${dest}" ] && $SUDO cmp -s "$1" "${dest}"; then
        $SUDO chmod "$2" "${dest}"
        return
    fi
    $SUDO mkdir -p "$(dirname "${dest}")"
    $SUDO cp "$1" "${dest}.k3rs-new"
    $SUDO chmod "$2" "${dest}.k3rs-new"
    $SUDO mv -f "${dest}.k3rs-new" "${dest}"
}

setup_binary() {
    info "Installing k3rs to ${BIN_DIR}/k3rs"
    put_file "${TMP_BIN}" 0755 "${BIN_DIR}/k3rs"
}

# The checkout this script belongs to, when run as scripts/install.sh of a k3rs checkout.
source_checkout() {
    case "$0" in
        */install.sh) dir=$(cd "$(dirname "$0")/.." 2>/dev/null && pwd) || return 1 ;;
        *) return 1 ;;
    esac
    [ -f "${dir}/Cargo.toml" ] && grep -q '^name = "k3rs"' "${dir}/Cargo.toml" && echo "${dir}"
}

build_from_source() {
    src=$1
    target_dir=${CARGO_TARGET_DIR:-${src}/target}
    case "${target_dir}" in
        /*) ;;
        *) target_dir=${src}/${target_dir} ;;
    esac
    if [ "${INSTALL_K3RS_SKIP_BUILD}" != true ]; then
        command -v cargo >/dev/null 2>&1 || fatal "cargo is not on PATH. Install Rust (https://rustup.rs), or build first with 'cargo build --release' and run the installer with INSTALL_K3RS_SKIP_BUILD=true (sudo resets PATH)"
        info "Building k3rs from ${src} (cargo build --release)"
        (cd "${src}" && cargo build --release --locked --bin k3rs) || fatal "cargo build failed"
    fi
    built=${target_dir}/release/k3rs
    [ -x "${built}" ] || fatal "No binary at ${built}; run 'cargo build --release' in ${src}"
    cp "${built}" "${TMP_BIN}"
    setup_binary
}

download_and_verify() {
    if [ "${INSTALL_K3RS_SKIP_DOWNLOAD}" = true ]; then
        info "Skipping k3rs download and verify"
        [ -x "$(r "${BIN_DIR}/k3rs")" ] || fatal "Executable k3rs binary not found at ${BIN_DIR}/k3rs (INSTALL_K3RS_SKIP_DOWNLOAD=true installs the binary already there)"
        return
    fi
    src=${INSTALL_K3RS_SOURCE_DIR:-}
    if [ -z "${src}" ] && [ -z "${INSTALL_K3RS_VERSION}" ] && [ -z "${INSTALL_K3RS_DOWNLOAD_URL}" ]; then
        src=$(source_checkout) || src=
    fi
    if [ -n "${src}" ]; then
        build_from_source "${src}"
        return
    fi
    setup_verify_arch
    verify_downloader
    get_release_version
    download_hash
    if installed_hash_matches; then
        info "Skipping binary download, installed k3rs matches hash"
        return
    fi
    download_binary
    verify_binary
    setup_binary
}

# --- dependencies ----------------------------------------------------------------------------------

install_dependencies() {
    if [ "${INSTALL_K3RS_SKIP_DEPS}" = true ]; then
        info "Skipping containerd, runc and nftables (INSTALL_K3RS_SKIP_DEPS=true)"
        return
    fi
    missing=
    command -v containerd >/dev/null 2>&1 || missing="${missing} containerd"
    command -v runc >/dev/null 2>&1 || missing="${missing} runc"
    command -v nft >/dev/null 2>&1 || missing="${missing} nftables"
    if [ -z "${missing}" ]; then
        return
    fi
    info "Installing${missing}"
    # shellcheck disable=SC2086 # the package list is meant to be split
    if command -v apt-get >/dev/null 2>&1; then
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q ${missing}
    elif command -v dnf >/dev/null 2>&1; then
        $SUDO dnf install -y ${missing}
    elif command -v yum >/dev/null 2>&1; then
        $SUDO yum install -y ${missing}
    elif command -v apk >/dev/null 2>&1; then
        $SUDO apk add --no-cache ${missing}
    elif command -v zypper >/dev/null 2>&1; then
        $SUDO zypper --non-interactive install ${missing}
    else
        fatal "Cannot install${missing}: no apt-get, dnf, yum, apk or zypper here. Install them with your package manager and run the installer again, or set INSTALL_K3RS_SKIP_DEPS=true to install k3rs without them"
    fi
}

check_memory_cgroup() {
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        grep -qw memory /sys/fs/cgroup/cgroup.controllers && return
    elif [ -f /proc/cgroups ]; then
        awk '$1 == "memory" && $4 == "1" { found = 1 } END { exit !found }' /proc/cgroups && return
    else
        return
    fi
    warn 'Failed to find memory cgroup, you may need to add "cgroup_memory=1 cgroup_enable=memory" to your linux cmdline (/boot/firmware/cmdline.txt on a Raspberry Pi, /boot/cmdline.txt on older releases); run "k3rs check-config" for every check'
}

# --- files -----------------------------------------------------------------------------------------

create_symlinks() {
    [ "${INSTALL_K3RS_SYMLINK}" = skip ] && return
    for cmd in kubectl ctr; do
        link=$(r "${BIN_DIR}/${cmd}")
        if [ -e "${link}" ] || [ -L "${link}" ]; then
            if [ "${INSTALL_K3RS_SYMLINK}" != force ]; then
                info "Skipping ${BIN_DIR}/${cmd} symlink to k3rs, already exists"
                continue
            fi
        fi
        which_cmd=$(command -v "${cmd}" 2>/dev/null || true)
        if [ -z "${which_cmd}" ] || [ "${INSTALL_K3RS_SYMLINK}" = force ]; then
            info "Creating ${BIN_DIR}/${cmd} symlink to k3rs"
            $SUDO ln -sfn k3rs "${link}"
        else
            info "Skipping ${BIN_DIR}/${cmd} symlink to k3rs, command exists in PATH at ${which_cmd}"
        fi
    done
}

create_killall() {
    info "Creating killall script ${KILLALL_SH}"
    {
        echo '#!/bin/sh'
        echo '# k3rs-killall.sh, written by the k3rs installer: stops k3rs and every pod process, unmounts'
        echo '# what they mounted, and deletes the network devices, nftables tables and namespaces k3rs'
        echo '# made. Data on disk is kept. Run it as root.'
        echo "K3RS_ROOT=$(sq "${ROOT}")"
        echo "K3RS_SYSTEMD_DIR=$(sq "${SYSTEMD_DIR}")"
        echo "K3RS_DATA_DIR=\${K3RS_DATA_DIR:-$(sq "${DATA_DIR}")}"
        cat <<'EOF'

if [ -z "${K3RS_ROOT}" ] && [ "$(id -u)" -ne 0 ]; then
    exec sudo K3RS_DATA_DIR="${K3RS_DATA_DIR}" "$0" "$@"
fi

# Changes go through run: installed under a test root (INSTALL_K3RS_ROOT), this host is
# left alone and the script only says what it would do.
run() {
    if [ -n "${K3RS_ROOT}" ]; then
        echo "+ would run: $*"
    else
        echo "+ $*"
        "$@" || true
    fi
}

for service in "${K3RS_ROOT}${K3RS_SYSTEMD_DIR}"/k3rs*.service; do
    [ -s "${service}" ] && systemctl stop "$(basename "${service}")"
done
for service in "${K3RS_ROOT}"/etc/init.d/k3rs*; do
    [ -x "${service}" ] && rc-service "$(basename "${service}")" stop
done

pschildren() {
    ps -e -o ppid= -o pid= | awk -v p="$1" '$1 == p { print $2 }'
}

pstree() {
    for pid in "$@"; do
        echo "${pid}"
        for child in $(pschildren "${pid}"); do
            pstree "${child}"
        done
    done
}

# containerd and its shims (the pods' parents) outlive the service: KillMode=process.
k3rs_runtime() {
    ps -e -o pid= -o args= | awk -v me="$$" '$1 != me && /\/run\/k3rs\/containerd\// { print $1 }'
}

pids=$(k3rs_runtime)
if [ -n "${pids}" ]; then
    # shellcheck disable=SC2046,SC2086 # one word per pid
    run kill -9 $(pstree ${pids})
fi

# Mount points under $1, deepest first.
mounts_under() {
    awk -v p="$1" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r
}

for m in $(mounts_under /run/k3rs) $(mounts_under /run/netns/cni-); do
    run umount -f "${m}"
    run rm -rf "${m}"
done
for m in $(mounts_under "${K3RS_DATA_DIR}/agent") $(mounts_under /var/lib/kubelet/pods); do
    run umount -f "${m}"
done
[ -d /run/k3rs ] && run rm -rf /run/k3rs

if command -v ip >/dev/null 2>&1; then
    for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ { print $1 }'); do
        run ip netns delete "${ns}"
    done
    for iface in $(ip -o link show master cni0 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'); do
        run ip link delete "${iface}"
    done
    for dev in cni0 flannel.1 flannel-v6.1; do
        ip link show "${dev}" >/dev/null 2>&1 && run ip link delete "${dev}"
    done
fi

if command -v nft >/dev/null 2>&1; then
    nft list tables 2>/dev/null | awk '$1 == "table" && $3 ~ /^k3rs/ { print $2, $3 }' |
        while read -r family name; do
            run nft delete table "${family}" "${name}"
        done
fi
exit 0
EOF
    } >"${TMP_DIR}/killall"
    put_file "${TMP_DIR}/killall" 0755 "${KILLALL_SH}"
}

create_uninstall() {
    info "Creating uninstall script ${UNINSTALL_SH}"
    {
        echo '#!/bin/sh'
        echo "# ${SYSTEM_NAME}-uninstall.sh, written by the k3rs installer: stops k3rs and removes what the"
        echo '# installer wrote, /etc/k3rs and the data dir. Run it as root.'
        echo "K3RS_ROOT=$(sq "${ROOT}")"
        echo "SYSTEM_NAME=$(sq "${SYSTEM_NAME}")"
        echo "INIT=$(sq "${INIT}")"
        echo "BIN_DIR=$(sq "${BIN_DIR}")"
        echo "SYSTEMD_DIR=$(sq "${SYSTEMD_DIR}")"
        echo "FILE_SERVICE=$(sq "${FILE_SERVICE}")"
        echo "FILE_ENV=$(sq "${FILE_ENV}")"
        echo "KILLALL_SH=$(sq "${KILLALL_SH}")"
        echo "UNINSTALL_SH=$(sq "${UNINSTALL_SH}")"
        echo "K3RS_DATA_DIR=\${K3RS_DATA_DIR:-$(sq "${DATA_DIR}")}"
        cat <<'EOF'

if [ -z "${K3RS_ROOT}" ] && [ "$(id -u)" -ne 0 ]; then
    exec sudo K3RS_DATA_DIR="${K3RS_DATA_DIR}" "$0" "$@"
fi

r() {
    printf '%s%s' "${K3RS_ROOT}" "$1"
}

if [ -x "$(r "${KILLALL_SH}")" ]; then
    "$(r "${KILLALL_SH}")"
fi

case "${INIT}" in
    systemd)
        systemctl disable "${SYSTEM_NAME}" || true
        systemctl reset-failed "${SYSTEM_NAME}" || true
        systemctl daemon-reload || true
        ;;
    openrc)
        rc-update delete "${SYSTEM_NAME}" default || true
        rm -f "$(r /var/log/"${SYSTEM_NAME}".log)"
        ;;
esac

[ -n "${FILE_SERVICE}" ] && rm -f "$(r "${FILE_SERVICE}")"
rm -f "$(r "${FILE_ENV}")"

remove_uninstall() {
    rm -f "$(r "${UNINSTALL_SH}")"
}
trap remove_uninstall EXIT

if (ls "$(r "${SYSTEMD_DIR}")"/k3rs*.service || ls "$(r /etc/init.d)"/k3rs*) >/dev/null 2>&1; then
    echo "Other k3rs services are installed; keeping the k3rs binary, /etc/k3rs and ${K3RS_DATA_DIR}"
    exit 0
fi

for cmd in kubectl ctr; do
    link=$(r "${BIN_DIR}/${cmd}")
    if [ -L "${link}" ] && [ "$(readlink "${link}")" = k3rs ]; then
        rm -f "${link}"
    fi
done

# Removes a directory, going around anything still mounted below it.
clean_mounted_directory() {
    if ! grep -q " $1" /proc/mounts; then
        rm -rf "$1"
        return 0
    fi
    for path in "$1"/*; do
        if [ -d "${path}" ]; then
            if grep -q " ${path}" /proc/mounts; then
                clean_mounted_directory "${path}"
            else
                rm -rf "${path}"
            fi
        else
            rm -f "${path}"
        fi
    done
}

case "${K3RS_DATA_DIR}" in
    /?*) ;;
    *)
        echo "Refusing to remove the data dir '${K3RS_DATA_DIR}': not an absolute path below /" >&2
        exit 1
        ;;
esac
rm -rf "$(r /etc/k3rs)" "$(r /run/k3rs)"
clean_mounted_directory "$(r "${K3RS_DATA_DIR}")"
rm -f "$(r "${BIN_DIR}/k3rs")" "$(r "${KILLALL_SH}")"
echo "k3rs is uninstalled"
EOF
    } >"${TMP_DIR}/uninstall"
    put_file "${TMP_DIR}/uninstall" 0755 "${UNINSTALL_SH}"
}

# K3RS_*, CONTAINERD_* and the proxy settings of this environment, for the service.
create_env_file() {
    info "env: Creating environment file ${FILE_ENV}"
    : >"${TMP_DIR}/env"
    names=$({
        env | grep -E '^(K3RS|CONTAINERD)_[A-Za-z0-9_]*=' || true
        env | grep -Ei '^(NO|HTTP|HTTPS)_PROXY=' || true
    } | cut -d= -f1 | sort -u)
    for name in ${names}; do
        case "${name}" in
            *[!A-Za-z0-9_]*) continue ;;
        esac
        value=
        eval "value=\${${name}}"
        case "${value}" in
            *"'"* | *'
'*) fatal "${name} contains a quote or newline, which the environment file cannot hold" ;;
        esac
        printf "%s='%s'\n" "${name}" "${value}" >>"${TMP_DIR}/env"
    done
    put_file "${TMP_DIR}/env" 0600 "${FILE_ENV}"
}

create_systemd_service_file() {
    info "systemd: Creating service file ${FILE_SERVICE}"
    if [ "${CMD_K3RS}" = server ]; then
        description="k3rs: lightweight Kubernetes"
    else
        description="k3rs: lightweight Kubernetes (${CMD_K3RS})"
    fi
    cat >"${TMP_DIR}/service" <<EOF
[Unit]
Description=${description}
Documentation=https://github.com/k3rs-dev/k3rs
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-${FILE_ENV}
# Stopping the service leaves the pods running; k3rs-killall.sh stops them too.
KillMode=process
Delegate=yes
User=root
# Limits other than infinity cost accounting overhead in the kernel; pods get their own.
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStartPre=-/sbin/modprobe vxlan
ExecStart=${BIN_DIR}/k3rs ${CMD_K3RS}$(systemd_args)
EOF
    put_file "${TMP_DIR}/service" 0644 "${FILE_SERVICE}"
}

create_openrc_service_file() {
    info "openrc: Creating service file ${FILE_SERVICE}"
    cat >"${TMP_DIR}/service" <<EOF
#!/sbin/openrc-run
# shellcheck shell=sh disable=SC1091,SC2034
# ${SYSTEM_NAME}, written by the k3rs installer.

description="k3rs: lightweight Kubernetes"

depend() {
    after network-online
    want cgroups
}

start_pre() {
    for m in br_netfilter overlay vxlan; do
        modprobe "\${m}" 2>/dev/null || true
    done
}

supervisor=supervise-daemon
name=${SYSTEM_NAME}
command="${BIN_DIR}/k3rs"
command_args="${CMD_K3RS}$(openrc_args)"
output_log="/var/log/${SYSTEM_NAME}.log"
error_log="/var/log/${SYSTEM_NAME}.log"
pidfile="/var/run/${SYSTEM_NAME}.pid"
respawn_delay=5
respawn_max=0
rc_ulimit="-n 1048576"

set -o allexport
if [ -f /etc/environment ]; then . /etc/environment; fi
if [ -f ${FILE_ENV} ]; then . ${FILE_ENV}; fi
set +o allexport
EOF
    put_file "${TMP_DIR}/service" 0755 "${FILE_SERVICE}"
}

# --- start -----------------------------------------------------------------------------------------

service_enable_and_start() {
    post_install_hashes=$(installed_hashes)
    changed=true
    if [ "${PRE_INSTALL_HASHES}" = "${post_install_hashes}" ] && [ "${INSTALL_K3RS_FORCE_RESTART}" != true ]; then
        changed=false
    fi
    case "${INIT}" in
        none)
            info "No systemd or OpenRC found: start k3rs by hand, as root:"
            info "  set -a; . ${FILE_ENV}; set +a; nohup ${BIN_DIR}/k3rs ${CMD_K3RS}$(openrc_args) >/var/log/${SYSTEM_NAME}.log 2>&1 &"
            return
            ;;
    esac
    if [ "${INSTALL_K3RS_SKIP_ENABLE}" = true ]; then
        info "Skipping enabling and starting ${SYSTEM_NAME} (INSTALL_K3RS_SKIP_ENABLE=true)"
        return
    fi
    case "${INIT}" in
        systemd)
            if [ "${changed}" = true ]; then
                $SUDO systemctl daemon-reload >/dev/null
            fi
            info "systemd: Enabling ${SYSTEM_NAME} unit"
            $SUDO systemctl enable "${SYSTEM_NAME}.service" >/dev/null 2>&1
            ;;
        openrc)
            info "openrc: Enabling ${SYSTEM_NAME} service for default runlevel"
            $SUDO rc-update add "${SYSTEM_NAME}" default >/dev/null
            ;;
    esac
    if [ "${INSTALL_K3RS_SKIP_START}" = true ]; then
        info "Skipping start of ${SYSTEM_NAME} (INSTALL_K3RS_SKIP_START=true)"
        return
    fi
    if [ "${changed}" = false ]; then
        info "No change detected so skipping service start"
        return
    fi
    case "${INIT}" in
        systemd)
            info "systemd: Starting ${SYSTEM_NAME}"
            $SUDO systemctl restart "${SYSTEM_NAME}.service"
            ;;
        openrc)
            info "openrc: Starting ${SYSTEM_NAME}"
            $SUDO rc-service "${SYSTEM_NAME}" restart
            ;;
    esac
}

# --- main --------------------------------------------------------------------------------------------

# The command and flags come from INSTALL_K3RS_EXEC (split into words) and then the arguments.
# shellcheck disable=SC2086
setup_env ${INSTALL_K3RS_EXEC} "$@"
setup_tmp
download_and_verify
install_dependencies
check_memory_cgroup
create_symlinks
create_killall
create_uninstall
create_env_file
case "${INIT}" in
    systemd) create_systemd_service_file ;;
    openrc) create_openrc_service_file ;;
esac
service_enable_and_start
