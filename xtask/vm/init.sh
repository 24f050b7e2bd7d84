#!/bin/busybox sh
# /init of the `cargo xtask vm-test` guest (template: xtask/vm/init.sh).
#
# Runs as PID 1 from the initramfs. Everything it needs to know comes from
# /etc/vm-test.conf, written by the host side (xtask/src/vm/initramfs.rs):
#   VM_MODULES   kernel modules to insmod, in dependency order (/lib/modules/NAME.ko)
#   VM_TESTS     test executables, run one after the other
#   VM_EXEC      if set: a shell command to run instead of the tests
#   VM_WORKDIR   working directory for the tests (cargo's: the package root)
#   "$@"         arguments for every test executable (set with `set --`)
#
# The host parses these console lines (keep them stable):
#   VM-TEST-BOOT: ...            userspace is up (guest uptime in seconds)
#   VM-TEST-RUN [i/n] NAME       a test executable starts
#   VM-TEST-BINARY: NAME rc=N    it finished with exit status N
#   VM-TEST-RESULT: PASS|FAIL …  the last word; then the guest powers off

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

power_off() {
    sync
    poweroff -f
    # poweroff -f should not return; if it does, ask the kernel directly.
    sleep 5
    echo o >/proc/sysrq-trigger
    sleep 60
}

fail_setup() {
    echo "VM-TEST-SETUP-ERROR: $*"
    echo "VM-TEST-RESULT: FAIL setup: $*"
    power_off
}

uptime_s() {
    read -r up _ </proc/uptime
    echo "$up"
}

mkdir -p /proc /sys /dev /tmp /run /root
mount -t proc proc /proc || fail_setup "mount -t proc failed"
mount -t sysfs sysfs /sys || fail_setup "mount -t sysfs failed"
mount -t devtmpfs devtmpfs /dev || fail_setup "mount -t devtmpfs failed"
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
ln -sf /proc/self/fd /dev/fd 2>/dev/null

# A pure cgroup v2 hierarchy (the kernel also runs with cgroup_no_v1=all).
mount -t cgroup2 none /sys/fs/cgroup || fail_setup "mount -t cgroup2 on /sys/fs/cgroup failed"
controllers=$(cat /sys/fs/cgroup/cgroup.controllers)
for c in cpu io memory pids; do
    case " $controllers " in
        *" $c "*) ;;
        *) fail_setup "controller '$c' missing from /sys/fs/cgroup/cgroup.controllers: '$controllers'" ;;
    esac
done

mount -t tracefs tracefs /sys/kernel/tracing || fail_setup "mount -t tracefs on /sys/kernel/tracing failed"
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || echo "vm-test: note: debugfs not mounted"
mount -t bpf bpf /sys/fs/bpf 2>/dev/null || echo "vm-test: note: bpf fs not mounted"

ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up 2>/dev/null || echo "vm-test: note: loopback not up"
hostname ffrtmp-vm

. /etc/vm-test.conf || fail_setup "cannot read /etc/vm-test.conf"

for m in $VM_MODULES; do
    insmod "/lib/modules/$m.ko" || fail_setup "insmod $m failed"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do
    sleep 0.1
    i=$((i + 1))
done
[ -b /dev/vda ] || fail_setup "no /dev/vda: the virtio disk did not appear"

echo "VM-TEST-BOOT: kernel=$(uname -r) uptime=$(uptime_s) cpus=$(nproc)" \
    "mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
echo "vm-test: cgroup2 on /sys/fs/cgroup: controllers '$controllers'," \
    "root subtree_control '$(cat /sys/fs/cgroup/cgroup.subtree_control)'"
echo "vm-test: disk /dev/vda $(cat /sys/block/vda/dev) ($(($(cat /sys/block/vda/size) / 2048)) MiB)," \
    "scheduler '$(cat /sys/block/vda/queue/scheduler)'"

export CI=true
export RUST_BACKTRACE=1
export HOME=/root USER=root LOGNAME=root
export FFRTMP_VM_TEST=1
export FFRTMP_VM_DISK=/dev/vda

if [ -n "${VM_EXEC:-}" ]; then
    echo "==== VM-TEST-RUN [1/1] exec ===="
    start=$(uptime_s)
    (cd /root && sh -c "$VM_EXEC")
    rc=$?
    echo "VM-TEST-BINARY: exec rc=$rc secs=$(awk "BEGIN {printf \"%.1f\", $(uptime_s) - $start}")"
    if [ $rc -eq 0 ]; then
        echo "VM-TEST-RESULT: PASS binaries=1 failed=0"
    else
        echo "VM-TEST-RESULT: FAIL binaries=1 failed=1 failed_binaries=exec"
    fi
    power_off
fi

mkdir -p "$VM_WORKDIR"
export CARGO_MANIFEST_DIR="$VM_WORKDIR"
n=0
for t in $VM_TESTS; do n=$((n + 1)); done
i=0
failed=0
failed_names=
for t in $VM_TESTS; do
    i=$((i + 1))
    name=${t##*/}
    echo
    echo "==== VM-TEST-RUN [$i/$n] $name ===="
    start=$(uptime_s)
    (cd "$VM_WORKDIR" && "$t" "$@")
    rc=$?
    echo "VM-TEST-BINARY: $name rc=$rc secs=$(awk "BEGIN {printf \"%.1f\", $(uptime_s) - $start}")"
    if [ $rc -ne 0 ]; then
        failed=$((failed + 1))
        failed_names="$failed_names${failed_names:+,}$name"
    fi
done

echo
left=$(find /sys/fs/cgroup -mindepth 1 -type d 2>/dev/null | head -20)
[ -n "$left" ] && echo "vm-test: note: cgroups left behind after the tests:" && echo "$left" | sed 's/^/vm-test:   /'
bad=$(dmesg | grep -E 'WARNING:|BUG:|Oops|Call Trace' | head -20)
[ -n "$bad" ] && echo "vm-test: note: kernel warnings:" && echo "$bad" | sed 's/^/vm-test:   /'

if [ $failed -eq 0 ]; then
    echo "VM-TEST-RESULT: PASS binaries=$n failed=0"
else
    echo "VM-TEST-RESULT: FAIL binaries=$n failed=$failed failed_binaries=$failed_names"
fi
power_off
