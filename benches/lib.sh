# Shell helpers shared by the bench scripts (sourced, not run).

# Stops the process group that `timeout` leads for pid $1 (cargo, the bench,
# and every server or docker CLI it started are in it): TERM, up to 5 s to
# go, then KILL. Nothing to do for an empty or gone pid.
stop_group() {
    local pid=$1
    if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
        return 0
    fi
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
}

# Runs `cargo bench --bench $1` with its temp files under $WORK, bounded by
# $RUN_TIMEOUT, its report (stdout) into $WORK/report.md. BENCH_PID holds
# the run's pid meanwhile, so an EXIT trap can stop_group it. Returns the
# run's status.
run_bench() {
    local status=0
    TMPDIR="$WORK" timeout --kill-after=10 "$RUN_TIMEOUT" \
        cargo bench --bench "$1" >"$WORK/report.md" &
    BENCH_PID=$!
    wait "$BENCH_PID" || status=$?
    BENCH_PID=""
    return "$status"
}
