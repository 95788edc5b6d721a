#!/bin/sh
# The fault scenario (guest side of scripts/vivid/run.sh): `kidney-screen run` on vivid's HDMI
# node while vivid's controls inject one fault after another. Everything goes to one log, the
# scenario's own lines start with "@@"; the log is printed at the end for tests/vivid/check.sh.
# shellcheck source=tests/vivid/common.sh
. /opt/ks/common.sh

step() { echo "@@ $(now)s STEP $*" >>"$LOG"; }
note() { echo "@@ $(now)s $*" >>"$LOG"; }
ctl() {
    note "v4l2-ctl $*"
    v4l2-ctl -d "$DEV" "$@" >>"$LOG" 2>&1 || note "v4l2-ctl $* failed"
}
alive() { kill -0 "$PID" 2>/dev/null || { note "kidney-screen is not running"; return 1; }; }
# Waits up to $2 seconds for a log line matching $1 after line $3 (default: anywhere).
wait_log() {
    i=0
    while [ $i -lt $(($2 * 10)) ]; do
        tail -n +"${3:-1}" "$LOG" | grep -q -- "$1" && return 0
        sleep 0.1
        i=$((i + 1))
    done
    note "timed out waiting for '$1'"
    return 1
}
mark() { wc -l <"$LOG"; }

load_vivid || { echo "@@ cannot load vivid"; exit 1; }
: >"$LOG"
# No OSD text over the colour bars: at some sizes its glyphs join the bar edges into a region the
# screen locator takes for an image, and a DenseNet pass takes seconds under TCG.
v4l2-ctl -d "$DEV" -c osd_text_mode=2
cd /opt/ks || exit 1
export RUST_LOG="info,kidney_screen::capture::v4l2=debug"
step "start: kidney-screen run on $DEV (vivid $VIVID_OPTS)"
kidney-screen run --config board.toml >>"$LOG" 2>&1 &
PID=$!
# The first shown verdict needs the model loaded and k frames.
wait_log "shown " 180
sleep 2

step "no-signal: HDMI source unplugged (dv_timings_signal_mode=1 No Signal)"
ctl -c dv_timings_signal_mode=1
sleep 4
step "signal-back: dv_timings_signal_mode=0 Current DV Timings"
ctl -c dv_timings_signal_mode=0
sleep 3

step "no-lock: dv_timings_signal_mode=2 No Lock"
ctl -c dv_timings_signal_mode=2
sleep 4
step "lock-back: dv_timings_signal_mode=0"
ctl -c dv_timings_signal_mode=0
sleep 3

step "out-of-range: dv_timings_signal_mode=3 Out of Range"
ctl -c dv_timings_signal_mode=3
sleep 4
step "range-back: dv_timings_signal_mode=0"
ctl -c dv_timings_signal_mode=0
sleep 3

step "resolution-1080p: the source switches to 1920x1080p60 (Selected DV Timings, preset 16)"
ctl -c dv_timings_signal_mode=4,dv_timings=16
sleep 5
step "resolution-1366x768: the source switches to 1366x768p60 (preset 57)"
ctl -c dv_timings_signal_mode=4,dv_timings=57
sleep 5
step "resolution-720p: back to 1280x720p60 (preset 9), then Current DV Timings"
ctl -c dv_timings_signal_mode=4,dv_timings=9
sleep 4
ctl -c dv_timings_signal_mode=0
sleep 2

step "noise-content: test_pattern=21 Noise while the input reports lock (only the content tells)"
ctl -c test_pattern=21
sleep 3
step "black-content: test_pattern=5 100% Black (a flat screen)"
ctl -c test_pattern=5
sleep 3
step "pattern-back: test_pattern=0 75% Colorbar"
ctl -c test_pattern=0
sleep 3

step "timeout: percentage_of_dropped_buffers=100"
ctl -c percentage_of_dropped_buffers=100
sleep 4
step "frames-back: percentage_of_dropped_buffers=0"
ctl -c percentage_of_dropped_buffers=0
sleep 3

step "half-dropped: percentage_of_dropped_buffers=50"
ctl -c percentage_of_dropped_buffers=50
sleep 3
ctl -c percentage_of_dropped_buffers=0
sleep 1

step "error-flag: inject_v4l2_buf_flag_error three times"
for _ in 1 2 3; do
    ctl -c inject_v4l2_buf_flag_error=1
    sleep 1
done
sleep 1

step "qbuf-error: inject_vidioc_qbuf_error"
ctl -c inject_vidioc_qbuf_error=1
sleep 3

step "fatal-error: inject_fatal_streaming_error"
ctl -c inject_fatal_streaming_error=1
sleep 3

step "fatal-error-restart-fails: inject_vidioc_streamon_error, then inject_fatal_streaming_error"
ctl -c inject_vidioc_streamon_error=1
ctl -c inject_fatal_streaming_error=1
sleep 4

step "disconnect: vivid's Disconnect button (ENODEV; vivid re-registers the node once the last user closes it)"
ctl -c disconnect=1
sleep 4

step "unplug: Disconnect, then rmmod vivid as soon as we let go (the node is gone for 5 s)"
ctl -c disconnect=1
i=0
until rmmod vivid 2>/dev/null; do
    i=$((i + 1))
    [ $i -ge 200 ] && { note "rmmod vivid failed"; break; }
    sleep 0.02
done
note "rmmod vivid after $i retries; $DEV $([ -e "$DEV" ] && echo present || echo absent)"
sleep 5
step "replug: insmod vivid again"
m=$(mark)
load_vivid || note "cannot reload vivid"
wait_log "reopened" 15 "$m"
sleep 3

step "stop: SIGTERM"
alive && echo "@@ $(now)s kidney-screen still running (pid $PID)" >>"$LOG"
kill -TERM "$PID"
wait "$PID"
echo "@@ $(now)s kidney-screen exit code $?" >>"$LOG"

echo "===== kidney-screen log ====="
cat "$LOG"
echo "===== end of log ====="
