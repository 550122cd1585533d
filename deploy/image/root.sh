#!/bin/sh
# The image's own steps, run as root inside its root filesystem once the Debian packages listed in
# `packages` beside this file are installed and apt's lists are there: by deploy/Dockerfile, and
# by deploy/image/build.py in a chroot. Both images are made by this one script.
#
#   root.sh SPEC      SPEC: what pip installs as kubeweft (the source tree, or `kubeweft` from a
#                     wheelhouse given through PIP_FIND_LINKS and PIP_NO_INDEX)
#
# /opt/kubeweft            the core install (no [lab] extra, no pip), in a venv that sees Debian's
#                          python3-nftables; /usr/local/bin/kubeweft links to its entry point
# /opt/kubeweft/cni        the frozen CNI executable (kubeweft.cni.freeze), for install-cni --frozen
# /opt/kubeweft/cni-plugins/loopback   Debian's reference loopback, for install-cni --loopback
#
# The build's own packages (build-packages), pip and PyInstaller are gone when it ends.
set -eu
SPEC=$1
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=/tmp/kubeweft-build-venv
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
build_packages=$(grep -v '^#' "$HERE/build-packages")
apt-get install -y -qq --no-install-recommends $build_packages > /dev/null

# pip and PyInstaller in a venv of their own; the install gets no pip (pip --python installs
# into it from here)
python3 -m venv --system-site-packages "$BUILD"
"$BUILD/bin/pip" install --quiet -r "$HERE/build-requirements.txt"
python3 -m venv --system-site-packages --without-pip /opt/kubeweft
"$BUILD/bin/pip" --python /opt/kubeweft/bin/python install --quiet "$SPEC"
ln -sf /opt/kubeweft/bin/kubeweft /usr/local/bin/kubeweft

# the frozen build bundles this image's python3 and libraries: PyInstaller sees the install
# through PYTHONPATH and python3-nftables through the system site-packages
site=$(/opt/kubeweft/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
PYTHONPATH=$site "$BUILD/bin/python" -m kubeweft.cni.freeze /opt/kubeweft/cni
install -D -m 0755 /usr/lib/cni/loopback /opt/kubeweft/cni-plugins/loopback

# the build fails here rather than on a node
kubeweft agent --help > /dev/null
echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION /opt/kubeweft/cni/kubeweft | grep -q supportedVersions

rm -rf "$BUILD"
apt-get purge -y -qq --auto-remove $build_packages > /dev/null
rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /root/.cache /var/log/apt/* /var/log/dpkg.log
