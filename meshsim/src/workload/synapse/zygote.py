"""meshsim's homeserver zygote: imports Synapse once, then forks every node's homeserver.

Forked children share the imported code's memory pages with this process until they write
to them, which is what lets many homeservers fit in little memory. `gc.freeze()` before the
first fork keeps the collector from touching (and so copying) every shared object.

Protocol, one JSON object per line: meshsim writes requests on our stdin, we answer on our
stdout. The first line we write is {"ready": seconds_spent_importing, "unspecialised": n}
(n: code objects kept from specialising, see `keep_code_unspecialised`; null without
`--unspecialised`, or a text saying why it could not be done). A request
{"name", "netns", "covers", "dir", "confinement", "log", "argv"} is answered {"pid": n} once the
child is forked, or {"error": text}. The child runs `synapse.app.homeserver` with `argv` in the
node:
  - in the network namespace at `netns`,
  - in a mount namespace of its own where each [file, target] of `covers` is bound over
    target (the run's hosts file over /etc/hosts, say),
  - confined when `confinement` is given: the plan ({"uid", "gid", "dir", "masks", "binds"})
    that meshsim's runtime/confine.rs makes and carries out for the processes it spawns (keep
    the two in step): every mount read-only but what the plan binds writable, its own /tmp
    and /dev/shm, a /proc that shows only its own processes, no new privileges, no
    capabilities, the node's uid and gid,
  - in `dir`, with stdout and stderr appended to `log`,
  - as the leader of a process group of its own, killed when this process dies.
A child that cannot get there writes why to its log and exits with status 127.

We reap the children ourselves and say how each ended, on a line of its own that may come
between answers: {"exited": pid, "code": status} or {"exited": pid, "signal": number}.
"""

import ctypes
import gc
import json
import os
import random
import select
import signal
import sys
import time
import types

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 0x80000
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_NO_NEW_PRIVS = 38
# The same number on every architecture (syscalls added after 5.1 share one table).
SYS_MOUNT_SETATTR = 442
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1

libc = ctypes.CDLL(None, use_errno=True)


def check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


class MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def mount(source, target, fstype, flags, data, what):
    enc = lambda s: s.encode() if isinstance(s, str) else s
    check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), what)


def confine(plan):
    """Carries out meshsim's plan (runtime/confine.rs, `Plan`): every mount read-only, fresh
    tmpfs masks (its own /tmp), what it needs bound back, its own /dev/shm and /proc, then
    the node's user."""
    # Held before the masks hide them: each is bound back from here.
    fds = [os.open(b["path"], os.O_PATH | os.O_CLOEXEC) for b in plan["binds"]]
    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    check(
        libc.syscall(
            ctypes.c_long(SYS_MOUNT_SETATTR),
            ctypes.c_int(AT_FDCWD),
            b"/",
            ctypes.c_uint(AT_RECURSIVE),
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
        ),
        "make every mount read-only",
    )
    for path, mode in plan["masks"]:
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode:o}", f"a tmpfs on {path}")
    if os.path.isdir("/dev/shm"):
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", "a /dev/shm")
    # Mount points it must pass through, whatever umask meshsim was started with.
    umask = os.umask(0o022)
    for fd, b in zip(fds, plan["binds"]):
        path = b["path"]
        # Under a mask its mount point is made in the fresh tmpfs; elsewhere it exists.
        try:
            if b["is_dir"]:
                os.makedirs(path, mode=0o755, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
        except OSError:
            pass
        mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC, None, f"bind {path}")
        flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | (0 if b["writable"] else MS_RDONLY)
        mount(None, path, None, flags, None, f"remount {path}")
        os.close(fd)
    os.umask(umask)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible", "a /proc")
    # No exec may grant anything from now on (the bounding set stays: see confine.rs).
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    os.setgroups([])
    os.setresgid(plan["gid"], plan["gid"], plan["gid"])
    # From root to another uid: the permitted, effective and ambient capabilities go.
    os.setresuid(plan["uid"], plan["uid"], plan["uid"])
    os.environ["HOME"] = plan["dir"]


def enter_node(request):
    """Everything between fork and the homeserver's main, in the child."""
    os.setpgid(0, 0)
    # Its command line stays the zygote's; its name (ps -o comm, top) says whose it is.
    name = f"synapse {request.get('name', '')}".strip().encode()[:15]
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() == 1:
        # The zygote died between fork and prctl: nobody would stop us.
        os._exit(1)
    netns = request.get("netns")
    if netns:
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        check(libc.setns(fd, CLONE_NEWNET), f"setns({netns})")
        os.close(fd)
    covers = request.get("covers") or []
    confinement = request.get("confinement")
    if covers or confinement:
        check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        # Slave first, so our binds never propagate back to the host's mount tree.
        check(libc.mount(None, b"/", None, MS_SLAVE | MS_REC, None), "make / a slave mount")
        for file, target in covers:
            check(
                libc.mount(file.encode(), target.encode(), None, MS_BIND, None),
                f"bind {file} over {target}",
            )
    if confinement:
        confine(confinement)
        # A change of credentials cleared the death signal.
        check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() == 1:
            os._exit(1)
    # After the binds: a directory entered before them is the read-only one beneath.
    os.chdir(request["dir"])
    # Forked children would otherwise all draw the same "random" numbers.
    random.seed()


def child(request, proxy, main):
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    try:
        # The zygote's wakeup pipe (see `serve`) is not the homeserver's.
        signal.set_wakeup_fd(-1)
        for fd in WAKEUP:
            os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        enter_node(request)
        # A reactor of the child's own: one made before fork would share its epoll
        # descriptor with every sibling.
        from twisted.internet.epollreactor import EPollReactor

        proxy._install_real_reactor(EPollReactor())
        sys.argv = ["synapse.app.homeserver", *request["argv"]]
    except BaseException as e:
        print(f"meshsim zygote: could not enter the node: {e}", file=sys.stderr)
        os._exit(127)
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


# CPython 3.11's code object (Include/cpython/code.h): after the object's header, three
# pointers (co_consts, co_names, co_exceptiontable), then `int co_flags` and `short co_warmup`.
CO_FLAGS_OFFSET = 48
CO_WARMUP_OFFSET = 52
# What co_warmup starts at (QUICKENING_INITIAL_WARMUP_VALUE); it counts up to 0.
CO_WARMUP_START = -8


def keep_code_unspecialised():
    """Keeps every code object imported so far from being specialised, in this process and
    in the children it forks; answers how many, or why none.

    Python 3.11 counts a function's calls in its code object and, on the eighth, rewrites
    the function's bytecode in place into its adaptive form, whose inline caches it then
    keeps writing. A forked homeserver would so copy every page of code it runs, each copy
    different (the caches hold numbers each process hands out in its own order), which no
    page merging can share again. With the counter at 0 the interpreter runs the bytecode
    as it is, and a page of code that a child only reads, or whose reference counts go back
    to what they were, stays identical to the zygote's, so ksmd merges it back. The cost is
    the specialising interpreter's speed-up for this code (docs/benchmarks.md, "Density").
    """
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        return f"only on CPython 3.11, not {sys.implementation.name} {sys.version.split()[0]}"

    def fields(code):
        flags = ctypes.c_int.from_address(id(code) + CO_FLAGS_OFFSET).value
        warmup = ctypes.c_short.from_address(id(code) + CO_WARMUP_OFFSET)
        return flags, warmup

    # A code object that has never run: the layout is the one above only if both read right.
    probe = compile("pass", "<probe>", "exec")
    flags, warmup = fields(probe)
    if flags != probe.co_flags or warmup.value != CO_WARMUP_START:
        return "this Python's code objects are not laid out as 3.11's"
    codes = {}
    stack = [f.__code__ for f in gc.get_objects() if type(f) is types.FunctionType]
    while stack:
        code = stack.pop()
        if id(code) in codes:
            continue
        codes[id(code)] = code
        stack.extend(c for c in code.co_consts if type(c) is types.CodeType)
    kept = 0
    for code in codes.values():
        flags, warmup = fields(code)
        if flags == code.co_flags and CO_WARMUP_START <= warmup.value <= 0:
            warmup.value = 0
            kept += 1
    return kept


def answer(value):
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def main():
    started = time.monotonic()
    # Installed before anything imports Twisted's reactor, which would otherwise install a
    # real one here, shared by every child.
    from twisted.internet.main import installReactor

    from synapse.app.complement_fork_proxied_reactor import ProxiedReactor

    proxy = ProxiedReactor()
    installReactor(proxy)
    import synapse.app.homeserver as homeserver

    # What a running homeserver imports later, so its children share that too.
    for module in (
        "synapse.federation.sender",
        "synapse.handlers.sync",
        "synapse.handlers.federation_event",
        "synapse.rest.client.sync",
        "synapse.storage.databases.main",
    ):
        __import__(module)
    gc.collect()
    unspecialised = keep_code_unspecialised() if "--unspecialised" in sys.argv[1:] else None
    gc.freeze()
    answer({"ready": round(time.monotonic() - started, 3), "unspecialised": unspecialised})
    serve(proxy, homeserver.main)


# The pipe a SIGCHLD wakes `serve` through: the signal's own handler (in C) writes to it,
# so nothing is written to our stdout from inside a signal handler.
WAKEUP = ()


def reap():
    """Says how every child that ended since the last call ended."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if os.WIFSIGNALED(status):
            answer({"exited": pid, "signal": os.WTERMSIG(status)})
        else:
            answer({"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def serve(proxy, main):
    global WAKEUP
    wake_r, wake_w = os.pipe()
    WAKEUP = (wake_r, wake_w)
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    pending = b""
    while True:
        readable, _, _ = select.select([0, wake_r], [], [])
        if wake_r in readable:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
            reap()
        if 0 not in readable:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request_line(line.decode(), proxy, main)


def request_line(line, proxy, main):
    """Forks the homeserver one request line asks for, and answers."""
    if not line.strip():
        return
    try:
        request = json.loads(line)
        for key in ("dir", "log", "argv"):
            if key not in request:
                raise ValueError(f"the request has no {key!r}")
    except ValueError as e:
        answer({"error": f"bad request: {e}"})
        return
    try:
        pid = os.fork()
    except OSError as e:
        answer({"error": f"fork: {e}"})
        return
    if pid == 0:
        child(request, proxy, main)
    answer({"pid": pid})


if __name__ == "__main__":
    main()
