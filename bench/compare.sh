#!/usr/bin/env bash
# Runs the same bounded loads against mosquitto and imqtt, side by side on
# loopback, and prints a ratio table (docs/PERFORMANCE.md). Ratios within one
# run are the figures that count: absolute numbers move with the machine.
#
#   bench/compare.sh              # everything, a few minutes
#   QUICK=1 bench/compare.sh      # only the throughput and latency rows
#
# Knobs (environment): DUR (unpaced runs, default 15s), PAIRS (100), SIZE
# (256), INFLIGHT (16), RATE (paced runs, 1000), IDLE (10000), STORM (10000),
# STORM_PW (200 devices with bcrypt-cost-10 passwords), FANOUT (500), DRAIN
# (20000), KEEP=1 keeps the work directory, RESULTS=FILE copies the JSON
# lines there.
set -euo pipefail

cd "$(dirname "$0")/.."
DUR=${DUR:-15s}
PAIRS=${PAIRS:-100}
SIZE=${SIZE:-256}
INFLIGHT=${INFLIGHT:-16}
RATE=${RATE:-1000}
IDLE=${IDLE:-10000}
STORM=${STORM:-10000}
STORM_PW=${STORM_PW:-200}
FANOUT=${FANOUT:-500}
DRAIN=${DRAIN:-20000}
QUICK=${QUICK:-0}

WORK=$(mktemp -d /tmp/imqtt-compare.XXXXXX)
RES=$WORK/results.jsonl
MQ_PID=
IM_PID=
started=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

log() { printf '== %s (%ds)\n' "$*" $(( $(date +%s) - started )) >&2; }

stop() { # pid: TERM, wait up to 15 s, then KILL
	local pid=$1
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 150); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	stop "$IM_PID"
	stop "$MQ_PID"
	if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
	local p
	for _ in $(seq 50); do
		# Below the kernel's ephemeral range, so no outgoing connection
		# holds it.
		p=$(( 20000 + RANDOM % 12000 ))
		if port_free "$p"; then echo "$p"; return 0; fi
	done
	echo "no free port found" >&2
	return 1
}

wait_port() { # port name pid log
	for _ in $(seq 300); do
		if ! port_free "$1"; then return 0; fi
		kill -0 "$3" 2>/dev/null || break
		sleep 0.05
	done
	echo "$2 did not start listening on 127.0.0.1:$1; its log:" >&2
	tail -20 "$4" >&2
	return 1
}

# --- tools -----------------------------------------------------------------
MOSQUITTO=$(command -v mosquitto || true)
[ -n "$MOSQUITTO" ] || [ ! -x /usr/sbin/mosquitto ] || MOSQUITTO=/usr/sbin/mosquitto
if [ -z "$MOSQUITTO" ]; then
	log "installing mosquitto"
	if apt-get install -y mosquitto >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y mosquitto >/dev/null 2>&1; }; then
		MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
	else
		echo "mosquitto could not be installed: imqtt runs alone, without ratios to mosquitto" >&2
	fi
fi

log "building imqtt and imqtt-bench"
mkdir -p "$WORK/bin"
go build -o "$WORK/bin/imqtt" ./cmd/imqtt
go build -o "$WORK/bin/imqtt-bench" ./cmd/imqtt-bench
BENCH=$WORK/bin/imqtt-bench

bench() { # mode args...: one JSON line into $RES, the summary on stderr
	local out
	out=$("$BENCH" "$@" 2>>"$WORK/bench.log") || { echo "imqtt-bench $* failed:" >&2; tail -5 "$WORK/bench.log" >&2; return 1; }
	printf '%s\n' "$out" | head -1 >>"$RES"
	printf '%s\n' "$out" | tail -n +2 >&2
}

# --- provisioning (before imqtt opens the store) ---------------------------
USERS=$(( 2 * PAIRS ))
STAR=0
if [ "$QUICK" != 1 ]; then
	for n in "$IDLE" "$STORM" "$FANOUT" $(( DRAIN > 0 ? 101 : 0 )); do
		if [ "$n" -gt "$USERS" ]; then USERS=$n; fi
	done
	STAR=$(( FANOUT > 101 ? FANOUT : 101 ))
	if [ "$STAR" -gt "$USERS" ]; then STAR=$USERS; fi
fi
log "provisioning $USERS users (friends in pairs; b0 also with b1..b$((STAR > 0 ? STAR - 1 : 0))) with device tokens"
"$BENCH" provision --provision-store "$WORK/data" --users "$USERS" --star "$STAR" --tokens-out "$WORK/tokens" >&2
if [ "$QUICK" != 1 ] && [ "$STORM_PW" -gt 0 ]; then
	log "provisioning $STORM_PW users r0.. with one bcrypt-cost-10 password"
	"$BENCH" provision --provision-store "$WORK/data" --prefix r --users "$STORM_PW" --no-pair-friends \
		--same-password bench-real-cost --real-cost >&2
fi

cat >"$WORK/imqtt.yaml" <<EOF
open_topics: ["bench/#"]
limits:
  messages_per_second: 1000000
  requests_per_second: 1000000
backlog: {max_entries: 1000000, max_age: 720h}
max_clients: 100000
log: {level: warn, format: json}
EOF

MQ_PORT=$(free_port)
IM_PORT=$(free_port)
IM_HTTP=$(free_port)

start_imqtt() {
	"$WORK/bin/imqtt" serve --data "$WORK/data" --mqtt "127.0.0.1:$IM_PORT" --ws off --http "127.0.0.1:$IM_HTTP" \
		--config "$WORK/imqtt.yaml" 2>>"$WORK/imqtt.log" &
	IM_PID=$!
	wait_port "$IM_PORT" imqtt "$IM_PID" "$WORK/imqtt.log"
}

if [ -n "$MOSQUITTO" ]; then
	cat >"$WORK/mosquitto.conf" <<EOF
listener $MQ_PORT 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
log_type error
EOF
	"$MOSQUITTO" -c "$WORK/mosquitto.conf" 2>>"$WORK/mosquitto.log" &
	MQ_PID=$!
	wait_port "$MQ_PORT" mosquitto "$MQ_PID" "$WORK/mosquitto.log"
	log "$("$MOSQUITTO" -h 2>/dev/null | head -1) on 127.0.0.1:$MQ_PORT (pid $MQ_PID)"
fi
start_imqtt
log "imqtt on 127.0.0.1:$IM_PORT (pid $IM_PID)"

MQ=(--addr "127.0.0.1:$MQ_PORT" --pid "$MQ_PID" --anonymous)
IM=(--addr "127.0.0.1:$IM_PORT" --pid "$IM_PID")
LOAD=(--pairs "$PAIRS" --size "$SIZE" --inflight "$INFLIGHT")

# A new store file is sparse: the first commits pay for block allocation on
# every fdatasync. A short IM load first, kept out of the table, measures a
# store in its normal, grown state.
log "imqtt warm-up (not in the table)"
"$BENCH" pairs "${IM[@]}" "${LOAD[@]}" --duration 5s --quiet --label warm-up >>"$WORK/warmup.jsonl" 2>>"$WORK/bench.log"

log "throughput: QoS 1, $PAIRS pairs, unpaced, $DUR each"
if [ -n "$MQ_PID" ]; then bench raw "${MQ[@]}" "${LOAD[@]}" --duration "$DUR" --label mosquitto-raw-qos1; fi
bench raw "${IM[@]}" "${LOAD[@]}" --duration "$DUR" --label imqtt-raw-qos1
bench pairs "${IM[@]}" "${LOAD[@]}" --duration "$DUR" --label imqtt-im-durable-qos1

log "latency: QoS 1, $PAIRS pairs, paced at $RATE msg/s, 10s each"
if [ -n "$MQ_PID" ]; then bench raw "${MQ[@]}" "${LOAD[@]}" --rate "$RATE" --duration 10s --label mosquitto-raw-qos1-paced; fi
bench pairs "${IM[@]}" "${LOAD[@]}" --rate "$RATE" --duration 10s --label imqtt-im-durable-qos1-paced

if [ "$QUICK" != 1 ]; then
	if [ "$IDLE" -gt 0 ]; then
		log "idle: $IDLE connections"
		if [ -n "$MQ_PID" ]; then bench idle "${MQ[@]}" --conns "$IDLE" --label mosquitto-idle; fi
		bench idle "${IM[@]}" --conns "$IDLE" --tokens "$WORK/tokens" --label imqtt-idle
	fi
	if [ "$DRAIN" -gt 0 ]; then
		log "drain: $DRAIN messages into one reconnecting device"
		bench drain "${IM[@]}" --count "$DRAIN" --publishers 100 --size "$SIZE" --label imqtt-drain
	fi
	if [ "$FANOUT" -gt 1 ]; then
		log "fanout: group of $FANOUT, 100 messages at 10/s"
		bench fanout "${IM[@]}" --members "$FANOUT" --count 100 --rate 10 --size "$SIZE" --label imqtt-fanout
	fi
	if [ "$STORM" -gt 0 ]; then
		if [ -n "$MQ_PID" ]; then
			log "storm: $STORM devices at once on mosquitto"
			bench storm "${MQ[@]}" --conns "$STORM" --label mosquitto-storm
		fi
		log "restarting imqtt, then storm: $STORM devices with tokens"
		stop "$IM_PID"
		start_imqtt
		IM=(--addr "127.0.0.1:$IM_PORT" --pid "$IM_PID")
		bench storm "${IM[@]}" --conns "$STORM" --tokens "$WORK/tokens" --label imqtt-storm-tokens
		if [ "$STORM_PW" -gt 0 ]; then
			log "storm: $STORM_PW devices with bcrypt-cost-10 passwords"
			bench storm "${IM[@]}" --conns "$STORM_PW" --prefix r --same-password bench-real-cost --connect-timeout 300s \
				--label imqtt-storm-passwords
		fi
	fi
fi

log "done"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
[ -z "${RESULTS:-}" ] || cp "$RES" "$RESULTS"
base=()
[ -z "$MQ_PID" ] || base=(--base mosquitto-raw-qos1)
echo
"$BENCH" table "${base[@]}" "$RES"
echo "(load average at start: $load_start; at the end: $load_end. Another busy process on this machine moves every figure: rerun when it is quiet.)"
