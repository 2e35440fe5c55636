#!/bin/bash
# tools/vm/setup.sh — prepare, once per machine, what tools/vm/vmrun needs to boot Linux 7.2.
#
# The mainline io_uring_bpf_ops feature is in Linux 7.1+, and Debian sid's cloud kernel enables
# it; this machine may run anything older.  We gather:
#   - qemu-system-x86, from this machine's own apt (the only change to the system);
#   - from Debian sid, downloaded as .deb files and unpacked into the cache, never installed:
#     the kernel image, the Rust virtiofsd (older C virtiofsd builds die under seccomp when
#     serving a recent guest), bpftool, and sid's libc6, which those two binaries need because
#     they are linked against a newer glibc than a stable host has.
# sid's package lists live in a private apt directory tree inside the cache, so the system's
# sources, lists, preferences and package cache stay exactly as they were.
#
# Usage: tools/vm/setup.sh [CACHE_DIR]
#   CACHE_DIR defaults to $VMRUN_HOME, else ~/.cache/pybpf-uring-vm (what vmrun reads).
#   env KERNEL_VERSION (default 7.2.13+deb14-cloud-amd64) picks another sid kernel.
# Needs root (for apt-get install of qemu) and HTTP access to deb.debian.org.  Running it again
# is cheap: what is already unpacked is kept.
set -euo pipefail

CACHE=${1:-${VMRUN_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/pybpf-uring-vm}}
KERNEL_VERSION=${KERNEL_VERSION:-7.2.13+deb14-cloud-amd64}
SID_PACKAGES=("linux-binary-$KERNEL_VERSION" "linux-base-$KERNEL_VERSION" virtiofsd bpftool libc6)

say() { printf 'setup.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd -P)
export DEBIAN_FRONTEND=noninteractive

# --- qemu, from the host's distribution --------------------------------------------------------
if ! command -v qemu-system-x86_64 >/dev/null; then
    say "installing qemu-system-x86 with the system's apt"
    apt-get update -q
    apt-get install -y -q --no-install-recommends qemu-system-x86
fi

# --- a private apt tree for sid ----------------------------------------------------------------
APT_DIR=$CACHE/apt
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/debs" "$APT_DIR/empty.d"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" \
    > "$APT_DIR/sources.list"
# The system's extra sources and pin preferences are replaced by an empty directory; the
# downloads run as root because the cache under $HOME is not readable by apt's _apt user.
SID_APT=(-o "Dir::Etc::SourceList=$APT_DIR/sources.list"
         -o "Dir::Etc::SourceParts=$APT_DIR/empty.d"
         -o "Dir::Etc::Preferences=$APT_DIR/empty.d/none"
         -o "Dir::Etc::PreferencesParts=$APT_DIR/empty.d"
         -o "APT::Sandbox::User=root"
         -o "Dir::State::Lists=$APT_DIR/lists"
         -o "Dir::Cache=$APT_DIR/cache"
         -o "APT::Get::List-Cleanup=false")

sid_update() { say "reading Debian sid's package lists"; apt-get "${SID_APT[@]}" -q update; }
sid_download() { (cd "$APT_DIR/debs" && apt-get "${SID_APT[@]}" -q download "${SID_PACKAGES[@]}"); }

KERNEL_DIR=$CACHE/kernel
SIDROOT=$CACHE/sidroot
if [ -f "$KERNEL_DIR/vmlinuz" ] && [ -x "$SIDROOT/usr/libexec/virtiofsd" ] && [ -x "$SIDROOT/usr/sbin/bpftool" ]; then
    say "kernel and sid tools already unpacked in $CACHE"
else
    compgen -G "$APT_DIR/lists/*Packages*" >/dev/null || sid_update
    # Lists from an earlier run may be older than the archive: refresh them once and retry.
    sid_download || { sid_update; sid_download; } \
        || die "cannot download ${SID_PACKAGES[*]} from sid (is $KERNEL_VERSION still in sid? set KERNEL_VERSION)"

    rm -rf "$SIDROOT" "$KERNEL_DIR" "$APT_DIR/kernel-tree"
    mkdir -p "$SIDROOT" "$KERNEL_DIR" "$APT_DIR/kernel-tree"
    for pkg in virtiofsd bpftool libc6; do
        dpkg-deb -x "$(ls "$APT_DIR/debs/${pkg}"_*.deb | tail -n 1)" "$SIDROOT"
    done
    for pkg in "linux-binary-$KERNEL_VERSION" "linux-base-$KERNEL_VERSION"; do
        dpkg-deb -x "$(ls "$APT_DIR/debs/${pkg}"_*.deb | tail -n 1)" "$APT_DIR/kernel-tree"
    done
    MODDIR=$APT_DIR/kernel-tree/usr/lib/modules/$KERNEL_VERSION
    [ -f "$MODDIR/vmlinuz" ] || MODDIR=$APT_DIR/kernel-tree/lib/modules/$KERNEL_VERSION
    for f in vmlinuz config System.map; do
        [ -f "$MODDIR/$f" ] || die "the kernel packages have no $f under modules/$KERNEL_VERSION"
        cp "$MODDIR/$f" "$KERNEL_DIR/"
    done
    rm -rf "$APT_DIR/kernel-tree"   # the modules are not needed: the guest loads none
fi

# --- wrappers: run sid's binaries with sid's own dynamic loader and glibc ----------------------
# The loader is invoked explicitly, so the host's /lib stays in charge of every other program;
# host library directories come after sid's for the libraries libc6 does not carry (libseccomp,
# libcap-ng, libelf, ...).
BIN=$CACHE/bin
mkdir -p "$BIN"
cat > "$BIN/sid-exec" <<'WRAP'
#!/bin/sh
# Run a binary from ../sidroot with sid's ld.so and libraries first (written by tools/vm/setup.sh).
root=$(dirname "$(readlink -f "$0")")/../sidroot
lib=$root/usr/lib/x86_64-linux-gnu
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu" "$@"
WRAP
for tool in usr/libexec/virtiofsd usr/sbin/bpftool; do
    printf '#!/bin/sh\nhere=$(dirname "$(readlink -f "$0")")\nexec "$here/sid-exec" "$here/../sidroot/%s" "$@"\n' \
        "$tool" > "$BIN/${tool##*/}"
done
chmod 755 "$BIN/sid-exec" "$BIN/virtiofsd" "$BIN/bpftool"

"$BIN/virtiofsd" --version >/dev/null || die "the unpacked virtiofsd does not run with sid's glibc"
"$BIN/bpftool" version >/dev/null || die "the unpacked bpftool does not run with sid's glibc"
say "ready: kernel $KERNEL_VERSION in $KERNEL_DIR, virtiofsd and bpftool in $BIN"
echo "VMRUN_HOME=$CACHE"
