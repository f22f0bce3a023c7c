# monitor — build, test, run. The README's two commands are `make run` and
# `make test`; both set up what they need on a fresh Debian machine.
SHELL := /bin/bash
GO ?= go
BIN := bin
TOOLS := $(CURDIR)/bin/tools
export PATH := $(TOOLS):$(PATH)

PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
STATICCHECK_VERSION := v0.8.2

CMDS := agent broker visualization monitor
# Packages whose tests need redis-server.
GOTEST_FLAGS ?= -race -count=1 -timeout 20m

.PHONY: all build test test-go test-nocgo test-faults check proto tools deps run clean fuzz-short bench bench-quick cluster cluster-down ui e2e e2e-quic

all: build

build: ui
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/agent ./agent/cmd
	$(GO) build -o $(BIN)/broker ./broker/cmd
	$(GO) build -o $(BIN)/visualization ./visualization/cmd
	$(GO) build -o $(BIN)/monitor ./cmd/monitor
	$(GO) build -o $(BIN)/loadgen ./cmd/loadgen
	$(GO) build -o $(BIN)/monitorctl ./cmd/monitorctl

# deps installs the system packages the tests need when they are missing
# (Debian/Ubuntu; needs root or sudo).
deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v protoc >/dev/null || missing="$$missing protobuf-compiler"; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

test: deps build test-go test-nocgo test-faults fuzz-short bench-quick e2e e2e-quic

# ui builds the dashboard (web/, Chart.js bundled by esbuild) into
# visualization/internal/api/ui/dist, which the Go binaries embed; a Go
# build without it embeds the minimal fallback page. npm ci runs again
# only when web/package-lock.json changes.
ui: web/node_modules/.ci-stamp
	cd web && node build.mjs

web/node_modules/.ci-stamp: web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: make deps installs nodejs and npm (a plain go build serves the fallback page)"; exit 1; }
	cd web && npm ci --no-audit --no-fund
	@touch $@

# e2e drives Debian's /usr/bin/chromium with playwright-core (no browser
# download) against bin/monitor standalone, bin/loadgen and simfleet
# (e2e/ui/harness.mjs). SCREENSHOTS=docs/img refreshes the README's
# pictures; by default they go to e2e/ui/artifacts.
e2e: build e2e/ui/node_modules/.ci-stamp
	cd e2e/ui && node --test --test-reporter=spec

# e2e-quic: headless Chromium (Debian's /usr/bin/chromium, playwright-core
# from e2e/quic's lockfile) receives live samples over WebTransport pinned
# by certificate hash (visualization/webtransport_e2e_test.go).
e2e-quic: e2e/quic/node_modules/.ci-stamp
	MONITOR_E2E_QUIC=1 $(GO) test -race -count=1 -run 'TestWebTransportInHeadlessChromium' ./visualization/

e2e/quic/node_modules/.ci-stamp: e2e/quic/package.json e2e/quic/package-lock.json
	cd e2e/quic && npm ci --no-audit --no-fund
	@touch $@

e2e/ui/node_modules/.ci-stamp: e2e/ui/package.json e2e/ui/package-lock.json
	cd e2e/ui && npm ci --no-audit --no-fund
	@touch $@

# test-go runs every package's tests but the fault suite's (test-faults
# runs those, with its figures).
test-go:
	$(GO) test $(GOTEST_FLAGS) -skip '^($(FAULTS_TESTS))$$' ./...

# Everything must also build without cgo, and the parts with C twins (the
# agent's ring) pass their tests with the pure-Go twin.
test-nocgo:
	CGO_ENABLED=0 $(GO) build -o /dev/null ./...
	CGO_ENABLED=0 $(GO) vet ./...
	CGO_ENABLED=0 $(GO) test -count=1 ./agent/... ./pkg/algorithm/...

# test-faults is the fault-injection suite (docs/reliability.md): a broker
# SIGKILLed under agent streams, a Redis shard stopped, the broker-Redis link
# slowed, reset and black-holed, a Raft member partitioned, the Raft leader
# killed, agents cut off past their ring and their spool cap, a stuck
# Subscribe stream, a cardinality bomb. Every scenario logs "FIGURE
# name=value unit" lines (printed at the end, full log in FAULTS_LOG) and
# asserts correctness only (lost = 0, duplicates = 0, linearizable), never
# timing. Short versions under -race; MONITOR_FAULTS_LONG=1 (with
# MONITOR_FAULTS_OUTAGE=30s) runs the long ones for benchmark figures,
# without -race (figures of the race detector's speed mean little).
FAULTS_LOG ?= $${TMPDIR:-/tmp}/monitor-faults.log
FAULTS_TESTS := TestBrokerSIGKILLUnderAgentStreams|TestRedisLinkLatencyResetsBlackhole|TestCardinalityBombIsCappedPerHost|TestSlowSubscriberIsBoundedOthersUnaffected|TestShardOutageUnderLoad|TestLinearizableAcrossLeaderKill|TestPartitionedMemberNoSecondLeader|TestRealBrokerOutageLosesNothing|TestSpoolCapDropsOldest|TestBrokerOutageLosesNothing|TestSlowSubscriberDropsAndGetsGapMarker|TestSeriesCap.*|TestPassDelayBlackholeReset|TestResetWhileBlackholed
test-faults: deps
	@echo "fault suite: log in $(FAULTS_LOG)"
	@$(GO) test -count=1 -timeout 20m $(if $(filter 1,$(MONITOR_FAULTS_LONG)),,-race -short) -v -run '^($(FAULTS_TESTS))$$' \
	  ./e2e/faults ./e2e ./broker/internal/control ./broker/internal/hub ./broker/internal/ingest ./agent ./internal/faultproxy \
	  >$(FAULTS_LOG) 2>&1 || { cat $(FAULTS_LOG); exit 1; }
	@grep -E '^(ok|---)' $(FAULTS_LOG); grep -ho 'FIGURE .*' $(FAULTS_LOG)

# A short run of every fuzz target in the tree (seed corpora in testdata/fuzz
# and f.Add); FUZZTIME per target. A run that fails only with Go 1.26's
# coordinator race at the end of -fuzztime (a bare "context deadline
# exceeded", no failing input, no test error: golang/go#75804) runs once
# more; any finding fails at once.
FUZZTIME ?= 5s
fuzz-short:
	@set -e; grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do \
	  dir=$$(dirname "$$f"); \
	  for t in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' "$$f" | sed 's/^func //'); do \
	    echo "fuzz $$t in $$dir ($(FUZZTIME))"; \
	    if ! $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) "./$$dir" >/tmp/fuzz-$$t.log 2>&1; then \
	      if grep -q 'context deadline exceeded' /tmp/fuzz-$$t.log && ! grep -qE 'Failing input written|panic:|_test.go:[0-9]+:' /tmp/fuzz-$$t.log; then \
	        echo "  $$t: Go's fuzz coordinator reported its own deadline at -fuzztime's end with no failing input (golang/go#75804, fixed in Go 1.27); running it once more"; \
	        $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) "./$$dir" >/tmp/fuzz-$$t.log 2>&1 || { cat /tmp/fuzz-$$t.log; exit 1; }; \
	      else cat /tmp/fuzz-$$t.log; exit 1; fi; \
	    fi; \
	  done; \
	done

tools:
	@mkdir -p $(TOOLS)
	@[ -x $(TOOLS)/protoc-gen-go ] || GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@[ -x $(TOOLS)/protoc-gen-go-grpc ] || GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@[ -x $(TOOLS)/staticcheck ] || GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# proto regenerates the committed Go code from proto/monitor.proto with the
# pinned generators and Debian's protoc.
proto: deps tools
	protoc --plugin=$(TOOLS)/protoc-gen-go --plugin=$(TOOLS)/protoc-gen-go-grpc \
	  --go_out=. --go_opt=paths=source_relative \
	  --go-grpc_out=. --go-grpc_opt=paths=source_relative proto/*.proto

check: deps tools
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(TOOLS)/staticcheck ./...
	@cp go.mod /tmp/go.mod.check && cp go.sum /tmp/go.sum.check && $(GO) mod tidy && \
	  if ! diff -q go.mod /tmp/go.mod.check >/dev/null || ! diff -q go.sum /tmp/go.sum.check >/dev/null; then \
	    echo "go mod tidy changed go.mod/go.sum; commit the result"; git --no-pager diff -- go.mod go.sum; exit 1; fi
	@tmp=$$(mktemp -d) && cp proto/*.pb.go $$tmp/ && $(MAKE) --no-print-directory proto >/dev/null && \
	  for f in proto/*.pb.go; do cmp -s "$$f" "$$tmp/$$(basename $$f)" || { echo "generated $$f was stale; make proto regenerated it: commit the result"; rm -rf $$tmp; exit 1; }; done; \
	  [ "$$(ls proto/*.pb.go | wc -l)" = "$$(ls $$tmp/*.pb.go | wc -l)" ] || { echo "make proto produced a different set of files"; rm -rf $$tmp; exit 1; }; rm -rf $$tmp
	@echo "check ok"

# bench runs the whole suite against redis-servers and binaries it starts
# itself (bench/main.go lists the phases; about 11
# minutes on 2 CPUs), writes bench/results.json, regenerates the generated
# part of BENCHMARKS.md and draws docs/img/growth.png. One phase again:
# go run ./bench -only e2e -report BENCHMARKS.md (the others are kept).
bench: deps build
	$(GO) run ./bench -out bench/results.json -report BENCHMARKS.md

# bench-quick is bench in under 90 s for CI: single short runs; it fails
# only on errors or lost samples, never on timing.
bench-quick: deps build
	$(GO) run ./bench -quick -out $${TMPDIR:-/tmp}/monitor-bench-quick.json

# run builds and starts the all-in-one: broker + visualization + a local
# agent on embedded storage in ./data. Open the printed URL.
run: deps build
	$(BIN)/monitor standalone -data data

# cluster starts a local cluster on 127.0.0.1 (3 Redis shards, 3 brokers in
# Raft, the visualization server, CLUSTER_AGENTS simulated agents and one
# real agent; ports from CLUSTER_PORT_BASE=19100), prints URLs and
# credentials; state in .cluster/. cluster-down stops exactly what it
# started (scripts/cluster.sh, docs/deployment.md).
cluster: deps build
	scripts/cluster.sh up

cluster-down:
	scripts/cluster.sh down

clean:
	rm -rf $(BIN) data
