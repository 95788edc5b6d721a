#!/bin/busybox sh
# /init of the vivid test VM (see scripts/vivid/run.sh): mounts the pseudo file systems, loads
# vivid and its dependencies, runs the scenario given on the kernel command line, powers off.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin:/opt/ks
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
echo 1 > /proc/sys/kernel/printk_ratelimit 2>/dev/null

for m in $(cat /lib/modules/deps.order); do
    insmod "/lib/modules/$m.ko" || echo "@@ insmod $m failed"
done

scenario=scenario
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        ks.scenario=*) scenario="${arg#ks.scenario=}" ;;
    esac
done

sh "/opt/ks/$scenario.sh"
echo "@@ scenario exit $?"
sync
poweroff -f
