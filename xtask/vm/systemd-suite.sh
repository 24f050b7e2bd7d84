#!/bin/bash
# The `cargo xtask vm-systemd` suite (template: xtask/vm/systemd-suite.sh).
#
# Runs inside a Debian guest whose PID 1 is systemd, started by
# ffrtmp-vm-suite.service once the system is up. It does what an operator
# does with the .deb the host built (/root/ffrtmp.deb): install it, enable
# the unit, start workloads from other units and from a shell, reload,
# restart, kill -9, upgrade, stop; and checks what the system really did
# (/proc/<pid>/cgroup, the cgroup files, unit states, the journal).
#
# The host parses these console lines (the same as vm-test's /init):
#   VM-TEST-BOOT: ...                 the suite starts (systemd=N kernel=K)
#   test NAME ... ok | FAILED         one check
#   test result: ...                  the counts, libtest's format
#   VM-TEST-BINARY: / VM-TEST-RESULT: the last word; then the guest powers off
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export SYSTEMD_PAGER= SYSTEMD_COLORS=0

UNIT=ffrtmp-watch.service
CONFIG=/etc/ffrtmp/watch-config.yaml
TARGET=vmtgt-sleep
STARTED=$(date +%s.%N)
passed=0
failed=0
failures=()

# The boot is finished (this unit does not hold it up: Type=exec).
systemctl is-system-running --wait >/dev/null
systemd_version=$(systemctl --version | awk 'NR == 1 { print $2 }')
# A line of its own: systemd 257 writes terminal resets to the tty first.
echo
echo "VM-TEST-BOOT: kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime) systemd=$systemd_version release=$(. /etc/os-release; echo "$VERSION_CODENAME")"
echo "==== VM-TEST-RUN [1/1] systemd-suite ===="

# Where the unit's jobs are (docs/operations.md, "Delegation and the cgroup
# root"): beside the daemon in the unit's cgroup when systemd starts it in
# the leaf (DelegateSubgroup=, 254+); else at the absolute root /ffrtmp, so
# that a restart can start the daemon in the unit's cgroup while jobs run.
if [ "$systemd_version" -ge 254 ]; then
    JOBS=/system.slice/$UNIT/jobs
else
    JOBS=/ffrtmp
fi

# --- helpers ------------------------------------------------------------------

# Run check function $2 as test $1: ok when it returns 0. Its output (why it
# failed) is indented under the FAILED line. In this shell, not a subshell:
# the checks hand pids on to the later ones.
check() {
    local name=$1 out=/run/ffrtmp-vm-check.out
    shift
    if "$@" >"$out" 2>&1; then
        echo "test $name ... ok"
        passed=$((passed + 1))
    else
        echo "test $name ... FAILED"
        sed 's/^/    /' "$out"
        failed=$((failed + 1))
        failures+=("$name")
    fi
}

# wait_for SECONDS CMD...: until CMD succeeds (every 0.2 s), or fail.
wait_for() {
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "timed out waiting for: $*"
            return 1
        fi
        sleep 0.2
    done
}

unit_active() { [ "$(systemctl is-active "$1")" = active ]; }
main_pid() { systemctl show -p MainPID --value "$UNIT"; }
# Unit $1 has a main process (read anew at each try of wait_for: an
# argument like "$(main_pid)" would be read once, before the first).
has_main_pid() { local pid; pid=$(systemctl show -p MainPID --value "$1"); [ -n "$pid" ] && [ "$pid" != 0 ]; }
# The daemon runs with a main pid other than $1 (it was restarted).
has_new_main_pid() { local pid; pid=$(main_pid); [ -n "$pid" ] && [ "$pid" != 0 ] && [ "$pid" != "$1" ]; }
# The main pid of a running daemon (never 0: `kill 0` would hit this suite).
running_main_pid() {
    local pid
    pid=$(main_pid)
    [ -n "$pid" ] && [ "$pid" != 0 ] || { echo "$UNIT has no main process"; diagnose; return 1; }
    echo "$pid"
}

# The job cgroup (a path under /sys/fs/cgroup) of process $1, if it is in one
# of the daemon's jobs.
job_of() {
    local cg
    cg=$(sed -n 's/^0:://p' "/proc/$1/cgroup" 2>/dev/null) || return 1
    case "$cg" in
        "$JOBS"/auto-*) echo "/sys/fs/cgroup$cg" ;;
        *) return 1 ;;
    esac
}

# governed PID QUOTA: PID runs in a job of the daemon whose cpu.max is QUOTA.
governed() {
    local job
    job=$(job_of "$1") || { echo "$1 is not in a job: $(cat "/proc/$1/cgroup" 2>&1)"; return 1; }
    [ "$(cat "$job/cpu.max")" = "$2" ] || { echo "$job/cpu.max is $(cat "$job/cpu.max"), not $2"; return 1; }
}

alive() { kill -0 "$1" 2>/dev/null && [ "$(cut -d' ' -f3 "/proc/$1/stat")" != Z ]; }

write_config() {
    cat >"$CONFIG.new" <<EOF
target_commands: [$TARGET]
default_limits:
  cpu_quota: $1
EOF
    mv "$CONFIG.new" "$CONFIG"
}

journal_has() { journalctl -u "$UNIT" --no-pager -o cat | grep -qF -- "$1"; }

diagnose() {
    echo "--- systemctl status"
    systemctl status --no-pager "$UNIT" 2>&1 | tail -n 15
    echo "--- journal"
    journalctl -u "$UNIT" --no-pager -o short-monotonic 2>&1 | tail -n 25
}

# --- the checks -------------------------------------------------------------------

t_install() {
    dpkg -i /root/ffrtmp.deb || return 1
    /usr/bin/ffrtmp --version || return 1
    systemctl cat "$UNIT" >/dev/null || return 1
    # Installed, not enabled, not started (the operator decides).
    [ "$(systemctl is-enabled "$UNIT")" = disabled ] || { systemctl is-enabled "$UNIT"; return 1; }
    ! unit_active "$UNIT"
}

t_enable_now() {
    write_config 20
    systemctl enable --now "$UNIT" || { diagnose; return 1; }
    wait_for 60 unit_active "$UNIT" || { diagnose; return 1; }
    wait_for 30 journal_has "Event source:" || { diagnose; return 1; }
}

# A workload started as a unit of its own (systemd-run) is governed.
t_target_from_another_unit() {
    systemd-run --unit vmtgt-unit --property=Type=exec /usr/local/bin/$TARGET 3600 >/dev/null || return 1
    wait_for 10 has_main_pid vmtgt-unit || return 1
    UNIT_PID=$(systemctl show -p MainPID --value vmtgt-unit)
    wait_for 30 governed "$UNIT_PID" "20000 100000" || { governed "$UNIT_PID" "20000 100000"; diagnose; return 1; }
}

# One started from a login-like shell (its own session, in no unit's service
# cgroup of its own), is governed too.
t_target_from_a_shell() {
    setsid bash -lc "exec /usr/local/bin/$TARGET 3600" </dev/null >/dev/null 2>&1 &
    SHELL_PID=$!
    wait_for 30 governed "$SHELL_PID" "20000 100000" || { governed "$SHELL_PID" "20000 100000"; diagnose; return 1; }
}

t_reload_changes_a_running_jobs_limit() {
    write_config 40
    systemctl reload "$UNIT" || { diagnose; return 1; }
    wait_for 30 governed "$UNIT_PID" "40000 100000" || { governed "$UNIT_PID" "40000 100000"; diagnose; return 1; }
    governed "$SHELL_PID" "40000 100000"
}

# After a restart, a kill -9 or an upgrade: the unit is active again, the
# workloads live, still in their jobs with their limits, and a new target is
# governed (the new daemon works, not just the old jobs).
came_back() {
    local why=$1
    wait_for 60 unit_active "$UNIT" || { echo "$UNIT not active after $why"; diagnose; return 1; }
    for pid in "$UNIT_PID" "$SHELL_PID"; do
        alive "$pid" || { echo "workload $pid died in $why"; return 1; }
        governed "$pid" "40000 100000" || { diagnose; return 1; }
    done
    systemd-run --unit "vmtgt-after-$2" --property=Type=exec /usr/local/bin/$TARGET 3600 >/dev/null || return 1
    wait_for 10 has_main_pid "vmtgt-after-$2" || return 1
    local fresh
    fresh=$(systemctl show -p MainPID --value "vmtgt-after-$2")
    wait_for 30 governed "$fresh" "40000 100000" || { governed "$fresh" "40000 100000"; diagnose; return 1; }
}

t_restart_keeps_workloads() {
    local before
    before=$(running_main_pid) || { echo "$before"; return 1; }
    systemctl restart "$UNIT" || { diagnose; return 1; }
    came_back "systemctl restart" restart || return 1
    [ "$(main_pid)" != "$before" ] || { echo "the main pid did not change"; return 1; }
}

t_kill9_restarts_and_keeps_workloads() {
    local before
    before=$(running_main_pid) || { echo "$before"; return 1; }
    kill -9 "$before" || return 1
    wait_for 30 has_new_main_pid "$before" || { diagnose; return 1; }
    came_back "kill -9 of the main process" kill9
}

t_upgrade_keeps_workloads() {
    local dir=/root/newer
    rm -rf "$dir"
    dpkg-deb -R /root/ffrtmp.deb "$dir" || return 1
    sed -i 's/^Version: .*/&+vmtest1/' "$dir/DEBIAN/control"
    dpkg-deb -b "$dir" /root/ffrtmp-newer.deb >/dev/null || return 1
    local before
    before=$(running_main_pid) || { echo "$before"; return 1; }
    dpkg -i /root/ffrtmp-newer.deb || { diagnose; return 1; }
    dpkg-query -W -f '${Version}\n' ffrtmp | grep -q '+vmtest1$' || return 1
    came_back "dpkg -i of a newer build" upgrade || return 1
    [ "$(main_pid)" != "$before" ] || { echo "the upgrade did not restart the daemon"; return 1; }
}

t_stop_leaves_workloads_governed() {
    systemctl stop "$UNIT" || { diagnose; return 1; }
    ! unit_active "$UNIT" || return 1
    for pid in "$UNIT_PID" "$SHELL_PID"; do
        alive "$pid" || { echo "workload $pid died at stop"; return 1; }
        governed "$pid" "40000 100000" || return 1
    done
    local status
    status=$(ffrtmp status --cgroup-root "$JOBS") || { echo "$status"; return 1; }
    for pid in "$UNIT_PID" "$SHELL_PID"; do
        printf '%s\n' "$status" | grep -qw "$pid" || { echo "status does not list $pid:"; echo "$status"; return 1; }
    done
}

# The old tool's log lines, through journald.
t_journal_has_the_old_tools_lines() {
    local line
    for line in "Starting auto-attach service..." "Received signal terminated, shutting down..." "Service stopped gracefully"; do
        journal_has "$line" || { echo "the journal lacks: $line"; journalctl -u "$UNIT" --no-pager -o cat | tail -n 20; return 1; }
    done
}

# The OCI image under a real container runtime, run the way the DaemonSet
# runs it (deploy/kubernetes/daemonset.yaml: privileged, the host's PID
# namespace, the host's cgroup tree, BTF, tracefs, debugfs, the ConfigMap's
# file at /etc/ffrtmp): a target started on the host is governed with the
# ConfigMap's limits, and stopping the container leaves it running and
# governed.
t_podman_runs_the_image_as_the_daemonset_does() {
    # The unit's daemon is stopped; end its workloads (this suite's own).
    kill "$UNIT_PID" "$SHELL_PID" 2>/dev/null
    systemctl stop 'vmtgt-*' 2>/dev/null
    local image
    image=$(podman load -q -i /root/ffrtmp.oci.tar | sed -n 's/^Loaded image[^:]*: *//p' | tail -n 1)
    [ -n "$image" ] || { echo "podman load printed no image name"; podman images; return 1; }
    mkdir -p /root/configmap
    cp /root/configmap-watch-config.yaml /root/configmap/watch-config.yaml
    podman run -d --name ffrtmp-ds --privileged --pid=host --network=none \
        -v /sys/fs/cgroup:/sys/fs/cgroup \
        -v /sys/kernel/btf:/sys/kernel/btf:ro \
        -v /sys/kernel/tracing:/sys/kernel/tracing \
        -v /sys/kernel/debug:/sys/kernel/debug \
        -v /root/configmap:/etc/ffrtmp:ro \
        -e FFRTMP_LOG=info \
        "$image" watch --watch-config /etc/ffrtmp/watch-config.yaml --metrics-listen 0.0.0.0:9464 >/dev/null \
        || { echo "podman run failed"; return 1; }
    local logs_ok=0
    wait_for 60 sh -c 'podman logs ffrtmp-ds 2>&1 | grep -q "Event source:"' && logs_ok=1
    [ "$logs_ok" = 1 ] || { echo "the container's daemon did not start:"; podman logs ffrtmp-ds 2>&1 | tail -n 20; return 1; }
    systemd-run --unit vmtgt-ffmpeg --property=Type=exec /usr/local/bin/ffmpeg 3600 >/dev/null || return 1
    wait_for 10 has_main_pid vmtgt-ffmpeg || return 1
    local pid job
    pid=$(systemctl show -p MainPID --value vmtgt-ffmpeg)
    in_ffrtmp_job() { sed -n 's/^0:://p' "/proc/$1/cgroup" | grep -q "^/ffrtmp/auto-ffmpeg-$1\$"; }
    wait_for 30 in_ffrtmp_job "$pid" || {
        echo "$pid is not in /ffrtmp/auto-ffmpeg-$pid: $(cat "/proc/$pid/cgroup")"
        podman logs ffrtmp-ds 2>&1 | tail -n 20
        return 1
    }
    job=/sys/fs/cgroup/ffrtmp/auto-ffmpeg-$pid
    # The ConfigMap's default_limits: cpu_quota 200, memory_limit 4096.
    [ "$(cat "$job/cpu.max")" = "200000 100000" ] || { echo "cpu.max: $(cat "$job/cpu.max")"; return 1; }
    [ "$(cat "$job/memory.max")" = 4294967296 ] || { echo "memory.max: $(cat "$job/memory.max")"; return 1; }
    # podman gives the container a cgroup namespace of its own: the daemon
    # must have joined the host's to move host processes (nsdelegate).
    podman logs ffrtmp-ds 2>&1 | grep -qF "Joined the host's cgroup namespace" \
        || { echo "no 'Joined the host's cgroup namespace' line:"; podman logs ffrtmp-ds 2>&1 | head -n 12; return 1; }
    podman stop -t 10 ffrtmp-ds >/dev/null || { echo "podman stop failed"; return 1; }
    alive "$pid" || { echo "the workload died with the container"; return 1; }
    in_ffrtmp_job "$pid" || { echo "the workload left its job at the container's stop"; return 1; }
    podman rm ffrtmp-ds >/dev/null
    systemctl stop vmtgt-ffmpeg
}

# --- run ------------------------------------------------------------------------------

UNIT_PID=0
SHELL_PID=0
check install_does_not_enable t_install
check enable_now t_enable_now
check target_from_another_unit_is_governed t_target_from_another_unit
check target_from_a_shell_is_governed t_target_from_a_shell
check reload_changes_a_running_jobs_limit t_reload_changes_a_running_jobs_limit
check restart_keeps_workloads_and_takes_them_over t_restart_keeps_workloads
check kill9_restarts_and_takes_the_workloads_over t_kill9_restarts_and_keeps_workloads
check upgrade_keeps_workloads_and_takes_them_over t_upgrade_keeps_workloads
check stop_leaves_workloads_running_and_governed t_stop_leaves_workloads_governed
check journal_has_the_old_tools_lines t_journal_has_the_old_tools_lines
check podman_runs_the_image_as_the_daemonset_does t_podman_runs_the_image_as_the_daemonset_does

# Not a check: the exposure score, for docs/operations.md.
echo "VM-TEST-INFO: $(systemd-analyze security --no-pager "$UNIT" 2>/dev/null | grep -E '^→ Overall exposure level' | sed 's/^→ //')"

secs=$(awk -v s="$STARTED" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
verdict=ok
[ "$failed" -eq 0 ] || verdict=FAILED
echo "test result: $verdict. $passed passed; $failed failed; 0 ignored; 0 measured; 0 filtered out; finished in ${secs}s"
rc=0
[ "$failed" -eq 0 ] || rc=1
echo "VM-TEST-BINARY: systemd-suite rc=$rc secs=$secs"
if [ "$failed" -eq 0 ]; then
    echo "VM-TEST-RESULT: PASS binaries=1 failed=0"
else
    echo "VM-TEST-RESULT: FAIL binaries=1 failed=$failed failed_tests=${failures[*]}"
fi
sync
systemctl poweroff --no-block
