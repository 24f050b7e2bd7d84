#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into fuzz/seeds/<target>/.

The seeds are small and real: the repository's example configurations, this
machine's /proc/self/mountinfo, /proc/self/cgroup and stat lines, datagrams
captured from the proc connector, ring buffer records of this process, and
the two structs the eBPF loader reads cut out of the running kernel's BTF
(/sys/kernel/btf/vmlinux is ~5 MB; the cut is ~1 KB and keeps the real
offsets). The outputs are committed; rerun this (as root, for the proc
connector) only to refresh them: `python3 fuzz/seeds/make-seeds.py`.
Inputs that need something this machine lacks are left as they are.
"""

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

SEEDS = Path(__file__).resolve().parent
ROOT = SEEDS.parent.parent


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


# --- watch configurations -------------------------------------------------

# Every key of the schema, as in config.rs's round-trip test.
EXTENDED_YAML = """\
target_commands: [ffmpeg, gst-launch-1.0, x264]
scan_interval: 500ms
backend: poll
cgroup_root: jobs
default_limits: {cpu_max: "max 50000", memory_limit: 100, io_max: ["8:0 wbps=2M riops=100"], nice: 3}
filters:
  parent_match: ancestor
  allowed_parents: [1]
  blocked_uids: [0]
  allowed_users: [root]
  max_runtime: 90m
commands:
  ffmpeg:
    limits: {cpu_quota: 150, memory_max: max, io_max: []}
    filters: {dir_match: prefix, blocked_dirs: [/tmp], allowed_dirs: [/srv/media], min_runtime: 1s}
  gst-launch-1.0:
    limits: {memory_max: 5000000, cpu_weight: 50}
metrics: {listen: "[::1]:9000"}
state: {enabled: true, path: /var/lib/ffrtmp/state.json, flush_interval: 1m30s}
retry: {enabled: false, max_attempts: 7}
"""

EXTENDED_TOML = """\
target_commands = ["ffmpeg", "gst-launch-1.0", "x264"]
scan_interval = "500ms"
backend = "poll"
cgroup_root = "jobs"

[default_limits]
cpu_max = "max 50000"
memory_limit = 100
io_max = ["8:0 wbps=2M riops=100"]
nice = 3

[filters]
parent_match = "ancestor"
allowed_parents = [1]
blocked_uids = [0]
allowed_users = ["root"]
max_runtime = "90m"

[commands.ffmpeg.limits]
cpu_quota = 150
memory_max = "max"
io_max = []

[commands.ffmpeg.filters]
dir_match = "prefix"
blocked_dirs = ["/tmp"]
allowed_dirs = ["/srv/media"]
min_runtime = "1s"

[commands."gst-launch-1.0".limits]
memory_max = 5000000
cpu_weight = 50

[metrics]
listen = "[::1]:9000"

[state]
enabled = true
path = "/var/lib/ffrtmp/state.json"
flush_interval = "1m30s"

[retry]
enabled = false
max_attempts = 7
"""


def configs():
    examples = ROOT / "examples/config"
    write("config_yaml", "example-watch-config.yaml", (examples / "watch-config.yaml").read_bytes())
    write("config_toml", "example-watch-config.toml", (examples / "watch-config.toml").read_bytes())
    write("config_yaml", "every-key.yaml", EXTENDED_YAML)
    write("config_toml", "every-key.toml", EXTENDED_TOML)
    # The DaemonSet's configuration, embedded in its ConfigMap.
    lines = (ROOT / "deploy/kubernetes/configmap.yaml").read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == "watch-config.yaml: |") + 1
    body = [l[4:] for l in lines[start:] if l.startswith("    ") or not l.strip()]
    write("config_yaml", "kubernetes-configmap.yaml", "\n".join(body).rstrip() + "\n")


# --- limit values: the first byte picks the parser (fuzz/src/lib.rs) ------

LIMITS = [
    (0, "cpu-quota", "150"),
    (1, "cpu-max", "200000 100000"),
    (1, "cpu-max-max", "max 50000"),
    (2, "cpu-weight", "100"),
    (3, "memory-limit", "2048"),
    (4, "memory-max", "1G"),
    (5, "io-max", "8:0 rbps=1M wbps=20M riops=100 wiops=200"),
    (6, "nice", "-5"),
    (7, "size", "4096K"),
    (8, "cgroup-root", "/system.slice/ffrtmp-watch.service/jobs"),
    (9, "job-id", "cam-1.main_2"),
    (10, "listen", "[::1]:9464"),
    (11, "target", "gst-launch-1.0"),
    (12, "scan-interval", "1m30s"),
    (13, "flush-interval", "30s"),
    (14, "retry-attempts", "3"),
    (15, "duration", "1.5h"),
]


def limit_values():
    for which, name, value in LIMITS:
        write("limits", f"{which:02}-{name}", bytes([which]) + value.encode())


# --- the proc connector ---------------------------------------------------

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1


def proc_connector():
    """A few real datagrams: fork, exec, exit (and whatever else comes)."""
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        s.bind((os.getpid(), CN_IDX_PROC))
    except OSError as e:
        print(f"proc_connector: kept the committed seeds ({e})", file=sys.stderr)
        return
    # nlmsghdr + cn_msg + PROC_CN_MCAST_LISTEN (netlink.rs's subscription_message)
    msg = struct.pack("=IHHII", 40, 3, 0, 0, os.getpid())
    msg += struct.pack("=IIIIHH", CN_IDX_PROC, 1, 0, 0, 4, 0) + struct.pack("=I", 1)
    s.send(msg)
    s.settimeout(0.5)
    subprocess.run(["true"], check=True)
    seen = {}
    deadline = time.time() + 3
    while time.time() < deadline and len(seen) < 4:
        try:
            data = s.recv(65536)
        except socket.timeout:
            subprocess.run(["true"], check=True)
            continue
        if len(data) >= 40:
            what = struct.unpack_from("=I", data, 36)[0]
            seen.setdefault(what, data)
    s.close()
    names = {0x0: "ack", 0x1: "fork", 0x2: "exec", 0x80000000: "exit", 0x4: "uid", 0x40: "gid", 0x80: "comm"}
    for what, data in seen.items():
        write("proc_connector", f"real-{names.get(what, hex(what))}", data)
    # Two messages in one datagram (the kernel may batch), 4-byte aligned.
    if 2 in seen and 0x80000000 in seen:
        first = seen[2] + b"\0" * (-len(seen[2]) % 4)
        two = bytearray(first + seen[0x80000000])
        struct.pack_into("=H", two, 4, 0)  # not NLMSG_DONE: the loop goes on
        write("proc_connector", "two-messages", bytes(two))


# --- eBPF ring buffer records (ffrtmp-common's Event) ---------------------

def ring_events():
    stat = Path("/proc/self/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ppid, start_ticks = int(fields[1]), int(fields[19])
    start_ns = start_ticks * (1_000_000_000 // os.sysconf("SC_CLK_TCK"))
    now = time.monotonic_ns()
    pid, uid = os.getpid(), os.getuid()

    def event(kind, exit_status, comm):
        return struct.pack("=6I2Q16s", kind, pid, pid, ppid, uid, exit_status, start_ns, now, comm)

    write("ring_event", "exec-ffmpeg", event(1, 0, b"ffmpeg"))
    write("ring_event", "exit-status-3", event(2, 3 << 8, b"gst-launch-1.0"))
    write("ring_event", "exit-signal-9-long-comm", event(2, 9, b"a-very-long-com"))


# --- BTF: task_struct and signal_struct of the running kernel --------------

BTF = Path("/sys/kernel/btf/vmlinux")
WANTED = {
    # comm (char[16]) brings an array type along.
    "task_struct": ["pid", "tgid", "real_parent", "parent", "group_leader", "start_boottime", "exit_code", "signal", "comm"],
    "signal_struct": ["live", "nr_threads", "flags", "group_exit_code"],
}
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
TYPE_TAG, ENUM64 = 18, 19


class Btf:
    def __init__(self, data):
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("=HBBIIIII", data)
        assert magic == 0xEB9F, "not native-endian BTF"
        self.types_data = data[hdr_len + type_off : hdr_len + type_off + type_len]
        self.strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        self.types = [None]
        at = 0
        while at < len(self.types_data):
            name_off, info, size_or_type = struct.unpack_from("=III", self.types_data, at)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            extra = {INT: 4, 14: 4, 17: 4, ARRAY: 12, STRUCT: 12 * vlen, UNION: 12 * vlen, 15: 12 * vlen,
                     ENUM64: 12 * vlen, ENUM: 8 * vlen, 13: 8 * vlen}.get(kind, 0)
            self.types.append((at, name_off, info, size_or_type, self.types_data[at + 12 : at + 12 + extra]))
            at += 12 + extra

    def name(self, off):
        return self.strings[off : self.strings.index(b"\0", off)].decode()

    def struct_id(self, name):
        return next(i for i, t in enumerate(self.types) if t and (t[2] >> 24) & 0x1F == STRUCT and self.name(t[1]) == name)


class Cut:
    """A new BTF holding only what the wanted members need."""

    def __init__(self, src):
        self.src, self.ids, self.records, self.strings = src, {}, [], bytearray(b"\0")

    def s(self, name):
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(self, record):
        self.records.append(record)
        return len(self.records)

    def ty(self, tid):
        """Copies type `tid` (pointers become `void *`; aggregates whole,
        with their members' types) and returns its new id."""
        if tid == 0:
            return 0
        if tid in self.ids:
            return self.ids[tid]
        _, name_off, info, size_or_type, extra = self.src.types[tid]
        kind = (info >> 24) & 0x1F
        name = self.src.name(name_off)
        if kind == PTR:
            new = self.add([self.s(name), info, 0, b""])
        elif kind in (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG):
            rec = [self.s(name), info, 0, b""]
            new = self.add(rec)
            self.ids[tid] = new
            rec[2] = self.ty(size_or_type)
        elif kind == ARRAY:
            elem, index, n = struct.unpack("=III", extra)
            rec = [self.s(name), info, 0, b""]
            new = self.add(rec)
            self.ids[tid] = new
            rec[3] = struct.pack("=III", self.ty(elem), self.ty(index), n)
        elif kind in (STRUCT, UNION):
            return self.aggregate(tid, None)
        else:  # int, enum, float: self-contained
            new = self.add([self.s(name), info, size_or_type, extra])
        self.ids[tid] = new
        return new

    def aggregate(self, tid, keep):
        """Struct or union `tid` with the members named in `keep` (None: all),
        descending into anonymous members that hold one of them."""
        _, name_off, info, size, extra = self.src.types[tid]
        rec = [self.s(self.src.name(name_off)), info, size, b""]
        new = self.add(rec)
        self.ids.setdefault(tid, new)
        members = []
        for i in range(info & 0xFFFF):
            m_name_off, m_type, m_off = struct.unpack_from("=III", extra, 12 * i)
            m_name = self.src.name(m_name_off)
            if keep is None or m_name in keep:
                members.append((self.s(m_name), self.ty(m_type), m_off))
            elif not m_name and self.holds(m_type, keep):
                members.append((0, self.aggregate(self.resolve(m_type), keep), m_off))
        rec[1] = (info & ~0xFFFF) | len(members)
        rec[3] = b"".join(struct.pack("=III", *m) for m in members)
        return new

    def resolve(self, tid):
        while (self.src.types[tid][2] >> 24) & 0x1F in (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG):
            tid = self.src.types[tid][3]
        return tid

    def holds(self, tid, keep, depth=0):
        tid = self.resolve(tid)
        _, _, info, _, extra = self.src.types[tid]
        if (info >> 24) & 0x1F not in (STRUCT, UNION) or depth > 8:
            return False
        for i in range(info & 0xFFFF):
            m_name_off, m_type, _ = struct.unpack_from("=III", extra, 12 * i)
            m_name = self.src.name(m_name_off)
            if m_name in keep or (not m_name and self.holds(m_type, keep, depth + 1)):
                return True
        return False

    def blob(self):
        types = b"".join(struct.pack("=III", n, i, s) + e for n, i, s, e in self.records)
        hdr = struct.pack("=HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(self.strings))
        return hdr + types + bytes(self.strings)


def btf():
    try:
        src = Btf(BTF.read_bytes())
    except OSError as e:
        print(f"btf: kept the committed seeds ({e})", file=sys.stderr)
        return
    cut = Cut(src)
    for strukt, members in WANTED.items():
        cut.aggregate(src.struct_id(strukt), set(members))
    write("btf", f"vmlinux-{os.uname().release}-cut", cut.blob())


def btf_anonymous_members():
    """Members inside anonymous structs and unions behind a typedef, as
    btf.rs's unit test builds them, under the names the loader looks up."""
    cut = Cut(None)

    def ty(name, kind, vlen, size_or_type, extra=b""):
        return cut.add([cut.s(name), (kind << 24) | vlen, size_or_type, extra])

    def members(*ms):
        return b"".join(struct.pack("=III", cut.s(n), t, off) for n, t, off in ms)

    i32 = ty("int", INT, 0, 4, struct.pack("=I", 32))
    i64 = ty("long", INT, 0, 8, struct.pack("=I", 64))
    ptr = ty("", PTR, 0, 0)
    union = ty("", UNION, 2, 8, members(("exit_code", i32, 0), ("start_boottime", i64, 0)))
    inner = ty("", STRUCT, 2, 16, members(("tgid", i32, 0), ("", union, 64)))
    typedef = ty("T", TYPEDEF, 0, inner)
    ty("task_struct", STRUCT, 3, 40, members(("pid", i32, 0), ("", typedef, 64), ("real_parent", ptr, 256)))
    write("btf", "anonymous-members", cut.blob())


# --- /proc files ------------------------------------------------------------

def proc_files():
    mountinfo = Path("/proc/self/mountinfo").read_bytes()
    cgroup = Path("/proc/self/cgroup").read_bytes()
    write("hierarchy", "this-machine", mountinfo + b"\0" + cgroup)
    write("hierarchy", "unified", (
        b"35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\0"
        b"0::/system.slice/ffrtmp.service\n"))
    write("hierarchy", "legacy-comounted", (
        b"31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        b"33 30 0:29 / /sys/fs/cgroup/memory rw master:3 - cgroup cgroup rw,memory\n"
        b"34 30 0:30 / /sys/fs/cgroup/blk\\040io rw - cgroup cgroup rw,blkio\0"
        b"3:cpu,cpuacct:/a\n4:memory:/b\n5:blkio:/\n"))
    write("proc_stat", "self", Path("/proc/self/stat").read_bytes())
    write("proc_stat", "init", Path("/proc/1/stat").read_bytes())
    kthread = Path("/proc/2/stat")
    if kthread.exists() and b"kthreadd" in kthread.read_bytes():
        write("proc_stat", "kthreadd", kthread.read_bytes())
    # A comm with spaces and parentheses, as a process can name itself.
    code = ("import ctypes,sys; ctypes.CDLL(None).prctl(15, b'a) b (c', 0, 0, 0); "
            "sys.stdout.buffer.write(open('/proc/self/stat','rb').read())")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True).stdout
    write("proc_stat", "comm-with-parens", out)
    # A zombie: a child that exited and is not reaped yet.
    child = subprocess.Popen(["true"])
    for _ in range(100):
        stat = Path(f"/proc/{child.pid}/stat").read_bytes()
        if b") Z " in stat:
            write("proc_stat", "zombie", stat)
            break
        time.sleep(0.01)
    child.wait()


if __name__ == "__main__":
    configs()
    limit_values()
    proc_connector()
    ring_events()
    btf()
    btf_anonymous_members()
    proc_files()
    for d in sorted(SEEDS.iterdir()):
        if d.is_dir():
            files = list(d.iterdir())
            print(f"{d.name}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")
