#!/bin/sh
# The image's own steps, run as root inside its root filesystem after the Debian packages
# (packages and build-packages beside this file) are installed: by deploy/Dockerfile, and by
# deploy/image/build.py in a chroot. Both images are made by this one script.
#
#   root.sh SPEC      SPEC: what pip installs as kubeweft (the source tree, or `kubeweft` from a
#                     wheelhouse given through PIP_FIND_LINKS and PIP_NO_INDEX)
#
# /opt/kubeweft            the core install (no [lab] extra), in a venv that sees Debian's
#                          python3-nftables; /usr/local/bin/kubeweft links to its entry point
# /opt/kubeweft/cni        the frozen CNI executable (kubeweft.cni.freeze), for install-cni --frozen
# /opt/kubeweft/cni-plugins/loopback   Debian's reference loopback, for install-cni --loopback
set -eu
SPEC=$1
HERE=$(cd "$(dirname "$0")" && pwd)
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1

python3 -m venv --system-site-packages /opt/kubeweft
/opt/kubeweft/bin/pip install --quiet "$SPEC"
ln -sf /opt/kubeweft/bin/kubeweft /usr/local/bin/kubeweft

# PyInstaller in a venv of its own (removed below), seeing the install through PYTHONPATH and
# Debian's python3-nftables through the system site-packages: the build bundles this image's
# python3 and libraries
python3 -m venv --system-site-packages /tmp/kubeweft-freeze
/tmp/kubeweft-freeze/bin/pip install --quiet -r "$HERE/build-requirements.txt"
site=$(/opt/kubeweft/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
PYTHONPATH=$site /tmp/kubeweft-freeze/bin/python -m kubeweft.cni.freeze /opt/kubeweft/cni
rm -rf /tmp/kubeweft-freeze
install -D -m 0755 /usr/lib/cni/loopback /opt/kubeweft/cni-plugins/loopback

# the build fails here rather than on a node
kubeweft agent --help > /dev/null
echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION /opt/kubeweft/cni/kubeweft | grep -q supportedVersions

DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq --auto-remove $(grep -v '^#' "$HERE/build-packages") > /dev/null
rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /root/.cache /var/log/apt/* /var/log/dpkg.log
