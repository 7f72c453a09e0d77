"""Isolation layers a sandboxed child sets up on itself, before it runs any untrusted code.

This file is standard library only and self-contained: :mod:`trace_optuna.strategies.sandbox`
sends its source to the child (``python -I``, which cannot import trace_optuna), which runs
:func:`setup` first and the untrusted code afterwards. Every layer is a kernel mechanism that
the restricted process cannot undo, set up with what Linux gives an unprivileged user:

``user_namespace``
    ``unshare(CLONE_NEWUSER)``, the worker's user mapped to ``nobody`` inside, then every
    capability dropped: the child holds no privilege, not even when the worker runs as root
    (it cannot raise its hard limits, mount, or reach the host's namespaces).
``network_namespace``
    ``unshare(CLONE_NEWNET)``: no network interface but a loopback that is down and that
    nothing listens on; not the host's loopback, not the LAN.
``landlock``
    Landlock (ABI 6+, kernel 6.12+): the file system is readable only beneath the Python
    installation and the system libraries, writable only in the child's temporary directory;
    nothing else is visible (no ``/proc``, home directories, project, ``/tmp``, sockets under
    ``/run``); TCP connect and bind are refused; signals, ptrace and abstract unix sockets
    cannot reach a process outside the sandbox; mounts cannot be changed.
``seccomp``
    A seccomp filter (x86_64): no ``socket()``, no new process (threads only), and none of
    ``unshare``, ``setns``, ``mount`` and friends, ``ptrace``, ``bpf``, ``io_uring``, keyrings,
    kernel modules.

Resource limits (memory, CPU, file size, open files) are set by the parent before the child
starts and are not a layer of this list: they always apply.
"""

import ctypes
import os
import platform
import struct
import sys

LAYERS = ("user_namespace", "network_namespace", "landlock", "seccomp")

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_CLONE_THREAD = 0x00010000
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_NOBODY = 65534

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _LayerError(Exception):
    """A layer could not be set up; the message says why."""


def _check(result, what):
    if result < 0:
        number = ctypes.get_errno()
        raise _LayerError(f"{what} failed: {os.strerror(number)} (errno {number})")
    return result


def _write(path, text):
    with open(path, "w") as file:
        file.write(text)


# -- namespaces ----------------------------------------------------------------------------------


def _namespaces(net):
    uid, gid = os.geteuid(), os.getegid()
    flags = _CLONE_NEWUSER | (_CLONE_NEWNET if net else 0)
    _check(_libc.unshare(flags), "unshare(CLONE_NEWUSER" + ("|CLONE_NEWNET)" if net else ")"))
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{_NOBODY} {uid} 1")
    _write("/proc/self/gid_map", f"{_NOBODY} {gid} 1")
    _check(_libc.setresgid(_NOBODY, _NOBODY, _NOBODY), "setresgid")
    _check(_libc.setresuid(_NOBODY, _NOBODY, _NOBODY), "setresuid")  # drops the capabilities


def _drop_capabilities():
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = bytes(24)  # two empty (effective, permitted, inheritable) sets
    _check(_libc.capset(header, data), "capset")


# -- Landlock ------------------------------------------------------------------------------------

_LANDLOCK_CREATE_RULESET = 444
_LANDLOCK_ADD_RULE = 445
_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1, 2, 4, 8
_FS_ALL_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_FS_FILE_ONLY = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | (1 << 14) | (1 << 15)
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2
_LANDLOCK_MIN_ABI = 6


def landlock_abi():
    """The kernel's Landlock ABI version, or 0 when Landlock is off or unknown."""
    version = _libc.syscall(_LANDLOCK_CREATE_RULESET, None, 0, _LANDLOCK_CREATE_RULESET_VERSION)
    return max(int(version), 0)


def _landlock(readable, writable, files):
    abi = landlock_abi()
    if abi < _LANDLOCK_MIN_ABI:
        raise _LayerError(
            f"Landlock ABI {abi} (needs {_LANDLOCK_MIN_ABI}+: Linux 6.12 or later with "
            "'landlock' in the lsm= boot parameter or CONFIG_LSM)"
        )
    handled_fs = _FS_ALL_ABI[max(v for v in _FS_ALL_ABI if v <= abi)]
    attr = struct.pack(
        "QQQ",
        handled_fs,
        _NET_BIND_TCP | _NET_CONNECT_TCP,
        _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL,
    )
    ruleset = _check(
        _libc.syscall(_LANDLOCK_CREATE_RULESET, attr, len(attr), 0), "landlock_create_ruleset"
    )
    try:
        read_only = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
        rules = [(path, read_only) for path in readable]
        rules += [(path, handled_fs) for path in writable]
        rules += [(path, rights & _FS_FILE_ONLY) for path, rights in files]
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # not on this machine (e.g. /lib64)
            try:
                if not os.path.isdir(path):
                    rights &= _FS_FILE_ONLY
                rule = struct.pack("=Qi", rights, fd)
                _check(
                    _libc.syscall(_LANDLOCK_ADD_RULE, ruleset, _RULE_PATH_BENEATH, rule, 0),
                    f"landlock_add_rule({path})",
                )
            finally:
                os.close(fd)
        _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        _check(_libc.syscall(_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)


# -- seccomp -------------------------------------------------------------------------------------

# x86_64 system call numbers.
_X86_64 = 0xC000003E  # AUDIT_ARCH_X86_64
_CLONE, _CLONE3 = 56, 435
_DENIED = {
    "socket": 41,
    "fork": 57,
    "vfork": 58,
    "ptrace": 101,
    "chroot": 161,
    "pivot_root": 155,
    "mount": 165,
    "umount2": 166,
    "init_module": 175,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
}
_EPERM, _ENOSYS = 1, 38
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000


def _seccomp_program():
    """The BPF filter: a list of (code, jump if true, jump if false, k).

    A jump's offset counts the instructions it skips, so each is written as the target's
    index minus the index after the jump.
    """
    load = 0x20  # BPF_LD | BPF_W | BPF_ABS
    jeq, jge, jset, ret = 0x15, 0x35, 0x45, 0x06
    denied = sorted(_DENIED.values())
    first = 4  # the index of the first denied-call check
    clone_check = first + len(denied)
    allow, eperm = clone_check + 2, clone_check + 3
    flags, thread_check = clone_check + 4, clone_check + 5
    allow_thread, eperm_process = clone_check + 6, clone_check + 7
    enosys, kill = clone_check + 8, clone_check + 9
    program = [
        (load, 0, 0, 4),  # 0: the architecture
        (jeq, 0, kill - 2, _X86_64),  # 1: another architecture: kill
        (load, 0, 0, 0),  # 2: the system call number
        (jge, kill - 4, 0, 0x40000000),  # 3: the x32 ABI: kill
    ]
    for index, number in enumerate(denied):
        program.append((jeq, eperm - (first + index + 1), 0, number))
    program += [
        (jeq, flags - (clone_check + 1), 0, _CLONE),
        (jeq, enosys - (clone_check + 2), 0, _CLONE3),  # glibc falls back to clone
        (ret, 0, 0, _RET_ALLOW),
        (ret, 0, 0, _RET_ERRNO | _EPERM),
        (load, 0, 0, 16),  # clone's flags: the low 32 bits of its first argument
        (
            jset,
            allow_thread - (thread_check + 1),
            eperm_process - (thread_check + 1),
            _CLONE_THREAD,
        ),
        (ret, 0, 0, _RET_ALLOW),
        (ret, 0, 0, _RET_ERRNO | _EPERM),
        (ret, 0, 0, _RET_ERRNO | _ENOSYS),
        (ret, 0, 0, _RET_KILL_PROCESS),
    ]
    assert (len(program) - 1, program[allow][3], program[enosys][3]) == (
        kill,
        _RET_ALLOW,
        _RET_ERRNO | _ENOSYS,
    )
    return program


def _seccomp():
    if platform.machine() != "x86_64":
        raise _LayerError(
            f"the seccomp filter is written for x86_64; this is {platform.machine()}"
        )
    program = _seccomp_program()
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HxxxxxxP", len(program), ctypes.addressof(buffer))
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _check(_libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, fprog, 0, 0), "seccomp filter")


# -- all of them ---------------------------------------------------------------------------------


def readable_paths():
    """What the child may read: the Python installation and the system's shared libraries."""
    paths = {sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(("/usr", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache"))
    return sorted(paths)


def setup(workdir, disable=()):
    """Set up every layer not in ``disable``; return (active layers, {missing layer: why}).

    A layer that fails is reported, not raised: the parent decides whether the run may go on.
    The order matters: namespaces first (they need /proc, and Landlock would hide it), then
    Landlock (its rules are opened by path), then seccomp (it forbids what came before).
    """
    active, missing = [], {}
    net = "network_namespace" not in disable
    if "user_namespace" in disable:
        missing["user_namespace"] = "disabled by TRACE_OPTUNA_SANDBOX_DISABLE"
        if net:
            missing["network_namespace"] = "needs the user namespace"
            net = False
    else:
        try:
            _namespaces(net)
            _drop_capabilities()
        except (_LayerError, OSError) as error:
            missing["user_namespace"] = str(error)
            if net:
                missing["network_namespace"] = str(error)
        else:
            active.append("user_namespace")
            if net:
                active.append("network_namespace")
    if not net and "network_namespace" not in missing:
        missing["network_namespace"] = "disabled by TRACE_OPTUNA_SANDBOX_DISABLE"
    for layer, function in (
        ("landlock", lambda: _landlock(readable_paths(), [workdir], [("/dev/null", 6)])),
        ("seccomp", _seccomp),
    ):
        if layer in disable:
            missing[layer] = "disabled by TRACE_OPTUNA_SANDBOX_DISABLE"
            continue
        try:
            function()
        except (_LayerError, OSError) as error:
            missing[layer] = str(error)
        else:
            active.append(layer)
    return active, missing
