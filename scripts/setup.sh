#!/usr/bin/env bash
# Set up this machine for kernel-hil and prepare the embedded default: Debian packages, a
# virtualenv in .venv, the libvirt daemons, the Debian guest image and the Windows drivers.
# Idempotent: a second run installs nothing new and reuses the cached image and builds.
# Needs root (apt, libvirt's system instance, debootstrap). Debian 12 (bookworm).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }
[ "$(id -u)" = 0 ] || { echo "setup: run as root (apt-get, libvirtd, debootstrap need it)" >&2; exit 2; }

APT_PACKAGES=(
  # guests: QEMU, libvirt and its Python binding's build needs
  qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev pkg-config
  # the embedded Debian guest image
  debootstrap e2fsprogs
  # host-side builds: protocol test programs, Linux modules against the guest's headers
  gcc make libc6-dev libelf1 python3-venv python3-dev
  # Windows drivers: built with mingw-w64, run under Wine
  gcc-mingw-w64-x86-64 mingw-w64-x86-64-dev wine64 wine
  # qualification runs: a team's history server (tested for real), the report in a real browser
  postgresql chromium
  # the tests' second libvirt host, in network namespaces of their own (tests/hosts)
  iproute2
  # the debug kernel flavour, built from Debian's kernel source when asked for
  # (hil image build linux --flavour debug; hil/images/debug_kernel.py BUILD_TOOLS)
  bc bison flex libelf-dev libssl-dev xz-utils perl
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

say "python environment (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

say "PostgreSQL (the history database a team shares; SQLite is the default)"
# no init system here: start the cluster ourselves when it is not answering
if ! pg_isready -q; then
  pg_version=$(ls /etc/postgresql | sort -V | tail -1)
  pg_ctlcluster "$pg_version" main start || true
  pg_isready -q -t 30 || {
    echo "setup: PostgreSQL $pg_version did not start (is port 5432 taken by another server?):" \
         "see /var/log/postgresql/postgresql-$pg_version-main.log" >&2
    exit 1
  }
fi

say "libvirt daemons, /dev/kvm permissions, leftovers of dead sessions"
.venv/bin/hil sweep

say "the embedded Linux guest (built once, cached by recipe hash)"
.venv/bin/hil image build linux

say "the Windows drivers (mingw-w64, cached by source hash)"
.venv/bin/python -m hil.deploy.windows_build >/dev/null

say "hil doctor"
.venv/bin/hil doctor
