#!/usr/bin/env bash
# Provision one Vagrant VM: k3s without flannel, kube-proxy and its policy controller, then
# (on the server) kubeweft's manifests. Args: NAME IP SERVER_IP TOKEN
set -euo pipefail
name=$1 ip=$2 server=$3 token=$4
apt-get update -qq
apt-get install -y -qq curl nftables python3-nftables python3-venv iproute2 conntrack make >/dev/null
# kubeweft itself, from the synced checkout, onto the host (the DaemonSet image runs the same code)
cd /kubeweft && bash scripts/setup.sh
common="--node-ip $ip"
if [ "$name" = server ]; then
  mkdir -p /etc/rancher/k3s && cp /kubeweft/deploy/k3s/k3s-config.yaml /etc/rancher/k3s/config.yaml
  curl -sfL https://get.k3s.io | K3S_TOKEN=$token INSTALL_K3S_EXEC="server $common" sh -
  until k3s kubectl get nodes >/dev/null 2>&1; do sleep 2; done
  k3s kubectl apply -k /kubeweft/deploy/k3s
  cp /etc/rancher/k3s/k3s.yaml /kubeweft/.vagrant/kubeconfig
  sed -i "s/127.0.0.1/$server/" /kubeweft/.vagrant/kubeconfig
else
  curl -sfL https://get.k3s.io | K3S_URL=https://$server:6443 K3S_TOKEN=$token INSTALL_K3S_EXEC="agent $common" sh -
fi
