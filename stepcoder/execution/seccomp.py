"""A seccomp-BPF filter for sandboxed programs, built by hand: stdlib only, no libseccomp.

The filter is a deny list on top of everything else (namespaces, a non-root uid, rlimits): it closes the kernel
interfaces a judged program never needs and that widen the attack surface or escape a namespace:

- other syscall ABIs (i386 on x86_64, x32): the whole process is killed, so numbers cannot be aliased;
- namespaces and mounts: ``unshare``, ``setns``, ``mount``, ``pivot_root``, ``chroot``, new mount API, and
  ``clone`` with any ``CLONE_NEW*`` flag (``clone3`` answers ENOSYS, so libc falls back to ``clone``, whose flags
  a classic BPF filter can read);
- introspection of other processes: ``ptrace``, ``process_vm_readv/writev``, ``kcmp``, ``pidfd_getfd``;
- kernel attack surface: ``bpf``, ``perf_event_open``, ``userfaultfd``, ``io_uring_*`` (its operations bypass
  seccomp), keyrings, modules, kexec, ``open_by_handle_at``;
- host state: clocks, hostname, swap, reboot, quotas, ``acct``, ``syslog``, ``iopl``/``ioperm``;
- sockets other than AF_UNIX/AF_INET/AF_INET6 (netlink, packet, ...), and the ``TIOCSTI``/``TIOCLINUX`` ioctls
  that push input into a terminal.

A denied call fails with EPERM, which Python turns into ``PermissionError`` (a ``runtime_error``), so an attack
shows up in the result instead of as a mysterious crash. Everything else is allowed: CPython and the programs
judged here need a broad, ordinary set of calls.

``filter_bytes()`` returns the program as ``struct sock_filter[]`` bytes; ``install(program)`` loads it into the
calling thread (after ``PR_SET_NO_NEW_PRIVS``). This module runs inside the sandbox worker, so it imports only the
stdlib and is sent to the worker as source (see ``pool.WORKER_SOURCES``).
"""

import ctypes
import os
import struct

# BPF opcodes (linux/filter.h, linux/bpf_common.h)
_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x05 | 0x30 | 0x00  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x05 | 0x40 | 0x00  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06 | 0x00  # BPF_RET | BPF_K

RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000

# offsets in struct seccomp_data: nr (u32), arch (u32), instruction_pointer (u64), args[6] (u64, low word first)
_NR, _ARCH, _ARG0_LO = 0, 4, 16

CLONE_NEW_ANY = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC
                 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080)  # NEWUSER, NEWPID, NEWNET, NEWTIME
ALLOWED_SOCKET_FAMILIES = (1, 2, 10)  # AF_UNIX, AF_INET, AF_INET6
DENIED_IOCTLS = (0x5412, 0x541C)  # TIOCSTI, TIOCLINUX

DENIED = (
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "fsopen", "fsconfig", "fsmount", "fspick",
    "open_tree", "move_mount", "mount_setattr", "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "pidfd_getfd", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "keyctl", "add_key", "request_key", "init_module", "finit_module", "delete_module",
    "kexec_load", "kexec_file_load", "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "swapon",
    "swapoff", "reboot", "sethostname", "setdomainname", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "acct", "quotactl", "quotactl_fd", "syslog", "iopl", "ioperm", "personality", "vhangup",
    "uselib", "nfsservctl", "fanotify_init", "move_pages", "migrate_pages",
)

# (AUDIT_ARCH_*, syscall numbers). x86_64 from asm/unistd_64.h; aarch64 from asm-generic/unistd.h.
ARCHES = {
    "x86_64": (0xC000003E, {
        "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
        "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "open_tree": 428, "move_mount": 429,
        "mount_setattr": 442, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
        "pidfd_getfd": 438, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "keyctl": 250, "add_key": 248, "request_key": 249,
        "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320,
        "open_by_handle_at": 304, "name_to_handle_at": 303, "lookup_dcookie": 212, "swapon": 167, "swapoff": 168,
        "reboot": 169, "sethostname": 170, "setdomainname": 171, "settimeofday": 164, "clock_settime": 227,
        "clock_adjtime": 305, "adjtimex": 159, "acct": 163, "quotactl": 179, "quotactl_fd": 443, "syslog": 103,
        "iopl": 172, "ioperm": 173, "personality": 135, "vhangup": 153, "uselib": 134, "nfsservctl": 180,
        "fanotify_init": 300, "move_pages": 279, "migrate_pages": 256,
        "clone": 56, "clone3": 435, "socket": 41, "ioctl": 16,
    }),
    "aarch64": (0xC00000B7, {
        "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "unshare": 97, "setns": 268,
        "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "open_tree": 428, "move_mount": 429,
        "mount_setattr": 442, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
        "pidfd_getfd": 438, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "keyctl": 219, "add_key": 217, "request_key": 218,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294,
        "open_by_handle_at": 265, "name_to_handle_at": 264, "lookup_dcookie": 18, "swapon": 224, "swapoff": 225,
        "reboot": 142, "sethostname": 161, "setdomainname": 162, "settimeofday": 170, "clock_settime": 112,
        "clock_adjtime": 266, "adjtimex": 171, "acct": 89, "quotactl": 60, "quotactl_fd": 443, "syslog": 116,
        "personality": 92, "vhangup": 58, "nfsservctl": 42, "fanotify_init": 262, "move_pages": 239,
        "migrate_pages": 238,
        "clone": 220, "clone3": 435, "socket": 198, "ioctl": 29,
    }),
}

EPERM, ENOSYS = 1, 38
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def filter_bytes(machine: str | None = None) -> bytes | None:
    """The filter for ``machine`` (default: this one), or None where the architecture has no table here."""
    machine = machine or os.uname().machine
    if machine not in ARCHES:
        return None
    audit_arch, nr = ARCHES[machine]
    deny_errno = RET_ERRNO | EPERM
    prog = [
        _insn(_LD_W_ABS, _ARCH),
        _insn(_JEQ_K, audit_arch, jt=1),
        _insn(_RET_K, RET_KILL_PROCESS),  # a foreign ABI: its numbers mean other calls
        _insn(_LD_W_ABS, _NR),
    ]
    if machine == "x86_64":
        prog += [_insn(_JGE_K, 0x40000000, jf=1), _insn(_RET_K, RET_KILL_PROCESS)]  # x32 ABI
    for name in DENIED:
        if name in nr:
            prog += [_insn(_JEQ_K, nr[name], jf=1), _insn(_RET_K, deny_errno)]
    prog += [_insn(_JEQ_K, nr["clone3"], jf=1), _insn(_RET_K, RET_ERRNO | ENOSYS)]
    # clone: deny any namespace flag (flags are the low word of arg 0 on both architectures)
    prog += [
        _insn(_JEQ_K, nr["clone"], jf=4),
        _insn(_LD_W_ABS, _ARG0_LO),
        _insn(_JSET_K, CLONE_NEW_ANY, jf=1),
        _insn(_RET_K, deny_errno),
        _insn(_RET_K, RET_ALLOW),
    ]
    # socket: only the address families an ordinary program uses (arg 0 low word)
    fams = ALLOWED_SOCKET_FAMILIES
    prog += [_insn(_JEQ_K, nr["socket"], jf=len(fams) + 3), _insn(_LD_W_ABS, _ARG0_LO)]
    for i, fam in enumerate(fams):
        prog.append(_insn(_JEQ_K, fam, jt=len(fams) - i))  # to RET_ALLOW, past the deny
    prog += [_insn(_RET_K, deny_errno), _insn(_RET_K, RET_ALLOW)]
    # ioctl: deny the terminal-injection commands (arg 1 low word)
    ioctls = DENIED_IOCTLS
    prog += [_insn(_JEQ_K, nr["ioctl"], jf=1 + len(ioctls) + 2), _insn(_LD_W_ABS, _ARG0_LO + 8)]
    for i, cmd in enumerate(ioctls):
        prog.append(_insn(_JEQ_K, cmd, jt=len(ioctls) - i))  # to the deny
    prog += [_insn(_RET_K, RET_ALLOW), _insn(_RET_K, deny_errno)]
    prog.append(_insn(_RET_K, RET_ALLOW))
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(program: bytes) -> str:
    """Load ``program`` into the calling thread, for good (inherited by its forks, kept across exec).
    Returns "" or why it failed."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return "prctl(NO_NEW_PRIVS): " + os.strerror(ctypes.get_errno())
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        return "prctl(SECCOMP): " + os.strerror(ctypes.get_errno())
    return ""
