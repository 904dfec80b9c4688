# Sourced by a run's guest.sh (scripts/vm.sh) inside the VM, chrooted in the
# host's / with the repository as the working directory. Sets up what the
# run asked for (SoftRoCE, DAX), runs the command, and leaves its exit
# status in $VM_RUN/rc ("setup: why" when the setup failed).

vm_setup_fail() {
	echo "vm-guest: setup failed: $*"
	echo "setup:$*" >"$VM_RUN/rc"
	exit 1
}

# rxe0 on dummy0 with four addresses, so that several processes (nodes) can
# each bind their own address on the one device.
VM_SOFTROCE_ADDRS="10.77.0.1 10.77.0.2 10.77.0.3 10.77.0.4"
vm_setup_softroce() {
	# Without crc32_generic rdma_rxe fails to load ("failed to init crc32
	# algorithm err:-2").
	modprobe -a dummy crc32_generic rdma_rxe rdma_ucm ib_uverbs || vm_setup_fail "modprobe rdma_rxe"
	ip link set lo up
	ip link add dummy0 type dummy || vm_setup_fail "ip link add dummy0"
	for a in $VM_SOFTROCE_ADDRS; do
		ip addr add "$a/24" dev dummy0 || vm_setup_fail "ip addr add $a"
	done
	ip link set dummy0 up || vm_setup_fail "ip link set dummy0 up"
	rdma link add rxe0 type rxe netdev dummy0 || vm_setup_fail "rdma link add rxe0"
	ibv_devinfo -d rxe0 | grep -q PORT_ACTIVE || vm_setup_fail "rxe0 is not PORT_ACTIVE: $(ibv_devinfo -d rxe0 2>&1 | tr '\n' ' ')"
	export VM_SOFTROCE_ADDRS
	echo "vm-guest: rxe0 on dummy0 ($VM_SOFTROCE_ADDRS), PORT_ACTIVE"
}

# fsdax on the memmap= region, ext4 with 4 KiB blocks (1 KiB blocks refuse
# DAX), mounted -o dax at /mnt/dax.
vm_setup_dax() {
	if [ "$VM_EADR" = 1 ]; then
		modprobe -a ext4 nfit nd_pmem || vm_setup_fail "modprobe nfit nd_pmem"
	else
		modprobe -a ext4 nd_e820 nd_pmem || vm_setup_fail "modprobe nd_e820 nd_pmem"
	fi
	# Give udev-less device nodes a moment to appear (bounded).
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		ndctl list -N 2>/dev/null | grep -q namespace0.0 && break
		sleep 0.5
	done
	ndctl create-namespace -f -e namespace0.0 -m fsdax >/dev/null || vm_setup_fail "ndctl create-namespace"
	mkfs.ext4 -q -F -b 4096 /dev/pmem0 || vm_setup_fail "mkfs.ext4 /dev/pmem0"
	mkdir -p /mnt/dax
	mount -o dax /dev/pmem0 /mnt/dax || vm_setup_fail "mount -o dax"
	grep -q '/mnt/dax .*dax' /proc/mounts || vm_setup_fail "/mnt/dax is not mounted with dax: $(grep /mnt/dax /proc/mounts)"
	chmod 1777 /mnt/dax
	echo "vm-guest: /dev/pmem0 ($(($(cat /sys/block/pmem0/size) / 2048)) MiB) ext4 -o dax on /mnt/dax; persistence domain: $(cat /sys/bus/nd/devices/region*/persistence_domain 2>/dev/null | tr '\n' ' ')"
}

vm_guest_run() {
	[ "$VM_SOFTROCE" = 1 ] && vm_setup_softroce
	[ "$VM_DAX" = 1 ] && vm_setup_dax
	echo "vm-guest: running: $1"
	# The exit status goes through a file: a pipe into tee would hide it.
	( sh -c "$1"; echo $? >"$VM_RUN/rc.cmd" ) 2>&1 | tee "$VM_RUN/output"
	mv "$VM_RUN/rc.cmd" "$VM_RUN/rc" 2>/dev/null || echo 125 >"$VM_RUN/rc"
}
