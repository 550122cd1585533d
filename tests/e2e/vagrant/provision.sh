#!/usr/bin/env bash
# Provision one VM of the Vagrantfile's k3s cluster, as root. Settings come from the environment
# (the Vagrantfile's `env`):
#   KW_ROLE        server | agent
#   KW_NODE_IP     this VM's address on the private network: k3s's --node-ip, so the Node's
#                  InternalIP (and kubeweft's VTEP) is never the NAT interface's 10.0.2.15
#   KW_SERVER_IP   the server's address on the private network
#   KW_IMAGE       kubeweft's image archive uploaded from the host (`make image`); empty: the
#                  server builds it from /kubeweft and serves it to the agents on port 8099
#   KW_KUBECONFIG  where the server leaves a kubeconfig naming KW_SERVER_IP (the Vagrantfile's
#                  trigger copies it to the host's .vagrant/kubeconfig)
#   K3S_TOKEN, INSTALL_K3S_VERSION   for k3s's installer
# VMs may provision in parallel: each writes only its own disk (never the synced folder), an
# agent waits, bounded, for the server's API and for the image it serves, and the server
# publishes the image under its final name only once complete.
set -euo pipefail

CHECKOUT=/kubeweft
STATE=/var/lib/kubeweft-vagrant
IMAGE_PORT=8099
CONTAINERD_CONFIG=/var/lib/rancher/k3s/agent/etc/containerd/config.toml

say() { echo "provision[${KW_ROLE:-?}]: $*"; }

# wait_for SECONDS WHAT COMMAND...: run COMMAND every 5 s until it succeeds; fail after SECONDS.
wait_for() {
  local seconds=$1 what=$2 start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start >= seconds )); then
      say "gave up after ${seconds} s waiting for ${what}"
      return 1
    fi
    sleep 5
  done
}

# cni_dirs CONFIG_TOML: "BIN_DIR CONF_DIR" of the CNI section of containerd's config (k3s writes
# one, whose paths vary between k3s releases); containerd's defaults when there is none.
cni_dirs() {
  local bin="" conf=""
  if [ -f "$1" ]; then
    bin=$(sed -n 's/^[[:space:]]*bin_dirs\{0,1\}[[:space:]]*=[[:space:]]*\[\{0,1\}[[:space:]]*"\([^"]*\)".*/\1/p' "$1" | head -1)
    conf=$(sed -n 's/^[[:space:]]*conf_dir[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$1" | head -1)
  fi
  echo "${bin:-/opt/cni/bin} ${conf:-/etc/cni/net.d}"
}

# render_kubeconfig SERVER_IP < k3s.yaml: k3s's admin kubeconfig, for use from outside the server
render_kubeconfig() {
  sed "s#https://127\.0\.0\.1:6443#https://$1:6443#"
}

# render_overlay DIR BASE SERVER_IP BIN_DIR CONF_DIR: a kustomization in DIR over deploy/k3s (BASE)
# that names this cluster's server (the agents' API endpoint, and the address whose route picks
# the overlay's interface) and the CNI directories the nodes' containerd reads.
render_overlay() {
  local dir=$1 server=$3 bin=$4 conf=$5 base
  mkdir -p "$dir"
  base=$(realpath -m --relative-to="$dir" "$2")     # kustomize takes no absolute path
  cat > "$dir/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $base
patches:
  - patch: |-
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: kubeweft-api-endpoint, namespace: kube-system}
      data: {KUBERNETES_SERVICE_HOST: "$server"}
  - patch: |-
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: kubeweft-config, namespace: kube-system}
      data: {iface-can-reach: "$server"}
  - patch: |-
      apiVersion: apps/v1
      kind: DaemonSet
      metadata: {name: kubeweft, namespace: kube-system}
      spec:
        template:
          spec:
            volumes:
              - name: cni-bin
                hostPath: {path: $bin, type: DirectoryOrCreate}
              - name: cni-conf
                hostPath: {path: $conf, type: DirectoryOrCreate}
YAML
}

apt_install() {
  # a fresh box runs apt's daily jobs at boot: wait for its lock instead of failing
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >/dev/null
}

install_k3s() {
  # INSTALL_K3S_VERSION (empty: the stable channel) and K3S_TOKEN come from the environment
  curl -sfL https://get.k3s.io -o "$STATE/get-k3s.sh"
  INSTALL_K3S_EXEC="$* --node-ip $KW_NODE_IP" sh "$STATE/get-k3s.sh"
}

# install_loopback BIN_DIR: Debian's loopback plugin, where the runtime has none (k3s without
# flannel does not ship one); written under a temporary name and renamed, so a runtime never
# runs half a file
install_loopback() {
  mkdir -p "$1"
  if [ ! -x "$1/loopback" ]; then
    cp /usr/lib/cni/loopback "$1/.loopback.tmp" && mv -f "$1/.loopback.tmp" "$1/loopback"
    say "installed loopback into $1"
  fi
}

# build_image: `make image` on a copy of the checkout on this disk (the synced folder may be the
# host's own checkout, whose .venv and out/ must not be touched); prints the archive's path
build_image() {
  apt_install make python3 python3-venv rsync git
  rsync -a --delete --exclude .git/ --exclude .venv/ --exclude out/ --exclude build/ --exclude .vagrant/ \
    "$CHECKOUT/" "$STATE/src/" >&2
  make -C "$STATE/src" image >&2
  local built=("$STATE"/src/out/image/kubeweft-*.tar)
  echo "${built[0]}"
}

# publish_image FILE: serve FILE to the agents as /kubeweft.tar, its checksum written last
publish_image() {
  local dir=$STATE/serve
  mkdir -p "$dir"
  cp "$1" "$dir/.kubeweft.tar.tmp" && mv -f "$dir/.kubeweft.tar.tmp" "$dir/kubeweft.tar"
  (cd "$dir" && sha256sum kubeweft.tar > .sha.tmp && mv -f .sha.tmp kubeweft.tar.sha256)
  systemctl stop kubeweft-image-http 2>/dev/null || true
  systemd-run --unit kubeweft-image-http --property=RuntimeMaxSec=3h \
    python3 -m http.server "$IMAGE_PORT" --bind "$KW_SERVER_IP" --directory "$dir" >/dev/null
}

fetch_image() {
  local dir=$STATE/fetched url="http://$KW_SERVER_IP:$IMAGE_PORT"
  mkdir -p "$dir"
  wait_for 3600 "the image from the server ($url)" curl -sf -o "$dir/kubeweft.tar.sha256" "$url/kubeweft.tar.sha256"
  curl -sf -o "$dir/kubeweft.tar" "$url/kubeweft.tar"
  (cd "$dir" && sha256sum -c --quiet kubeweft.tar.sha256) >&2
  echo "$dir/kubeweft.tar"
}

main() {
  : "${KW_ROLE:?}" "${KW_NODE_IP:?}" "${KW_SERVER_IP:?}" "${K3S_TOKEN:?}"
  mkdir -p "$STATE"
  apt_install curl ca-certificates containernetworking-plugins
  local image=${KW_IMAGE:-}
  if [ "$KW_ROLE" = server ]; then
    mkdir -p /etc/rancher/k3s
    # flannel-backend none, disable-kube-proxy, disable-network-policy and the CIDRs
    cp "$CHECKOUT/deploy/k3s/k3s-config.yaml" /etc/rancher/k3s/config.yaml
    install_k3s server
    wait_for 600 "the API server" k3s kubectl get --raw /readyz
    if [ -z "$image" ]; then
      say "no image from the host: building it (make image)"
      image=$(build_image)
      publish_image "$image"
    fi
  else
    wait_for 1800 "the k3s server at $KW_SERVER_IP:6443" curl -ksf "https://$KW_SERVER_IP:6443/ping"
    export K3S_URL="https://$KW_SERVER_IP:6443"
    install_k3s agent
    [ -n "$image" ] || image=$(fetch_image)
  fi
  wait_for 120 "containerd" k3s ctr version
  k3s ctr images import "$image" >/dev/null
  say "imported $image"
  wait_for 120 "containerd's config" test -f "$CONTAINERD_CONFIG"
  read -r bin conf < <(cni_dirs "$CONTAINERD_CONFIG")
  install_loopback "$bin"
  if [ "$KW_ROLE" = server ]; then
    render_overlay "$STATE/overlay" "$CHECKOUT/deploy/k3s" "$KW_SERVER_IP" "$bin" "$conf"
    k3s kubectl apply -k "$STATE/overlay"
    umask 077
    render_kubeconfig "$KW_SERVER_IP" < /etc/rancher/k3s/k3s.yaml > "$KW_KUBECONFIG.tmp"
    mv -f "$KW_KUBECONFIG.tmp" "$KW_KUBECONFIG"
    say "kubeconfig in $KW_KUBECONFIG"
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
