#!/usr/bin/env bash
# A local cluster on this machine, for trying things and for the walkthrough
# in docs/deployment.md: 3 redis-server shards, 3 brokers in one Raft cluster
# (b1 bootstraps, b2 and b3 -join it), the visualization server, N simulated
# agents (bin/loadgen) and one real agent (bin/agent).
#
#   scripts/cluster.sh up      start everything (make cluster)
#   scripts/cluster.sh down    stop exactly what `up` started (make cluster-down)
#   scripts/cluster.sh status  show what runs
#
# State lives in $CLUSTER_DIR (default .cluster/): one pid file per process
# under pids/, logs under logs/, data dirs, the generated visualization
# config and info.txt (URLs and credentials, mode 600); in TLS mode also
# pki/, broker-tls.yaml, agent.yaml and agent.token (mode 600). `down` signals only
# the pids it recorded, and only while /proc/PID/exe is still the binary it
# started (a recycled pid is left alone); it keeps the directory for the
# logs, and `up` starts from an empty one.
#
# Ports are fixed, from CLUSTER_PORT_BASE (default 19100), all on 127.0.0.1;
# `up` refuses to start when one is taken. Redis's own 6379 is never used.
#   redis shards     BASE+1 … BASE+3
#   broker bN        gRPC BASE+10N+1, Raft BASE+10N+2, HTTP BASE+10N+3
#   visualization    HTTP BASE+80, QUIC (UDP) BASE+81, metrics BASE+82
#   real agent       HTTP BASE+90
# Knobs: CLUSTER_AGENTS (simulated hosts, default 20), CLUSTER_INTERVAL
# (their snapshot interval, default 5s), BIN (default bin), CLUSTER_TLS.
#
# CLUSTER_TLS=1 secures every link (docs/deployment.md "TLS"): certificates
# from `monitorctl certs` in pki/ (a CA, one server certificate for
# 127.0.0.1/localhost, client certificates for the real agent, for scrapes
# and for monitorctl); brokers with grpc_tls (client_auth require),
# raft.tls, http_tls (client certificate required) and an agent secret
# (auth.agent_secrets); the real agent with its certificate and a token
# (monitorctl agent-token); the visualization server on HTTPS with
# broker_tls; the simulated agents (bin/loadgen -tls) with a client
# certificate and a token per host from the agent secret.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIR=${CLUSTER_DIR:-$ROOT/.cluster}
BIN=${BIN:-$ROOT/bin}
BASE=${CLUSTER_PORT_BASE:-19100}
AGENTS=${CLUSTER_AGENTS:-20}
INTERVAL=${CLUSTER_INTERVAL:-5s}
HOST=127.0.0.1
TLS=${CLUSTER_TLS:-0}
PKI=$DIR/pki

die() { echo "cluster: $*" >&2; exit 1; }

# Start order; `down` stops in the reverse order.
ORDER=(redis-1 redis-2 redis-3 broker-b1 broker-b2 broker-b3 visualization loadgen agent)

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

alive() { # name -> 0 when its recorded pid runs the binary it started
	local f="$DIR/pids/$1.pid" pid exe
	[[ -f $f ]] || return 1
	read -r pid exe <"$f" || return 1
	[[ -n ${pid:-} && -d /proc/$pid ]] || return 1
	[[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]]
}

# start NAME BINARY ARGS... : runs in the background, logs to logs/NAME.log,
# records "pid resolved-binary" in pids/NAME.pid.
start() {
	local name=$1 bin=$2
	shift 2
	local exe
	exe=$(readlink -f "$(command -v "$bin")") || die "$bin not found"
	nohup "$bin" "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
	echo "$! $exe" >"$DIR/pids/$name.pid"
}

# wait_until WHAT SECONDS COMMAND... : polls COMMAND every 0.2 s.
wait_until() {
	local what=$1 secs=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			echo "cluster: $what not ready after ${secs}s; see $DIR/logs/" >&2
			return 1
		fi
		sleep 0.2
	done
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }

# broker_ok URL: a broker's HTTP port; in TLS mode over HTTPS with the
# scrape client certificate (http_tls requires one).
broker_ok() {
	if [[ $TLS == 1 ]]; then
		curl -fsS -o /dev/null --max-time 2 --cacert "$PKI/ca.pem" \
			--cert "$PKI/client-prometheus.pem" --key "$PKI/client-prometheus-key.pem" "$1"
	else
		http_ok "$1"
	fi
}

random() { head -c "$1" /dev/urandom | base64 | tr -d '/+=\n' | head -c "$2"; }

up() {
	for n in "${ORDER[@]}"; do
		alive "$n" && die "$n is running (pid $(cut -d' ' -f1 "$DIR/pids/$n.pid")); run 'make cluster-down' first"
	done
	for b in redis-server curl; do command -v "$b" >/dev/null || die "$b is not installed (make deps installs redis-server)"; done
	[[ $TLS == 0 || $TLS == 1 ]] || die "CLUSTER_TLS is '$TLS'; want 0 or 1"
	for b in broker visualization agent loadgen monitorctl; do [[ -x $BIN/$b ]] || die "$BIN/$b is missing; run make build"; done
	local ports=($((BASE + 1)) $((BASE + 2)) $((BASE + 3)) $((BASE + 80)) $((BASE + 82)) $((BASE + 90)))
	for i in 1 2 3; do ports+=($((BASE + 10 * i + 1)) $((BASE + 10 * i + 2)) $((BASE + 10 * i + 3))); done
	for p in "${ports[@]}"; do
		port_busy "$p" && die "port $p is taken; set CLUSTER_PORT_BASE to another base"
	done

	rm -rf "$DIR"
	mkdir -p "$DIR/pids" "$DIR/logs"
	chmod 700 "$DIR"
	started_ok=0
	# Whatever stops start-up (a failed wait, die, ^C) stops what started.
	trap 'if ((${started_ok:-1} == 0)); then echo "cluster: start-up failed; stopping what started" >&2; down >&2; fi' EXIT

	local secret admin_pw jwt agent_secret="" agent_id scheme=http
	secret=$(random 48 40)
	admin_pw=$(random 24 16)
	jwt=$(random 64 64)
	agent_id="$(hostname -s 2>/dev/null || echo local)-agent"

	# TLS mode: the PKI, the brokers' TLS blocks, the agent's token.
	local broker_cfg=() agent_cfg=()
	if [[ $TLS == 1 ]]; then
		scheme=https
		agent_secret=$(random 48 40)
		"$BIN/monitorctl" certs -out "$PKI" -hosts "$HOST,localhost" -agents "$agent_id" -clients prometheus,admin,loadgen >/dev/null
		cat >"$DIR/broker-tls.yaml" <<EOF
# Generated by scripts/cluster.sh (CLUSTER_TLS=1); flags set the rest,
# MONITOR_AGENT_SECRETS the agent secret.
grpc_tls:
  enabled: true
  cert_file: "$PKI/server.pem"
  key_file: "$PKI/server-key.pem"
  ca_file: "$PKI/ca.pem"
  client_auth: require
http_tls:
  enabled: true
  cert_file: "$PKI/server.pem"
  key_file: "$PKI/server-key.pem"
  ca_file: "$PKI/ca.pem"
  client_auth: require
raft:
  tls: true
EOF
		broker_cfg=(-config "$DIR/broker-tls.yaml")
		(umask 077 && MONITOR_AGENT_SECRET=$agent_secret "$BIN/monitorctl" agent-token -host "$agent_id" >"$DIR/agent.token")
		cat >"$DIR/agent.yaml" <<EOF
# Generated by scripts/cluster.sh (CLUSTER_TLS=1); flags set the rest.
tls:
  enabled: true
  ca_file: "$PKI/ca.pem"
  cert_file: "$PKI/agent-$agent_id.pem"
  key_file: "$PKI/agent-$agent_id-key.pem"
token_file: "$DIR/agent.token"
EOF
		chmod 600 "$DIR/broker-tls.yaml" "$DIR/agent.yaml"
		agent_cfg=(-config "$DIR/agent.yaml")
	fi

	local spec=""
	for i in 1 2 3; do
		local rp=$((BASE + i))
		mkdir -p "$DIR/redis-$i"
		start "redis-$i" redis-server --port "$rp" --bind "$HOST" --dir "$DIR/redis-$i" \
			--save "" --appendonly no --protected-mode yes --maxmemory 256mb --maxmemory-policy noeviction
		spec+="${spec:+,}redis://$HOST:$rp"
	done
	for i in 1 2 3; do
		wait_until "redis-$i" 10 bash -c "exec 3<>/dev/tcp/$HOST/$((BASE + i))"
	done

	local brokers=""
	for i in 1 2 3; do
		local g=$((BASE + 10 * i + 1)) r=$((BASE + 10 * i + 2)) h=$((BASE + 10 * i + 3))
		local join=()
		((i > 1)) && join=(-join "$HOST:$((BASE + 11))")
		# MONITOR_AGENT_SECRETS is empty (no agent authentication) unless TLS.
		MONITOR_CLUSTER_SECRET=$secret MONITOR_ADMIN_PASSWORD=$admin_pw MONITOR_AGENT_SECRETS=$agent_secret \
			start "broker-b$i" "$BIN/broker" "${broker_cfg[@]}" -node-id "b$i" -grpc "$HOST:$g" -raft "$HOST:$r" -http "$HOST:$h" \
			-data "$DIR/b$i" -storage "$spec" "${join[@]}"
		# b1 must lead before the others join it.
		wait_until "broker b$i" 30 broker_ok "$scheme://$HOST:$h/readyz"
		brokers+="${brokers:+,}$HOST:$g"
	done

	local hash
	hash=$(printf '%s\n' "$admin_pw" | "$BIN/visualization" -hash-password)
	cat >"$DIR/visualization.yaml" <<EOF
# Generated by scripts/cluster.sh; see configs/visualization.yaml for every key.
http_listen: "$HOST:$((BASE + 80))"
quic_listen: "$HOST:$((BASE + 81))"
metrics_listen: "$HOST:$((BASE + 82))"
brokers: [$(sed "s/\([^,]*\)/\"\1\"/g" <<<"$brokers")]
topk:
  shm_name: /monitor-topk-cluster-$BASE
auth:
  jwt_secret: "$jwt"
  users:
    - username: admin
      password_hash: "$hash"
      role: admin
cluster_secret: "$secret"
EOF
	if [[ $TLS == 1 ]]; then
		cat >>"$DIR/visualization.yaml" <<EOF
tls:
  enabled: true
  cert_file: "$PKI/server.pem"
  key_file: "$PKI/server-key.pem"
broker_tls:
  enabled: true
  ca_file: "$PKI/ca.pem"
  cert_file: "$PKI/server.pem"
  key_file: "$PKI/server-key.pem"
EOF
	fi
	chmod 600 "$DIR/visualization.yaml"
	start visualization "$BIN/visualization" -config "$DIR/visualization.yaml"
	wait_until "visualization" 30 http_ok "http://$HOST:$((BASE + 82))/readyz"

	local fleet="$AGENTS simulated (sim-00001 …, every $INTERVAL) + 1 real"
	if [[ $TLS == 1 ]]; then
		fleet+=", over mTLS, each with its own agent token"
		MONITOR_AGENT_SECRET=$agent_secret start loadgen "$BIN/loadgen" -broker "$brokers" -hosts "$AGENTS" -interval "$INTERVAL" -duration 0 -prefix sim \
			-tls -tls-ca "$PKI/ca.pem" -tls-cert "$PKI/client-loadgen.pem" -tls-key "$PKI/client-loadgen-key.pem"
	else
		start loadgen "$BIN/loadgen" -broker "$brokers" -hosts "$AGENTS" -interval "$INTERVAL" -duration 0 -prefix sim
	fi
	mkdir -p "$DIR/agent"
	start agent "$BIN/agent" "${agent_cfg[@]}" -broker "$brokers" -host-id "$agent_id" \
		-data "$DIR/agent" -http "$HOST:$((BASE + 90))"
	wait_until "agent" 20 http_ok "http://$HOST:$((BASE + 90))/healthz"
	started_ok=1

	umask 077
	local ctl_tls="" curl_tls="" tls_lines=""
	if [[ $TLS == 1 ]]; then
		ctl_tls=" -tls-ca $PKI/ca.pem -tls-cert $PKI/client-admin.pem -tls-key $PKI/client-admin-key.pem"
		curl_tls="curl --cacert $PKI/ca.pem --cert $PKI/client-prometheus.pem --key $PKI/client-prometheus-key.pem "
		tls_lines="
  TLS              every link; CA and certificates in $PKI/ (monitorctl certs)
  agent secret     $agent_secret   (more tokens: MONITOR_AGENT_SECRET=… $BIN/monitorctl agent-token -host ID)
  UI API by curl   curl --cacert $PKI/ca.pem https://$HOST:$((BASE + 80))/healthz"
	fi
	cat >"$DIR/info.txt" <<EOF
monitor local cluster ($DIR)

  dashboard        $scheme://$HOST:$((BASE + 80))/    user admin, password $admin_pw
  QUIC (UDP)       $HOST:$((BASE + 81))   e.g. MONITOR_USER=admin MONITOR_PASSWORD=… $BIN/monitorctl watch -addr $HOST:$((BASE + 81)) -n 5
  viz metrics      http://$HOST:$((BASE + 82))/metrics   /readyz /healthz
  brokers (gRPC)   $brokers
  broker HTTP      ${curl_tls}$scheme://$HOST:$((BASE + 13))/metrics  ($scheme://$HOST:$((BASE + 23)), $scheme://$HOST:$((BASE + 33)); + /readyz /federate)
  redis shards     $spec
  agents           $fleet ($agent_id, http://$HOST:$((BASE + 90))/metrics)

  cluster admin    MONITOR_PASSWORD=$admin_pw $BIN/monitorctl -broker $HOST:$((BASE + 11))$ctl_tls status
  cluster secret   $secret$tls_lines
  logs             $DIR/logs/
  stop             make cluster-down
EOF
	cat "$DIR/info.txt"
}

down() {
	[[ -d $DIR/pids ]] || { echo "cluster: nothing recorded in $DIR; nothing to stop"; return 0; }
	local i n pid exe
	for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do
		n=${ORDER[i]}
		[[ -f $DIR/pids/$n.pid ]] || continue
		read -r pid exe <"$DIR/pids/$n.pid"
		if alive "$n"; then
			kill -TERM "$pid" 2>/dev/null || true
			local deadline=$((SECONDS + 20))
			while alive "$n" && ((SECONDS < deadline)); do sleep 0.1; done
			if alive "$n"; then
				echo "cluster: $n (pid $pid) ignored SIGTERM for 20s; killing it"
				kill -KILL "$pid" 2>/dev/null || true
			fi
			echo "stopped $n (pid $pid)"
		fi
		rm -f "$DIR/pids/$n.pid"
	done
	echo "cluster stopped; logs and data are kept in $DIR"
}

status() {
	local n
	for n in "${ORDER[@]}"; do
		if alive "$n"; then
			echo "$n running (pid $(cut -d' ' -f1 "$DIR/pids/$n.pid"))"
		else
			echo "$n not running"
		fi
	done
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*) die "usage: $0 up|down|status" ;;
esac
