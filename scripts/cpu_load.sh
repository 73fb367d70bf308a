#!/usr/bin/env bash
# Load the machine with N CPU-bound processes (default: 2, one per core here), to prove that the test
# suite does not depend on how fast the machine is.
#   bash scripts/cpu_load.sh start [N]   # start N busy loops (niceness 0, like a neighbour's job)
#   bash scripts/cpu_load.sh status      # how many run
#   bash scripts/cpu_load.sh stop        # stop them
# The pids live in ${COSMOS_LOAD_PIDS:-/tmp/cosmos-cpu-load.pids}; `start` refuses to stack a second load.
set -euo pipefail
pids_file="${COSMOS_LOAD_PIDS:-/tmp/cosmos-cpu-load.pids}"

running() {
    [[ -f "$pids_file" ]] || return 0
    while read -r pid; do
        if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
    done < "$pids_file"
}

case "${1:-}" in
    start)
        n="${2:-2}"
        [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "cpu_load: N must be a positive integer, got '$n'" >&2; exit 2; }
        if [[ -n "$(running)" ]]; then
            echo "cpu_load: a load already runs (pids $(running | tr '\n' ' ')); stop it first" >&2; exit 1
        fi
        : > "$pids_file"
        for _ in $(seq "$n"); do
            nohup bash -c 'while :; do :; done' > /dev/null 2>&1 &
            echo $! >> "$pids_file"
        done
        echo "cpu_load: started $n busy loop(s): $(tr '\n' ' ' < "$pids_file")"
        ;;
    status)
        echo "cpu_load: $(running | wc -l) busy loop(s) running"
        ;;
    stop)
        pids="$(running)"
        if [[ -n "$pids" ]]; then kill $pids; fi
        rm -f "$pids_file"
        echo "cpu_load: stopped $(echo -n "$pids" | grep -c . || true) busy loop(s)"
        ;;
    *)
        echo "usage: bash scripts/cpu_load.sh start [N] | status | stop" >&2; exit 2
        ;;
esac
