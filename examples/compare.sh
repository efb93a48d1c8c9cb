#!/usr/bin/env bash
# Starling vs Mosquitto, side by side, with the load generator examples/bench.
#
#   examples/compare.sh                       # REPS=3, pinned and unpinned
#   REPS=1 MODES=unpinned examples/compare.sh # quicker
#
# For every scenario and repetition, each broker is started fresh (Starling first on odd
# repetitions, Mosquitto first on even ones), measured once, and stopped. Modes: "pinned"
# (broker on CPU 0, bench on CPU 1, via taskset) and "unpinned". Prints, per mode and scenario,
# the median of each broker and the ratio Starling/Mosquitto (the "better" column says whether
# higher or lower is better), then the bench's and the brokers' CPU seconds. Raw JSON lines are
# kept in $OUT (default: a temp directory, printed at the end).
#
# Environment: REPS (3), MODES ("pinned unpinned"), STARLING and BENCH (binaries; default
# $CARGO_TARGET_DIR or target/, built when missing), MAX_RSS_MB (4096: a broker growing past
# this is killed and its run marked failed, so an overload cannot eat the machine), OUT.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
STARLING=${STARLING:-$TARGET/release/starling}
BENCH=${BENCH:-$TARGET/release/examples/bench}
REPS=${REPS:-3}
MODES=${MODES:-"pinned unpinned"}
MAX_RSS_MB=${MAX_RSS_MB:-4096}
WORK=$(mktemp -d /tmp/starling-compare.XXXXXX)
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

BROKER_PID=""
WATCH_PID=""

stop_broker() {
    if [[ -n "$WATCH_PID" ]]; then
        kill "$WATCH_PID" 2>/dev/null || true
        wait "$WATCH_PID" 2>/dev/null || true
        WATCH_PID=""
    fi
    if [[ -n "$BROKER_PID" ]]; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$BROKER_PID" 2>/dev/null; then
            echo "compare: broker $BROKER_PID ignored SIGTERM for 5 s; killing it" >&2
            kill -KILL "$BROKER_PID" 2>/dev/null || true
        fi
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
    fi
}

cleanup() {
    stop_broker
    if [[ "$OUT" != "$WORK" ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prerequisites ------------------------------------------------------------------------
if [[ ! -x "$STARLING" || ! -x "$BENCH" ]]; then
    echo "compare: building $STARLING and $BENCH" >&2
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --bin starling --example bench)
fi
if ! command -v mosquitto >/dev/null && [[ ! -x /usr/sbin/mosquitto ]]; then
    echo "compare: installing mosquitto" >&2
    apt-get install -y mosquitto >&2
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
for tool in taskset jq python3; do
    command -v "$tool" >/dev/null || { echo "compare: $tool is required" >&2; exit 2; }
done
# 19 000 idle connections need ~19 000 descriptors in each process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (( $(ulimit -n) < 19500 )); then
    echo "compare: ulimit -n is $(ulimit -n); the idle19k scenario needs about 19 500" >&2
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_broker NAME PIN -> sets BROKER_PID and PORT
start_broker() {
    local name=$1 pin=$2 prefix=()
    PORT=$(free_port)
    [[ "$pin" == pinned ]] && prefix=(taskset -c 0)
    case "$name" in
    starling)
        cat >"$WORK/starling.toml" <<EOF
[metrics]
log_interval = 0
sys_interval = 0
[logging]
level = "warning"
[session]
# The same bounds as the Mosquitto configuration below. The queue holds a whole fan-in run
# (4 x 250 000): four QoS 1 publishers outpace one subscriber, and a smaller bound would make
# both brokers drop (lose) messages instead of measuring how fast they deliver them.
max_queued_messages = 2000000
max_inflight_messages = 64
[persistence]
# Clean sessions store nothing; the store still lives in the scratch directory.
dir = "$WORK/starling-data"
[[acceptors]]
name = "bench"
url = "tcp://127.0.0.1:$PORT?protocols=MQTT"
EOF
        "${prefix[@]}" "$STARLING" -c "$WORK/starling.toml" >>"$OUT/starling.log" 2>&1 &
        ;;
    mosquitto)
        cat >"$WORK/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
max_queued_messages 2000000
max_inflight_messages 64
# Starling always sets TCP_NODELAY; without this Mosquitto's acks meet 40 ms Nagle stalls.
set_tcp_nodelay true
persistence false
log_dest stderr
log_type error
log_type warning
EOF
        "${prefix[@]}" "$MOSQUITTO" -c "$WORK/mosquitto.conf" >>"$OUT/mosquitto.log" 2>&1 &
        ;;
    esac
    BROKER_PID=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
        sleep 0.05
    done
    # Memory guard: kill the broker if it grows past MAX_RSS_MB.
    (
        while kill -0 "$BROKER_PID" 2>/dev/null; do
            rss=$(awk '/^VmRSS/ {print $2}' "/proc/$BROKER_PID/status" 2>/dev/null || echo 0)
            if (( ${rss:-0} > MAX_RSS_MB * 1024 )); then
                echo "compare: $name grew to $((rss / 1024)) MB (> $MAX_RSS_MB); killed" >&2
                echo "$name" >"$WORK/oom"
                kill -KILL "$BROKER_PID"
                break
            fi
            sleep 0.25
        done
    ) &
    WATCH_PID=$!
}

# Scenarios: key | bench arguments | jq metric | better | label
SCENARIOS=(
    "fanin-q0|fan-in --qos 0 --publishers 4 --count 250000 --duration 10|.rate|higher|fan-in QoS0 64B 4 pub (msg/s)"
    "fanin-q1|fan-in --qos 1 --publishers 4 --count 250000 --duration 10|.rate|higher|fan-in QoS1 64B 4 pub (msg/s)"
    "fanout|fan-out --subscribers 1000 --count 1000 --duration 10|.rate|higher|fan-out 1->1000 QoS0, 1000 msgs (deliveries/s)"
    "idle|idle --count 10000 --hold 2 --duration 10|.rss_per_conn|lower|idle 10k conns (bytes/conn)"
    "idle19k|idle --count 19000 --hold 2 --duration 20|.rss_per_conn|lower|idle 19k conns (bytes/conn)"
    "connect|connect-rate --concurrency 32 --duration 5|.rate|higher|connect rate (conn/s)"
    "connect-cpu|connect-rate --concurrency 32 --duration 5|.broker_cpu_us_per_conn|lower|connect: broker CPU per connection (us)"
    "retained|retained --count 10000 --duration 10|.receive_s|lower|retained 10k to one # sub (s)"
    "latency|latency --rate 5000 --qos 1 --warmup 1 --duration 5|.latency_us.p50|lower|latency 5k/s QoS1 p50 (us)"
)
COMMON=(--drain 5 --quiet 2 --threads 1 --payload 64)

total=0
for mode in $MODES; do
    for s in "${SCENARIOS[@]}"; do
        IFS='|' read -r key _ _ _ _ <<<"$s"
        [[ "$key" == latency && "$mode" == pinned ]] && continue
        total=$((total + 2 * REPS))
    done
done
echo "compare: $total runs; raw results in $RESULTS" >&2

n=0
for mode in $MODES; do
    for s in "${SCENARIOS[@]}"; do
        IFS='|' read -r key args metric better label <<<"$s"
        [[ "$key" == latency && "$mode" == pinned ]] && continue
        for rep in $(seq "$REPS"); do
            order="starling mosquitto"
            (( rep % 2 == 0 )) && order="mosquitto starling"
            for broker in $order; do
                n=$((n + 1))
                rm -f "$WORK/oom"
                start_broker "$broker" "$mode"
                bench_prefix=()
                [[ "$mode" == pinned ]] && bench_prefix=(taskset -c 1)
                # shellcheck disable=SC2086
                line=$("${bench_prefix[@]}" "$BENCH" --url "mqtt://127.0.0.1:$PORT" \
                    --broker-pid "$BROKER_PID" $args "${COMMON[@]}" 2>>"$OUT/bench.log" | tail -n 1 || true)
                [[ -z "$line" ]] && line='{"ok":false,"error":"bench printed nothing"}'
                if [[ -e "$WORK/oom" ]]; then
                    line=$(jq -c '. + {ok:false, error:"broker exceeded MAX_RSS_MB"}' <<<"$line")
                fi
                stop_broker
                jq -c --arg mode "$mode" --arg key "$key" --arg broker "$broker" --arg rep "$rep" \
                    --arg metric "$metric" --arg better "$better" --arg lbl "$label" \
                    '{mode:$mode, key:$key, broker:$broker, rep:($rep|tonumber), better:$better,
                      label:$lbl, value:('"$metric"'), result:.}' <<<"$line" >>"$RESULTS"
                printf 'compare: [%d/%d] %-8s %-9s %-9s rep %d: %s ok=%s\n' "$n" "$total" "$mode" \
                    "$key" "$broker" "$rep" "$(jq -r "$metric" <<<"$line")" \
                    "$(jq -r .ok <<<"$line")" >&2
            done
        done
    done
done

python3 - "$RESULTS" "$REPS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
reps = sys.argv[2]
def med(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(xs) if xs else None
def fmt(x):
    if x is None: return "-"
    if abs(x) >= 100: return f"{x:,.0f}"
    return f"{x:.3g}"
modes = []
for r in rows:
    if r["mode"] not in modes: modes.append(r["mode"])
for mode in modes:
    print(f"\n## {mode} (median of {reps} run(s) per broker)\n")
    print("| scenario | Starling | Mosquitto | Starling/Mosquitto | better | runs ok S/M | lost S/M (median) |")
    print("|---|---:|---:|---:|---|---|---|")
    keys = []
    for r in rows:
        if r["mode"] == mode and r["key"] not in keys: keys.append(r["key"])
    for key in keys:
        rs = [r for r in rows if r["mode"] == mode and r["key"] == key]
        by = {b: [r for r in rs if r["broker"] == b] for b in ("starling", "mosquitto")}
        s, m = med([r["value"] for r in by["starling"]]), med([r["value"] for r in by["mosquitto"]])
        ratio = f"{s / m:.2f}" if s is not None and m else "-"
        ok = ", ".join(f'{b[0].upper()} {sum(1 for r in by[b] if r["result"].get("ok"))}/{len(by[b])}' for b in by)
        lost = "/".join(fmt(med([r["result"].get("lost") for r in by[b]])) for b in by)
        better = rs[0]["better"] + " is better"
        print(f"| {rs[0]['label']} | {fmt(s)} | {fmt(m)} | {ratio} | {better} | {ok} | {lost} |")
        if key == "latency":
            for q in ("p90", "p99", "p999", "max"):
                sv = med([(r["result"].get("latency_us") or {}).get(q) for r in by["starling"]])
                mv = med([(r["result"].get("latency_us") or {}).get(q) for r in by["mosquitto"]])
                ratio = f"{sv / mv:.2f}" if sv is not None and mv else "-"
                print(f"| latency 5k/s QoS1 {q} (us) | {fmt(sv)} | {fmt(mv)} | {ratio} | lower is better | | |")
    print(f"\nCPU seconds per run (median), {mode}: bench / broker")
    print("| scenario | bench vs Starling | bench vs Mosquitto |")
    print("|---|---|---|")
    for key in keys:
        rs = [r for r in rows if r["mode"] == mode and r["key"] == key]
        cells = []
        for b in ("starling", "mosquitto"):
            br = [r["result"] for r in rs if r["broker"] == b]
            cells.append(f'{fmt(med([x.get("bench_cpu_s") for x in br]))} / {fmt(med([x.get("broker_cpu_s") for x in br]))}'
                         f' in {fmt(med([x.get("elapsed_s") for x in br]))} s')
        print(f"| {rs[0]['label']} | {cells[0]} | {cells[1]} |")
EOF
echo "compare: raw results: $RESULTS" >&2
