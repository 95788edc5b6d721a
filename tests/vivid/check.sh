#!/bin/sh
# Checks the log of the vivid scenario (tests/vivid/scenario.sh, printed on the VM console by
# scripts/vivid/run.sh): for every injected fault, what the capture reported and what the
# indicator showed. Usage: tests/vivid/check.sh console.log. Exit 1 if any check fails.
set -u
CONSOLE=${1:?usage: check.sh console.log}
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
# The scenario's log, without the serial console's carriage returns and escape sequences. The
# start marker can share a line with the firmware's last output (SeaBIOS's "Booting from ROM.."
# and a screen clear, no newline), so it is put on a line of its own first.
sed -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1bc//g' -e 's/\r//g' \
    -e 's/.\(===== kidney-screen log =====\)/\n\1/' "$CONSOLE" |
    sed -n '/^===== kidney-screen log =====/,/^===== end of log =====/p' >"$LOG"
if [ ! -s "$LOG" ]; then
    echo "FAIL no scenario log in $CONSOLE"
    exit 1
fi

FAILS=0
PASSES=0
ok() {
    PASSES=$((PASSES + 1))
    printf 'PASS %-26s %s\n' "$1" "$2"
}
bad() {
    FAILS=$((FAILS + 1))
    printf 'FAIL %-26s %s\n' "$1" "$2"
}

# The lines of one step: from its "@@ ... STEP name:" line to the next step.
seg() {
    awk -v name="$1" '
        / STEP / { inside = (index($0, " STEP " name ":") > 0) }
        inside' "$LOG"
}
# The verdict shown when the step ended (the last console indicator line up to its end).
shown_at_end() {
    awk -v name="$1" '
        / STEP / { if (inside) exit; inside = (index($0, " STEP " name ":") > 0) }
        /shown / { v = $0; sub(/.*shown /, "", v); sub(/ +\(.*/, "", v); last = v }
        END { print last }' "$LOG"
}
# has STEP REGEX WHAT: the step's lines match REGEX.
has() {
    if seg "$1" | grep -Eq -- "$2"; then ok "$1" "$3"; else bad "$1" "$3 (no line matching /$2/)"; fi
}
has_not() {
    if seg "$1" | grep -Eq -- "$2"; then bad "$1" "$3 (found /$2/)"; else ok "$1" "$3"; fi
}
# after STEP REGEX1 REGEX2 WHAT: a line matching REGEX2 follows one matching REGEX1.
after() {
    if seg "$1" | awk -v a="$2" -v b="$3" '$0 ~ a { seen = 1; next } seen && $0 ~ b { found = 1 } END { exit !found }'; then
        ok "$1" "$4"
    else
        bad "$1" "$4 (no /$3/ after /$2/)"
    fi
}
ends_with() {
    v=$(shown_at_end "$1")
    if [ "$v" = "$2" ]; then ok "$1" "shows $2 at the end"; else bad "$1" "shows '$v' at the end, expected $2"; fi
}
ends_not() {
    v=$(shown_at_end "$1")
    if [ -n "$v" ] && [ "$v" != "$2" ]; then ok "$1" "shows $v (not $2) at the end"; else bad "$1" "shows '$v' at the end"; fi
}

FRAMES=': [1-9][0-9]* frames \('
CLASSIFIED='shown (NORMAL|ESRD SUSPECTED|INDETERMINATE)'
NOSIG='shown NO SIGNAL'

has start 'streaming Yuyv 1280x720 .*DV timings 1280x720p60.00, source-change events' "streams 1280x720 YUYV with events"
ends_not start "NO SIGNAL"

for s in no-signal no-lock out-of-range; do
    case $s in
        no-signal) why='no signal \(no link\)' ;;
        no-lock) why='no lock;' ;;
        out-of-range) why='signal out of range;' ;;
    esac
    has $s "source change event" "SOURCE_CHANGE event seen"
    has $s "$why" "source reports: $why"
    has $s "$NOSIG" "indicator: NO SIGNAL"
    has $s ': 0 frames \(.*, [1-9][0-9]* no-signal' "noise frames dropped, none passed on"
    has_not $s "$CLASSIFIED" "no verdict from noise"
    ends_with $s "NO SIGNAL"
done
for s in signal-back lock-back range-back; do
    has $s "input locked again" "lock regained"
    after $s "input locked again" "$FRAMES" "frames flow again"
    ends_not $s "NO SIGNAL"
done

has resolution-1080p 'source changed to 1920x1080p60.00 \(was 1280x720p60.00\); renegotiating' "new timings detected"
has resolution-1080p 'streaming Yuyv 1920x1080' "renegotiated to 1920x1080"
has resolution-1080p ': [1-9][0-9]* frames \(1920x1080\)' "frames at 1920x1080"
has resolution-1366x768 'streaming Yuyv 1366x768' "renegotiated to 1366x768"
has resolution-1366x768 ': [1-9][0-9]* frames \(1366x768\)' "frames at 1366x768"
has resolution-720p 'streaming Yuyv 1280x720' "renegotiated back to 1280x720"
has resolution-720p ': [1-9][0-9]* frames \(1280x720\)' "frames at 1280x720"
has_not resolution-1080p 'cannot|panicked' "no errors"

has noise-content "$FRAMES" "the source passes the noise on (the input reports lock)"
has noise-content "$NOSIG" "indicator: NO SIGNAL from the content"
has_not noise-content "$CLASSIFIED" "no verdict from noise"
ends_with noise-content "NO SIGNAL"
ends_with black-content "NO SIGNAL"
ends_not pattern-back "NO SIGNAL"

has timeout ', [1-9][0-9]* timeouts' "DQBUF times out"
has timeout "$NOSIG" "indicator: NO SIGNAL while no frames come"
ends_with timeout "NO SIGNAL"
has frames-back "$FRAMES" "frames flow again"
ends_not frames-back "NO SIGNAL"
has half-dropped ': [1-9][0-9]* frames \(.*, [1-9][0-9]* skipped by the driver' "half the frames skipped, the rest pass"
has_not half-dropped "$NOSIG" "no NO SIGNAL for a lossy stream"

n=$(seg error-flag | grep -c 'flagged ERROR by the driver')
if [ "$n" -ge 3 ]; then ok error-flag "3 ERROR-flagged buffers dropped and counted ($n)"; else bad error-flag "$n of 3 ERROR-flagged buffers seen"; fi
has_not error-flag "$NOSIG" "indicator unchanged (dropped frames only counted)"

has qbuf-error 'QBUF failed .*restarting the stream' "QBUF failure: stream restarted"
after qbuf-error 'QBUF failed' "$FRAMES" "frames flow again"
has_not qbuf-error "$NOSIG" "indicator unchanged"

has fatal-error '(streaming error|QBUF failed) \(Input/output error.*restarting the stream' "fatal streaming error (EIO): stream restarted"
after fatal-error 'restarting the stream' "$FRAMES" "frames flow again"
has_not fatal-error "$NOSIG|reopened" "restarted in place: no reopen, indicator unchanged"

has fatal-error-restart-fails 'cannot restart streaming' "STREAMON fails on restart"
after fatal-error-restart-fails 'cannot restart streaming' 'reopened' "device reopened"
after fatal-error-restart-fails 'reopened' "$FRAMES" "frames flow again"
ends_not fatal-error-restart-fails "NO SIGNAL"

has disconnect 'device hung up|No such device' "unplug seen (POLLHUP/ENODEV)"
has disconnect "$NOSIG" "indicator: NO SIGNAL while unplugged"
after disconnect 'closing, will reopen' 'reopened' "device reopened"
after disconnect 'reopened' "$FRAMES" "frames flow again"
ends_not disconnect "NO SIGNAL"

has unplug 'rmmod vivid after [0-9]+ retries; /dev/video0 absent' "device node removed"
has unplug "$NOSIG" "indicator: NO SIGNAL while unplugged"
has unplug 'Disconnected|No such file|No such device|next attempt' "reopen attempts fail while unplugged"
ends_with unplug "NO SIGNAL"
has replug 'reopened' "device reopened after the replug"
after replug 'reopened' "$FRAMES" "frames flow again"
ends_not replug "NO SIGNAL"

has stop 'kidney-screen still running' "process alive until SIGTERM"
has stop 'indicator off' "indicator put in its safe state"
has stop 'kidney-screen exit code 0' "exit code 0 after SIGTERM"
if grep -Eq 'panicked|RUST_BACKTRACE' "$LOG"; then bad all "no panic"; else ok all "no panic"; fi
if grep -q 'timed out waiting' "$LOG"; then bad all "every step's wait succeeded"; else ok all "every step's wait succeeded"; fi

echo "vivid check: $PASSES passed, $FAILS failed"
[ "$FAILS" -eq 0 ]
