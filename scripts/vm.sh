#!/usr/bin/env bash
# scripts/vm.sh: runs one command inside a QEMU virtual machine with
# Debian's stock kernel, which has what our machines' kernel lacks: SoftRoCE
# (rdma_rxe) and DAX (a memmap= pmem region, fsdax, ext4 -o dax).
#
#   scripts/vm.sh [--softroce] [--dax | --eadr] [--check] [--timeout SECONDS] [--mem MIB] -- COMMAND [ARG]...
#
# The guest's root file system is the host's / shared read-only over
# virtio-9p, so the repository, Go, rdma-core and every installed tool are
# at the same paths inside. bin/vm/ of the repository is shared writable
# (mounted at the same path): build test binaries there before booting, and
# write outputs there. /tmp and /run inside are the guest's own tmpfs.
# COMMAND runs with sh -c in the repository's root as root; $VM_RUN is its
# run directory (writable, kept after the run), and the output of COMMAND
# is both printed and kept in $VM_RUN/output.
#
#   --softroce  load rdma_rxe and make rxe0 on a dummy interface dummy0 with
#               the addresses 10.77.0.1/24 .. 10.77.0.4/24
#               (VM_SOFTROCE_ADDRS lists them inside)
#   --dax       make a 512 MiB fsdax namespace from a memmap= region,
#               ext4 on /dev/pmem0, mounted with -o dax at /mnt/dax
#   --eadr      --dax on a QEMU NVDIMM (-machine nvdimm=on,
#               nvdimm-persistence=cpu) instead of the memmap= region: its
#               region reports the persistence domain "cpu_cache" (eADR)
#   --timeout   the whole run, boot included, in seconds (default 600); at
#               the end QEMU is killed by its PID
#
# --check only checks that everything the VM needs is installed: exit 0,
# or 125 saying what is missing (99 when RPSTREAM_SKIP_VM=1 skips).
#
# Exit status: COMMAND's; 124 when the timeout ended the VM; 125 when the VM
# could not run (QEMU, the kernel or busybox missing; the boot or the setup
# failed), with one line on stderr saying what. VM_SKIP_OK=1 turns the 125
# of a missing QEMU, kernel or busybox into exit 0 with the same message
# ("SKIP"), for machines that cannot run QEMU at all (RPSTREAM_SKIP_VM=1
# does the same).
#
# Needs (scripts/deps.sh installs them): qemu-system-x86 linux-image-amd64
# busybox-static rdma-core ibverbs-providers ibverbs-utils ndctl. Nested KVM
# hangs on our machines, so QEMU emulates the CPU (TCG, -cpu max: it has
# CLWB and CLFLUSHOPT): about 5 s to boot, code runs 10 to 50 times slower.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
# rdma, ndctl and mkfs.ext4 live in sbin directories.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

softroce=0 dax=0 eadr=0 check=0 timeout_s=600 mem=2048
while [ $# -gt 0 ]; do
	case "$1" in
	--softroce) softroce=1 ;;
	--dax) dax=1 ;;
	--eadr) dax=1 eadr=1 ;;
	--check) check=1 ;;
	--timeout) timeout_s="$2"; shift ;;
	--mem) mem="$2"; shift ;;
	--) shift; break ;;
	-*) echo "vm: unknown flag $1" >&2; exit 2 ;;
	*) break ;;
	esac
	shift
done
[ $# -gt 0 ] || { echo "usage: scripts/vm.sh [--softroce] [--dax | --eadr] [--check] [--timeout S] [--mem MIB] -- COMMAND..." >&2; exit 2; }

cannot() {
	if [ "${VM_SKIP_OK:-${RPSTREAM_SKIP_VM:-0}}" = 1 ]; then
		echo "vm: SKIP: $* (RPSTREAM_SKIP_VM=1)" >&2
		[ "$check" = 1 ] && exit 99
		exit 0
	fi
	echo "vm: FAIL: $* (scripts/deps.sh installs it; RPSTREAM_SKIP_VM=1 skips the VM tests instead)" >&2
	exit 125
}

qemu="$(command -v qemu-system-x86_64 || true)"
[ -n "$qemu" ] || cannot "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)"
kernel="$(ls -1 /boot/vmlinuz-6.1* 2>/dev/null | sort -V | tail -n1 || true)"
[ -n "$kernel" ] || cannot "no /boot/vmlinuz-6.1* (Debian package linux-image-amd64, bookworm's 6.1 kernel)"
kver="${kernel#/boot/vmlinuz-}"
moddir="/lib/modules/$kver"
[ -d "$moddir" ] || cannot "kernel $kver has no modules in $moddir"
busybox=""
for b in /bin/busybox /usr/bin/busybox "$(command -v busybox || true)"; do
	# The initramfs has no libraries: only a static busybox runs there.
	[ -x "$b" ] || continue
	case "$(LC_ALL=C ldd "$b" 2>&1 || true)" in
	*"not a dynamic executable"*) busybox="$b"; break ;;
	esac
done
[ -n "$busybox" ] || cannot "no statically linked busybox (Debian package busybox-static)"
if [ "$softroce" = 1 ]; then
	command -v rdma >/dev/null || cannot "the rdma tool is not installed (Debian package iproute2)"
	[ -f "$moddir/kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko" ] || cannot "kernel $kver has no rdma_rxe module"
	[ -e /usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so ] || ls /usr/lib/*/libibverbs/librxe-rdmav*.so >/dev/null 2>&1 ||
		cannot "no rxe user-space driver (Debian package ibverbs-providers)"
fi
if [ "$dax" = 1 ]; then
	command -v ndctl >/dev/null || cannot "ndctl is not installed (Debian package ndctl)"
	command -v mkfs.ext4 >/dev/null || cannot "mkfs.ext4 is not installed (Debian package e2fsprogs)"
fi

[ "$check" = 0 ] || exit 0

vmdir="$repo/bin/vm"
mkdir -p "$vmdir"

# The initramfs: static busybox, the modules that reach virtio-9p, and an
# init that mounts the host's / and runs the run's guest script chrooted.
# Built here (never committed) and rebuilt when this script or the kernel
# changes.
mods="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p"
stamp="$(cat "$0" "$repo/scripts/vm-init.sh" | sha256sum | cut -c1-12)-$kver"
initrd="$vmdir/initramfs-$stamp.cpio.gz"
if [ ! -s "$initrd" ]; then
	staging="$(mktemp -d "$vmdir/initramfs.XXXXXX")"
	mkdir -p "$staging/bin" "$staging/modules" "$staging/proc" "$staging/sys" "$staging/dev" "$staging/newroot"
	cp "$busybox" "$staging/bin/busybox"
	for m in $mods; do
		f="$(find "$moddir/kernel" -name "$m.ko" -print -quit)"
		[ -n "$f" ] || { rm -rf "$staging"; cannot "kernel $kver has no module $m"; }
		cp "$f" "$staging/modules/"
	done
	printf '%s\n' $mods >"$staging/modules/order"
	cp "$repo/scripts/vm-init.sh" "$staging/init"
	chmod 755 "$staging/init"
	(cd "$staging" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1) >"$initrd.tmp"
	mv "$initrd.tmp" "$initrd"
	rm -rf "$staging"
	# Older initramfs files of this kernel are stale.
	find "$vmdir" -maxdepth 1 -name "initramfs-*-$kver.cpio.gz" ! -name "$(basename "$initrd")" -delete
fi

# Run directories are kept for their console and output; a day is enough.
find "$vmdir" -maxdepth 1 -name 'run.*' -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
run="$(mktemp -d "$vmdir/run.XXXXXX")"
{
	echo "# generated by scripts/vm.sh"
	printf 'export VM_RUN=%q VM_SOFTROCE=%d VM_DAX=%d VM_EADR=%d\n' "$run" "$softroce" "$dax" "$eadr"
	printf 'export PATH=%q\n' "/usr/local/go/bin:$HOME/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	printf 'export HOME=/root TMPDIR=/tmp\n'
	printf 'cd %q\n' "$repo"
	printf '. %q\n' "$repo/scripts/vm-guest.sh"
	printf 'vm_guest_run %q\n' "$*"
} >"$run/guest.sh"

# rpstream.timeout: the guest powers itself off then, should this script
# die without killing QEMU.
append="console=ttyS0 quiet panic=-1 rpstream.run=$run rpstream.timeout=$((timeout_s + 30))"
machine=(-m "$mem")
if [ "$eadr" = 1 ]; then
	# An emulated NVDIMM backed by a sparse file of the run directory; QEMU
	# declares the CPU caches inside its persistence domain.
	truncate -s 512M "$run/nvdimm.img"
	machine=(-machine pc,nvdimm=on,nvdimm-persistence=cpu -m "$mem,slots=2,maxmem=$((mem + 1024))M"
		-object "memory-backend-file,id=nvm0,share=on,mem-path=$run/nvdimm.img,size=512M"
		-device nvdimm,id=nvdimm0,memdev=nvm0)
elif [ "$dax" = 1 ]; then
	# 512 MiB of guest RAM at 1 GiB made a legacy pmem region (nd_e820).
	append="$append memmap=512M!1G"
	[ "$mem" -ge 2048 ] || mem=2048
	machine=(-m "$mem")
fi

qemu_pid=""
stop_qemu() {
	[ -n "$qemu_pid" ] || return 0
	if kill -0 "$qemu_pid" 2>/dev/null; then
		kill -TERM "$qemu_pid" 2>/dev/null || true
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$qemu_pid" 2>/dev/null || break
			sleep 0.5
		done
		kill -KILL "$qemu_pid" 2>/dev/null || true
	fi
	wait "$qemu_pid" 2>/dev/null || true
	qemu_pid=""
}
trap stop_qemu EXIT
trap 'stop_qemu; exit 130' INT TERM

echo "vm: booting $kver under TCG (run dir $run, timeout ${timeout_s}s)" >&2
start=$(date +%s)
"$qemu" -accel tcg -cpu max "${machine[@]}" -smp 2 -nographic -no-reboot -nic none \
	-kernel "$kernel" -initrd "$initrd" -append "$append" \
	-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
	-virtfs "local,path=$vmdir,mount_tag=vmshare,security_model=none,multidevs=remap" \
	</dev/null >"$run/console" 2>&1 &
qemu_pid=$!

# The console is the guest's serial port: the command's output goes there
# as well as to $run/output; print it as it comes.
tail -n +1 -f --pid="$qemu_pid" "$run/console" 2>/dev/null | sed -u -e 's/\r$//' -e 's/\x1bc//g' -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' &
tail_pid=$!
timed_out=0
while kill -0 "$qemu_pid" 2>/dev/null; do
	if [ $(($(date +%s) - start)) -ge "$timeout_s" ]; then
		timed_out=1
		echo "vm: timeout after ${timeout_s}s: killing QEMU (pid $qemu_pid)" >&2
		stop_qemu
		break
	fi
	sleep 0.5
done
stop_qemu
wait "$tail_pid" 2>/dev/null || true
rm -f "$run/nvdimm.img"
echo "vm: VM ended after $(($(date +%s) - start))s" >&2

[ "$timed_out" = 0 ] || exit 124
if [ ! -s "$run/rc" ]; then
	echo "vm: FAIL: the VM ended without running the command to its end (console: $run/console)" >&2
	exit 125
fi
rc="$(cat "$run/rc")"
case "$rc" in
setup:*)
	echo "vm: FAIL: guest setup failed: ${rc#setup:}" >&2
	exit 125
	;;
esac
exit "$rc"
