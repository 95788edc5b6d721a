#!/bin/sh
# Shared by the guest scenarios: the vivid instance under test and small helpers.

# One vivid instance: a single video capture node with one HDMI input (DV timings, hotplug,
# signal-mode and error-injection controls), no crop/compose/scaler so that the captured size
# follows the source timings as on an HDMI receiver.
VIVID_OPTS="n_devs=1 node_types=0x1 num_inputs=1 input_types=0x3 ccs_cap_mode=0 vid_cap_nr=0"
DEV=/dev/video0
# shellcheck disable=SC2034 # used by the scenarios that source this file
LOG=/tmp/ks.log
T0=$(cut -d' ' -f1 /proc/uptime)

load_vivid() {
    # shellcheck disable=SC2086
    insmod /lib/modules/vivid.ko $VIVID_OPTS || return 1
    i=0
    while [ ! -e "$DEV" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e "$DEV" ]
}

# Seconds since the scenario started, one decimal.
now() {
    awk -v t0="$T0" '{ printf "%.1f", $1 - t0 }' /proc/uptime
}
