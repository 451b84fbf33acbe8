# twinmesh — make test runs everything CI runs.
GO        ?= go
PKGS      := ./...
GOBIN     ?= $(shell $(GO) env GOPATH)/bin
STATICCHECK_VERSION := v0.8.2
export PATH := $(GOBIN):$(PATH)

.PHONY: all build test deps lint unit fuzz-smoke proto bench clean

all: build

## build: bin/twinmesh, stamped with its commit and build time (twinmesh version).
build:
	$(GO) build -buildvcs=auto -ldflags "-X github.com/twinmesh/twinmesh/api/node.BuildTime=$$(date -u +%Y-%m-%dT%H:%M:%SZ)" -o bin/twinmesh ./cmd/twinmesh

## test: install missing test dependencies, lint, run every test with -race,
## then the short form of the Jepsen test (internal/jepsen: root, network namespaces).
test: deps lint unit jepsen

deps:
	./scripts/test-deps.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || (gofmt -l . ; echo "gofmt: files above need formatting"; exit 1)
	$(GO) vet $(PKGS)
	@command -v staticcheck >/dev/null 2>&1 || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	staticcheck $(PKGS)

unit:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

## fuzz-smoke: a short run of every fuzz target (seed corpora also run in `make test`).
fuzz-smoke:
	./scripts/fuzz-smoke.sh 10s

## proto: regenerate the committed protobuf code.
proto:
	@command -v protoc >/dev/null || (echo "protoc missing: apt-get install protobuf-compiler"; exit 1)
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	protoc --go_out=. --go_opt=module=github.com/twinmesh/twinmesh actors/actorspb/grain.proto

## bench: the go benchmarks quoted in BENCHMARKS.md.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin

## jepsen: the fault-injection test of issue 20 (root, iproute2, nftables; about two minutes).
## Long form: TWINMESH_JEPSEN_DURATION=30m TWINMESH_JEPSEN_NODES=5 make jepsen
.PHONY: jepsen
jepsen:
	./scripts/jepsen.sh
