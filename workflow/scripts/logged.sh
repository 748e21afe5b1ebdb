#!/usr/bin/env bash
# logged.sh LOG [VAR=value ...] COMMAND [ARG ...]: how every rule runs its command.
# The command's output goes to LOG. When it fails, LOG is also kept beside itself as
# LOG.failed-<UTC time>, which no later job or rerun writes over (a rerun rewrites LOG), and its
# last lines go to stderr, so they reach Snakemake's error output under any executor, with a
# word on what a kill by a signal usually means.
set -u
log=$1
shift
mkdir -p "$(dirname "$log")"
env "$@" > "$log" 2>&1
status=$?
if [ "$status" -ne 0 ]; then
    kept="$log.failed-$(date -u +%Y%m%dT%H%M%SZ)"
    cp "$log" "$kept"
    {
        echo "---- exit status $status; the last lines of $log (kept as $kept):"
        tail -n 30 "$log"
        if [ "$status" -ge 128 ]; then
            signal=$((status - 128))
            echo "---- killed by signal $signal$([ "$signal" -eq 9 ] && echo ' (SIGKILL: often the out-of-memory killer; see dmesg, and mem_mb of this rule)')"
        fi
    } >&2
fi
exit "$status"
