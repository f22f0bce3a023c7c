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

.PHONY: all build test test-go test-nocgo check proto tools deps run clean fuzz-short

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/agent ./agent/cmd
	$(GO) build -o $(BIN)/broker ./broker/cmd
	$(GO) build -o $(BIN)/visualization ./visualization/cmd
	$(GO) build -o $(BIN)/monitor ./cmd/monitor

# deps installs the system packages the tests need when they are missing
# (Debian/Ubuntu; needs root or sudo).
deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v protoc >/dev/null || missing="$$missing protobuf-compiler"; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

test: deps build test-go test-nocgo fuzz-short

test-go:
	$(GO) test $(GOTEST_FLAGS) ./...

# Everything must also build without cgo (the C/C++ parts have Go twins).
test-nocgo:
	CGO_ENABLED=0 $(GO) build -o /dev/null ./...
	CGO_ENABLED=0 $(GO) vet ./...

# A short run of every fuzz target (seed corpora in testdata/fuzz).
fuzz-short:
	$(GO) test -run '^$$' -fuzz '^FuzzConvert$$' -fuzztime 5s ./broker/internal/ingest
	$(GO) test -run '^$$' -fuzz '^FuzzParseSeries$$' -fuzztime 5s ./pkg/storage

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
	  --go-grpc_out=. --go-grpc_opt=paths=source_relative proto/monitor.proto

check: deps tools
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(TOOLS)/staticcheck ./...
	@cp go.mod /tmp/go.mod.check && cp go.sum /tmp/go.sum.check && $(GO) mod tidy && \
	  if ! diff -q go.mod /tmp/go.mod.check >/dev/null || ! diff -q go.sum /tmp/go.sum.check >/dev/null; then \
	    echo "go mod tidy changed go.mod/go.sum; commit the result"; git --no-pager diff -- go.mod go.sum; exit 1; fi
	@$(MAKE) --no-print-directory proto >/dev/null && \
	  if ! git diff --quiet -- proto/; then echo "generated proto code is stale; run make proto and commit"; git --no-pager diff --stat -- proto/; exit 1; fi
	@echo "check ok"

# run builds and starts the all-in-one: broker + visualization + a local
# agent on embedded storage in ./data. Open the printed URL.
run: build
	$(BIN)/monitor standalone -data data

clean:
	rm -rf $(BIN) data
