#!/bin/sh
# Prints what vivid offers (ks.scenario=explore): controls, formats, DV timings, our probe.
# shellcheck source=tests/vivid/common.sh
. /opt/ks/common.sh
load_vivid
v4l2-ctl --list-devices
v4l2-ctl -d "$DEV" --all
v4l2-ctl -d "$DEV" -L
v4l2-ctl -d "$DEV" --list-formats
v4l2-ctl -d "$DEV" --query-dv-timings
v4l2-ctl -d "$DEV" --list-dv-timings | grep -c Index
kidney-screen probe
