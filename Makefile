# Lanyard. `make run` starts a dev CA + agent; `make test` runs every test.
SHELL := /bin/bash
GO    ?= go
CACHE := $(CURDIR)/.cache
BIN   := $(CURDIR)/bin
TOOLS := $(CACHE)/bin
export GOFLAGS := -buildvcs=false

.PHONY: all build run test test-unit test-integration bench generate generate-check lint fuzz tools k8s-tools vault-tools clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

## run: the CA with a node agent, embedded SQLite store, dev mode (./.lanyard)
run: build
	$(BIN)/lanyard dev --dir $(CURDIR)/.lanyard

## test: unit + integration tests (real processes on 127.0.0.1; the Kubernetes tests need k8s-tools,
## the Vault upstream's need vault-tools)
test: build k8s-tools vault-tools
	$(GO) test -race -count=1 -timeout 20m ./...
	cd integration/istio && $(GO) test -race -count=1 -timeout 20m ./...
	cd integration/deploy && $(GO) test -race -count=1 -timeout 20m ./...

## bench: Go micro-benchmarks, then the issuance benchmark against a real `lanyard dev`
## (BENCH_FLAGS, e.g. BENCH_FLAGS='--duration 5s'; see `lanyard bench --help`)
BENCH_FLAGS ?=
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 3s ./ca/... ./storage/...
	$(BIN)/lanyard bench $(BENCH_FLAGS)

$(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc: tools/go.mod tools/go.sum
	cd tools && $(GO) build -o $(TOOLS)/ github.com/bufbuild/buf/cmd/buf google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc

## k8s-tools: kube-apiserver and etcd for the integration tests' control plane (tools/k8s;
## about 12 minutes on 2 cores cold, nothing to do when tools/k8s is unchanged)
K8S_TOOLS := $(TOOLS)/kube-apiserver $(TOOLS)/etcd
K8S_LDFLAGS := -X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37
$(K8S_TOOLS) &: tools/k8s/go.mod tools/k8s/go.sum $(wildcard tools/k8s/cmd/*/*.go)
	cd tools/k8s && $(GO) build -ldflags '$(K8S_LDFLAGS)' -o $(TOOLS)/ k8s.io/kubernetes/cmd/kube-apiserver ./cmd/etcd
	touch $(K8S_TOOLS)

k8s-tools: $(K8S_TOOLS)

## vault-tools: the Vault server for the Vault upstream's integration tests (tools/vault, Vault
## v1.21.0; about MEASURED minutes on 2 cores cold, nothing to do when tools/vault is unchanged)
$(TOOLS)/vault: tools/vault/go.mod tools/vault/go.sum
	cd tools/vault && $(GO) build -o $(TOOLS)/vault github.com/hashicorp/vault
	touch $@

vault-tools: $(TOOLS)/vault

tools: $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc

generate: tools
	$(TOOLS)/buf lint
	$(TOOLS)/buf generate

## generate-check: fails when the committed generated code is stale
generate-check: tools
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	cp -r proto $$tmp/proto.before && \
	$(TOOLS)/buf generate && \
	if ! diff -r $$tmp/proto.before proto >/dev/null; then \
		echo "generated code is stale: run 'make generate' and commit" >&2; \
		diff -r $$tmp/proto.before proto | head -40 >&2; exit 1; fi && echo "generated code is up to date"

## lint: vet, buf lint, buf breaking against BREAKING_AGAINST (default the previous commit, read
## with git archive so it works in clones and worktrees alike), gofmt
BREAKING_AGAINST ?= HEAD~1
lint: tools
	$(GO) vet ./...
	$(TOOLS)/buf lint
	@if git rev-parse -q --verify '$(BREAKING_AGAINST)^{commit}' >/dev/null; then \
		tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
		git archive '$(BREAKING_AGAINST)' buf.yaml proto | tar -x -C $$tmp && \
		$(TOOLS)/buf breaking --against $$tmp && echo "buf breaking: no breaking change against $(BREAKING_AGAINST)"; \
	else echo "buf breaking: $(BREAKING_AGAINST) is not in this clone (shallow?): check skipped" >&2; fi
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## fuzz: every native fuzz target (found in the *_test.go files) for FUZZTIME each
FUZZTIME ?= 30s
fuzz:
	@set -e; grep -rl --include='*_test.go' '^func Fuzz' ca agent storage cmd 2>/dev/null | xargs -n1 dirname | sort -u | \
	while read -r pkg; do \
		for f in $$(grep -h '^func Fuzz' $$pkg/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
			echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) ./$$pkg; \
		done; \
	done

clean:
	rm -rf $(BIN)
