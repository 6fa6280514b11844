#!/bin/sh
# A multi-node k3rs cluster on this machine for manual poking: the topology of the Rust
# test harness (tests/common/cluster.rs), started from a shell. Builds nothing.
#
# Usage:
#   scripts/cluster.sh up [N]          one server and N-1 agents (default N=3), waits until
#                                      every node is Ready, prints how to reach it
#   scripts/cluster.sh kubectl ARGS... kubectl inside node 1's namespace
#   scripts/cluster.sh exec I CMD...   a command inside node I's network namespace
#   scripts/cluster.sh cut I | reconnect I   LAN link of node I down / up
#   scripts/cluster.sh status          namespaces, processes and logs of the cluster
#   scripts/cluster.sh down            stops and removes everything the cluster made
#
# Address plan (the same as the harness): every node in its own network namespace; a LAN
# namespace holds bridge br0 = 172.30.0.1/24, every node's default gateway; node i is
# node-<i> with eth0 = 172.30.0.(10+i)/24 (veth peer n<i> on the bridge). Node 1 runs
# `k3rs server` (API on 172.30.0.11:6443); nodes 2..N run `k3rs agent`. Kubelet endpoints
# listen on each node's :10250. The addresses exist only inside these namespaces.
# Namespaces: ${K3RS_CLUSTER_NAME}-lan and ${K3RS_CLUSTER_NAME}-node-<i>.
#
# Agents use node credentials (system:node:node-<i>) issued from the server's CAs with
# openssl, and a kubelet serving certificate for their LAN address: what joining with a
# token will do.
#
# Environment:
#   K3RS_BIN            the k3rs binary (default: $CARGO_TARGET_DIR/debug/k3rs, else
#                       target/debug/k3rs in this checkout)
#   K3RS_CLUSTER_NAME   namespace prefix (default k3rs-sh)
#   K3RS_CLUSTER_DIR    data, run and log dirs of every node (default /tmp/<name>)
#   K3RS_SERVER_ARGS    extra flags for `k3rs server`, K3RS_AGENT_ARGS for every agent
#
# Needs root, iproute2, util-linux (nsenter, setsid), containerd, runc, busybox-static,
# openssl and kubectl: `apt-get install iproute2 util-linux containerd runc busybox-static
# openssl`.
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)

name=${K3RS_CLUSTER_NAME:-k3rs-sh}
dir=${K3RS_CLUSTER_DIR:-/tmp/${name}}
lan_ns=${name}-lan
lan_net=172.30.0
image=k3rs.test/busybox:1

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found: install it with \`apt-get install $2\`"
}

node_ns() { echo "${name}-node-$1"; }
node_ip() { echo "${lan_net}.$((10 + $1))"; }
node_dir() { echo "${dir}/node-$1"; }

# Runs a command in node $1's network namespace only (`ip netns exec` would also make a
# private mount namespace and hide the agent's mounts).
in_node() {
    i=$1
    shift
    nsenter --net="/run/netns/$(node_ns "$i")" "$@"
}

kube() {
    in_node 1 env KUBECONFIG="${dir}/kubeconfig.yaml" HOME="$dir" kubectl "$@"
}

# Names of the cluster's network namespaces.
cluster_netns() {
    for f in /run/netns/"${name}"-*; do
        if [ -e "$f" ]; then echo "${f##*/}"; fi
    done
}

# Node indexes of the cluster that is up, from its namespaces.
nodes() {
    cluster_netns | sed -n "s/^${name}-node-\([0-9][0-9]*\)\$/\1/p" | sort -n
}

k3rs_bin() {
    if [ -n "${K3RS_BIN:-}" ]; then
        echo "$K3RS_BIN"
    elif [ -n "${CARGO_TARGET_DIR:-}" ] && [ -x "${CARGO_TARGET_DIR}/debug/k3rs" ]; then
        echo "${CARGO_TARGET_DIR}/debug/k3rs"
    else
        echo "${repo}/target/debug/k3rs"
    fi
}

oci_arch() {
    case $(uname -m) in
        x86_64) echo amd64 ;;
        aarch64 | arm64) echo arm64 ;;
        arm*) echo arm ;;
        *) uname -m ;;
    esac
}

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { wc -c <"$1" | tr -d ' '; }

# Writes $image as an OCI image-layout tar to $1: one layer with busybox and its applets.
build_image() {
    work=$(mktemp -d)
    root=${work}/rootfs
    mkdir -p "${root}/bin" "${root}/dev" "${root}/etc" "${root}/proc" "${root}/root" \
        "${root}/sys" "${root}/tmp" "${root}/var/www"
    chmod 1777 "${root}/tmp"
    cp "$busybox" "${root}/bin/busybox"
    for applet in sh ash echo sleep httpd cat wget ls env id true false ps kill mkdir rm \
        hostname ip printf test touch grep head tail wc date seq nc uname mount tr yes ping; do
        ln -s busybox "${root}/bin/${applet}"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"${root}/etc/passwd"
    printf 'root:x:0:\n' >"${root}/etc/group"
    printf 'hello from k3rs\n' >"${root}/var/www/index.html"
    tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "${work}/layer.tar" \
        bin dev etc proc root sys tmp var
    diff_id=$(sha "${work}/layer.tar")
    gzip -n -c "${work}/layer.tar" >"${work}/layer.gz"
    layout=${work}/layout
    mkdir -p "${layout}/blobs/sha256"
    layer=$(sha "${work}/layer.gz")
    cp "${work}/layer.gz" "${layout}/blobs/sha256/${layer}"
    arch=$(oci_arch)
    printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$arch" "$diff_id" >"${work}/config.json"
    config=$(sha "${work}/config.json")
    cp "${work}/config.json" "${layout}/blobs/sha256/${config}"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
        "$config" "$(size "${work}/config.json")" "$layer" "$(size "${work}/layer.gz")" \
        >"${work}/manifest.json"
    manifest=$(sha "${work}/manifest.json")
    cp "${work}/manifest.json" "${layout}/blobs/sha256/${manifest}"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"},"platform":{"architecture":"%s","os":"linux"}}]}' \
        "$manifest" "$(size "${work}/manifest.json")" "$image" "${image##*:}" "$arch" \
        >"${layout}/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' >"${layout}/oci-layout"
    tar -C "$layout" -cf "$1" oci-layout index.json blobs
    rm -rf "$work"
}

# Issues node $1's client certificate (CN system:node:node-<i>, O system:nodes) and kubelet
# serving certificate (SAN: its LAN address) from the server's CAs into its agent dir, and
# a kubeconfig for the server's LAN address: the files the server writes for its own agent.
issue_node_files() {
    i=$1
    tls=$(node_dir 1)/data/server/tls
    agent=$(node_dir "$i")/data/agent
    for f in client-ca.crt client-ca.key server-ca.crt server-ca.key; do
        [ -f "${tls}/${f}" ] || die "the server's ${f} is missing under ${tls}"
    done
    mkdir -p "$agent"
    cp "${tls}/client-ca.crt" "${tls}/server-ca.crt" "$agent/"
    (
        umask 077
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "${agent}/client-kubelet.key" -subj "/O=system:nodes/CN=system:node:node-${i}" \
            -out "${agent}/client.csr" 2>/dev/null
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "${agent}/serving-kubelet.key" -subj "/CN=node-${i}" \
            -out "${agent}/serving.csr" 2>/dev/null
    )
    printf 'extendedKeyUsage=clientAuth\n' >"${agent}/client.ext"
    printf 'extendedKeyUsage=serverAuth\nsubjectAltName=DNS:node-%s,DNS:localhost,IP:%s,IP:127.0.0.1\n' \
        "$i" "$(node_ip "$i")" >"${agent}/serving.ext"
    openssl x509 -req -in "${agent}/client.csr" -CA "${tls}/client-ca.crt" \
        -CAkey "${tls}/client-ca.key" -CAcreateserial -days 365 -extfile "${agent}/client.ext" \
        -out "${agent}/client-kubelet.crt" 2>/dev/null
    openssl x509 -req -in "${agent}/serving.csr" -CA "${tls}/server-ca.crt" \
        -CAkey "${tls}/server-ca.key" -CAcreateserial -days 365 -extfile "${agent}/serving.ext" \
        -out "${agent}/serving-kubelet.crt" 2>/dev/null
    rm -f "${agent}"/*.csr "${agent}"/*.ext "${tls}"/*.srl
    b64() { base64 -w0 <"$1"; }
    cat >"${agent}/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: $(b64 "${agent}/server-ca.crt")
    server: https://$(node_ip 1):6443
  name: local
contexts:
- context:
    cluster: local
    user: node
  name: local
current-context: local
users:
- name: node
  user:
    client-certificate-data: $(b64 "${agent}/client-kubelet.crt")
    client-key-data: $(b64 "${agent}/client-kubelet.key")
EOF
    chmod 600 "${agent}/kubelet.kubeconfig"
}

# Starts node $1's k3rs process in its namespace, detached from this shell.
start_node() {
    i=$1
    d=$(node_dir "$i")
    ip=$(node_ip "$i")
    if [ "$i" = 1 ]; then
        # shellcheck disable=SC2086 # K3RS_SERVER_ARGS is a list of flags
        set -- server --advertise-address "$ip" --tls-san "$ip" \
            --write-kubeconfig "${dir}/kubeconfig.yaml" ${K3RS_SERVER_ARGS:-}
    else
        # shellcheck disable=SC2086 # K3RS_AGENT_ARGS is a list of flags
        set -- agent --kubeconfig "${d}/data/agent/kubelet.kubeconfig" ${K3RS_AGENT_ARGS:-}
    fi
    RUST_LOG=${RUST_LOG:-info} K3RS_CONFIG_FILE="${d}/config.yaml" \
        setsid nsenter --net="/run/netns/$(node_ns "$i")" "$bin" "$@" \
        --data-dir "${d}/data" --node-name "node-${i}" --node-ip "$ip" \
        --run-dir "${d}/run" --pod-log-dir "${d}/pod-logs" \
        </dev/null >>"${d}/k3rs.log" 2>&1 &
    echo $! >"${d}/pid"
}

# wait_for SECONDS WHAT CMD...: polls CMD once a second until it succeeds.
wait_for() {
    timeout=$1
    what=$2
    shift 2
    n=0
    until "$@" >/dev/null 2>&1; do
        n=$((n + 1))
        [ "$n" -le "$timeout" ] || die "${what} not after ${timeout}s; logs in ${dir}/node-*/k3rs.log"
        sleep 1
    done
}

api_ready() { [ -f "${dir}/kubeconfig.yaml" ] && [ "$(kube get --raw /readyz)" = ok ]; }

all_ready() {
    [ "$(kube get nodes -o name | wc -l)" -eq "$1" ] &&
        kube wait --for=condition=Ready nodes --all --timeout=1s
}

up() {
    count=${1:-3}
    case $count in
        '' | *[!0-9]*) die "N must be a number of nodes, not ${count}" ;;
    esac
    if [ "$count" -lt 1 ] || [ "$count" -gt 200 ]; then die "N must be 1..200"; fi
    [ "$(id -u)" = 0 ] || die "needs root (network namespaces, containerd, mounts)"
    need ip iproute2
    need nsenter util-linux
    need setsid util-linux
    need containerd containerd
    need runc runc
    need openssl openssl
    need kubectl "kubectl (see README)"
    busybox=$(command -v busybox || true)
    [ -n "$busybox" ] || die "busybox not found: install it with \`apt-get install busybox-static\`"
    bin=$(k3rs_bin)
    [ -x "$bin" ] || die "no k3rs binary at ${bin}: run \`cargo build\` or set K3RS_BIN"
    [ ! -e "/run/netns/${lan_ns}" ] || die "cluster ${name} is up already: \`$0 down\` first"
    [ ! -e "$dir" ] || die "${dir} exists: \`$0 down\` first"

    mkdir -p "$dir"
    ip netns add "$lan_ns"
    ip -n "$lan_ns" link set lo up
    ip -n "$lan_ns" link add br0 type bridge
    ip -n "$lan_ns" addr add "${lan_net}.1/24" dev br0
    ip -n "$lan_ns" link set br0 up
    build_image "${dir}/busybox.tar"
    i=1
    while [ "$i" -le "$count" ]; do
        ns=$(node_ns "$i")
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip -n "$lan_ns" link add "n${i}" type veth peer name eth0 netns "$ns"
        ip -n "$lan_ns" link set "n${i}" master br0 up
        ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route add default via "${lan_net}.1"
        d=$(node_dir "$i")
        mkdir -p "${d}/data/agent/images"
        cp "${dir}/busybox.tar" "${d}/data/agent/images/"
        echo "# k3rs cluster.sh node: settings come from flags" >"${d}/config.yaml"
        i=$((i + 1))
    done

    start_node 1
    wait_for 90 "API server ready" api_ready
    i=2
    while [ "$i" -le "$count" ]; do
        issue_node_files "$i"
        start_node "$i"
        i=$((i + 1))
    done
    wait_for 120 "${count} nodes Ready" all_ready "$count"
    kube get nodes -o wide
    cat <<EOF

Cluster ${name} is up (${dir}). From this checkout:
  $0 kubectl get pods -A -o wide
  $0 exec 2 ip route
Or in your shell:
  export KUBECONFIG=${dir}/kubeconfig.yaml
  ip netns exec $(node_ns 1) kubectl get nodes -o wide
Pods can use image ${image} (imported on every node). Logs: ${dir}/node-<i>/k3rs.log
Remove everything: $0 down
EOF
}

# Pids whose network namespace is one of the inode numbers in $ns_inodes, or whose
# command line names the cluster dir.
cluster_pids() {
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [ "$pid" != "$$" ] || continue
        net=$(readlink "${p}/ns/net" 2>/dev/null) || continue
        ino=${net#net:[}
        ino=${ino%]}
        case " ${ns_inodes} " in
            *" ${ino} "*)
                echo "$pid"
                continue
                ;;
        esac
        if tr '\0' ' ' <"${p}/cmdline" 2>/dev/null | grep -qF "$dir"; then
            echo "$pid"
        fi
    done
}

# Mount points under the cluster dir, deepest first (mountinfo field 5; paths here have
# no spaces).
cluster_mounts() {
    awk -v d="$dir" 'index($5, d "/") == 1 || $5 == d { print length($5), $5 }' \
        /proc/self/mountinfo | sort -rn | cut -d' ' -f2
}

down() {
    [ "$(id -u)" = 0 ] || die "needs root"
    if [ -f "${dir}/kubeconfig.yaml" ] && [ -e "/run/netns/$(node_ns 1)" ]; then
        # Let the agents stop pods the way they would for a user, for a bounded time.
        kube delete pods --all --all-namespaces --grace-period=1 --timeout=30s \
            >/dev/null 2>&1 || true
    fi
    for f in "$dir"/node-*/pid; do
        if [ -f "$f" ]; then kill -TERM "$(cat "$f")" 2>/dev/null || true; fi
    done
    n=0
    for f in "$dir"/node-*/pid; do
        [ -f "$f" ] || continue
        while kill -0 "$(cat "$f")" 2>/dev/null && [ "$n" -lt 30 ]; do
            sleep 1
            n=$((n + 1))
        done
    done
    ns_inodes=""
    for ns in $(cluster_netns); do
        ns_inodes="${ns_inodes} $(stat -L -c %i "/run/netns/${ns}")"
    done
    for m in $(cluster_mounts); do
        if [ "$(stat -f -c %T "$m" 2>/dev/null)" = nsfs ]; then
            ns_inodes="${ns_inodes} $(stat -L -c %i "$m")"
        fi
    done
    for pid in $(cluster_pids); do
        echo "cluster.sh: killing leftover process ${pid}: $(tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null)" >&2
        kill -KILL "$pid" 2>/dev/null || true
    done
    sleep 1
    for m in $(cluster_mounts); do
        umount -l "$m" 2>/dev/null || true
    done
    for ns in $(cluster_netns); do
        ip netns delete "$ns"
    done
    rm -rf "$dir"
    echo "cluster ${name} removed"
}

status() {
    echo "namespaces:"
    cluster_netns | sed 's/^/  /'
    for i in $(nodes); do
        f=$(node_dir "$i")/pid
        state=stopped
        [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && state="running (pid $(cat "$f"))"
        echo "node-${i} $(node_ip "$i"): ${state}, log $(node_dir "$i")/k3rs.log"
    done
}

case ${1:-} in
    up)
        shift
        up "$@"
        ;;
    down) down ;;
    status) status ;;
    kubectl)
        shift
        kube "$@"
        ;;
    exec)
        [ $# -ge 3 ] || die "usage: $0 exec I CMD..."
        i=$2
        shift 2
        in_node "$i" "$@"
        ;;
    cut) ip -n "$lan_ns" link set "n${2:?node index}" down ;;
    reconnect) ip -n "$lan_ns" link set "n${2:?node index}" up ;;
    *)
        sed -n '2,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//'
        exit 2
        ;;
esac
