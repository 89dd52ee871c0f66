#!/usr/bin/env bash
# The embedded sandbox's cgroup v2 limits, checked on a real cgroup-v2-only kernel in a throwaway VM.
#
# Why a VM: a host's controllers live in one hierarchy each, fixed at boot. A hybrid host (memory and pids on
# cgroup v1, like our CI VM) can never show the v2 path enforcing memory.max and pids.max, and no container can
# switch it. This boots Debian's kernel under QEMU with this machine's filesystem mounted read-only as its root
# (virtme-ng), where cgroup2 is the only hierarchy and offers memory and pids, and runs there:
#   tests/test_cgroups.py                      v2 delegation (EBUSY → leaf), worker cgroups, pids.max enforced
#   test_memory_cap_across_processes[embedded] memory.max kills the program's children (8 x 100 MB > the cap)
#   test_protections_are_all_on[embedded]      nothing missing (no cgroup_memory / cgroup_pids in "missing")
#
# Needs root, Debian packages qemu-system-x86, linux-image-amd64 and busybox-static, and virtme-ng from PyPI
# (installed into $VNG_VENV); about 3 minutes under software emulation (TCG), less with a usable /dev/kvm.
# Not part of `make test`: it installs a kernel and boots a VM. Usage: infra/vm/cgroup-v2-check.sh [pytest args]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
VNG_VENV="${VNG_VENV:-/tmp/stepcoder-vng}"
if ! command -v qemu-system-x86_64 >/dev/null || ! ls /boot/vmlinuz-* >/dev/null 2>&1 || ! command -v busybox >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    qemu-system-x86 linux-image-amd64 busybox-static >/dev/null
fi
[ -x "$VNG_VENV/bin/vng" ] || { python3 -m venv "$VNG_VENV" && "$VNG_VENV/bin/pip" install -q virtme-ng; }
KERNEL="$(ls /boot/vmlinuz-* | sort -V | tail -1)"
# KVM where it works; some hosts (nested VMs) expose /dev/kvm but cannot boot a guest with it
ACCEL=(--disable-kvm)
[ "${USE_KVM:-0}" = 1 ] && ACCEL=()
GUEST="cd '$REPO' && cat /proc/self/cgroup && cat /sys/fs/cgroup/cgroup.controllers && \
PYTHONDONTWRITEBYTECODE=1 .venv/bin/python -m pytest -q -p no:cacheprovider -rs tests/test_cgroups.py \
'tests/test_security.py::test_memory_cap_across_processes[embedded]' \
'tests/test_security.py::test_protections_are_all_on[embedded]' $*; echo guest-exit=\$?"
PATH="$VNG_VENV/bin:$PATH" vng "${ACCEL[@]}" --run "$KERNEL" --memory 3G --cpus 2 --exec "$GUEST" 2>&1 | tee /tmp/cgroup-v2-check.log
grep -q "guest-exit=0" /tmp/cgroup-v2-check.log
