#!/bin/sh
# tools/vm/guest-init.sh — the guest's PID 1, started by tools/vm/vmrun's kernel command line.
#
# The root file system is the host's / (virtiofs, read-only).  This script mounts what programs
# expect from a booted system (proc, sys, dev, bpffs, tracefs, cgroup2, tmpfs for scratch), mounts
# the writable shares vmrun lists, runs the command from the control directory in the host's
# working directory with its output on the virtio-serial ports, reports the exit status on the
# "vmrun.status" port and powers the machine off.  There is no service manager and no network
# (only loopback); kernel modules are not available (none are unpacked).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=${TERM:-dumb}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
# The host's /tmp is read-only here (and holds the control directory): scratch goes to tmpfs.
mkdir -p /run/tmp && chmod 1777 /run/tmp
export TMPDIR=/run/tmp
ip link set lo up 2>/dev/null

ctl= cwd=/
for arg in $(cat /proc/cmdline); do
    case $arg in
        vmrun.ctl=*) ctl=${arg#vmrun.ctl=} ;;
        vmrun.cwd=*) cwd=${arg#vmrun.cwd=} ;;
    esac
done

# Share "rwN" belongs at the path on line N+1 of rw-dirs.
n=0
while IFS= read -r dir; do
    [ -n "$dir" ] || continue
    mount -t virtiofs "rw$n" "$dir" || echo "guest-init: cannot mount share rw$n on $dir" > /dev/console
    n=$((n + 1))
done < "$ctl/rw-dirs"

# The /dev node of the virtio-serial port with a given name (the kernel numbers them vportXpY).
port_named() {
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name" 2>/dev/null)" = "$1" ] && { echo "/dev/${p##*/}"; return; }
    done
    echo /dev/console
}
out=$(port_named vmrun.stdout)
err=$(port_named vmrun.stderr)
status_port=$(port_named vmrun.status)

# The caller's PATH, so `python3` is the interpreter (and environment) the caller would get.
[ -s "$ctl/path" ] && PATH=$(cat "$ctl/path")
cd "$cwd" 2>/dev/null || cd /
shell=/bin/sh
[ -x /bin/bash ] && shell=/bin/bash
"$shell" "$ctl/command" < /dev/null > "$out" 2> "$err"
status=$?
[ "$status_port" != /dev/console ] && echo "$status" > "$status_port"
sync
echo o > /proc/sysrq-trigger    # power off: qemu exits
sleep 10
echo b > /proc/sysrq-trigger    # if that failed, reset (qemu runs with -no-reboot, so it exits)
