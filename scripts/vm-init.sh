#!/bin/busybox sh
# /init of the initramfs scripts/vm.sh builds (with static busybox and the
# modules in /modules/order): mounts the host's / (virtio-9p, read-only) on
# /newroot and the run directory's share writable at its host path inside,
# then runs the run's guest script chrooted and powers off. Anything that
# fails here ends the VM at once; the host then reports that no exit status
# was written.
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
die() {
	echo "vm-init: $*" >/dev/console
	poweroff -f
}
for m in $(cat /modules/order); do
	insmod "/modules/$m.ko" || die "insmod $m failed"
done
run="" limit=""
for a in $(cat /proc/cmdline); do
	case "$a" in
	rpstream.run=*) run="${a#rpstream.run=}" ;;
	rpstream.timeout=*) limit="${a#rpstream.timeout=}" ;;
	esac
done
[ -n "$run" ] || die "no rpstream.run= on the kernel command line"
# A watchdog of the guest's own: the VM ends even if the host's
# scripts/vm.sh died without killing QEMU.
if [ -n "$limit" ]; then
	(sleep "$limit"; echo "vm-init: ${limit}s passed: powering off" >/dev/console; poweroff -f) &
fi
share="${run%/*}"
o=trans=virtio,version=9p2000.L,msize=524288
mount -t 9p -o "$o,ro" hostroot /newroot || die "mounting the host's / failed"
# The guest's own /tmp (a tmpfs) hides the host's: a repository under the
# host's /tmp (a clone there) is exposed again, read-only, from a view of
# the host's / taken before.
mkdir -p /hostview
mount -o bind /newroot /hostview || die "binding the host's / failed"
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
case "$share" in
/tmp/*)
	repo="${share%/bin/vm}"
	mkdir -p "/newroot$repo" || die "making $repo in the guest's /tmp failed"
	mount -o bind "/hostview$repo" "/newroot$repo" || die "exposing $repo (under the host's /tmp) failed"
	;;
esac
mount -t 9p -o "$o" vmshare "/newroot$share" || die "mounting the share at $share failed"
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm 2>/dev/null
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t tmpfs tmpfs /newroot/run
# Module loading inside needs /lib/modules (host's, read-only: fine) and a
# writable /mnt for the DAX mount point.
mount -t tmpfs tmpfs /newroot/mnt
hostname rpstream-vm
chroot /newroot /bin/sh "$run/guest.sh"
sync
poweroff -f
