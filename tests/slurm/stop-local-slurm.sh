#!/usr/bin/env bash
# Stop the daemons that start-local-slurm.sh started (and only those), newest first, by pid.
set -uo pipefail
STATE_DIR="${MATSCREEN_SLURM_STATE:-/run/matscreen-slurm}"
PIDS="$STATE_DIR/pids"
[ -s "$PIDS" ] || { echo "[stop-local-slurm] nothing recorded in $PIDS" >&2; exit 0; }
tac "$PIDS" | while read -r name pid; do
    [ -n "${pid:-}" ] || continue
    case "$(cat "/proc/$pid/comm" 2>/dev/null)" in
        "$name"*) ;;
        *) continue ;;   # gone, or the pid now belongs to another program: leave it alone
    esac
    echo "[stop-local-slurm] stopping $name ($pid)" >&2
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
done
rm -f "$PIDS"
