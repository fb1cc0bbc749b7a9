# Lanyard. `make run` starts a dev CA + agent; `make test` runs every test.
SHELL := /bin/bash
GO    ?= go
CACHE := $(CURDIR)/.cache
BIN   := $(CURDIR)/bin
TOOLS := $(CACHE)/bin
export GOFLAGS := -buildvcs=false

.PHONY: all build run test test-unit test-integration test-vault bench generate generate-check lint fuzz tools k8s-tools vault-tools postgres clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

## run: the CA with a node agent, embedded SQLite store, dev mode (./.lanyard)
run: build
	$(BIN)/lanyard dev --dir $(CURDIR)/.lanyard

## test: unit + integration tests (real processes on 127.0.0.1; the Kubernetes tests need k8s-tools,
## the PostgreSQL store's tests Debian's postgresql package). The Vault upstream's integration tests
## are not part of it yet (building the Vault server is too slow for CI so far): see test-vault.
test: build k8s-tools postgres
	$(GO) test -race -count=1 -timeout 20m ./...
	cd integration/istio && $(GO) test -race -count=1 -timeout 20m ./...
	cd integration/deploy && $(GO) test -race -count=1 -timeout 20m ./...

## bench: Go micro-benchmarks, then the issuance benchmark against a real `lanyard dev`
## (BENCH_FLAGS, e.g. BENCH_FLAGS='--duration 5s'; see `lanyard bench --help`)
BENCH_FLAGS ?=
bench: build postgres
	$(GO) test -run '^$$' -bench . -benchtime 3s ./ca/... ./storage/...
	$(BIN)/lanyard bench $(BENCH_FLAGS)

$(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc $(TOOLS)/govulncheck &: tools/go.mod tools/go.sum
	cd tools && $(GO) build -o $(TOOLS)/ github.com/bufbuild/buf/cmd/buf google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc golang.org/x/vuln/cmd/govulncheck

## k8s-tools: kube-apiserver and etcd for the integration tests' control plane (tools/k8s;
## about 12 minutes on 2 cores cold, nothing to do when tools/k8s is unchanged)
K8S_TOOLS := $(TOOLS)/kube-apiserver $(TOOLS)/etcd
K8S_LDFLAGS := -X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37
$(K8S_TOOLS) &: tools/k8s/go.mod tools/k8s/go.sum $(wildcard tools/k8s/cmd/*/*.go)
	cd tools/k8s && $(GO) build -ldflags '$(K8S_LDFLAGS)' -o $(TOOLS)/ k8s.io/kubernetes/cmd/kube-apiserver ./cmd/etcd
	touch $(K8S_TOOLS)

k8s-tools: $(K8S_TOOLS)

## vault-tools: the Vault server for the Vault upstream's integration tests (tools/vault, Vault
## v1.21.0; a cold build has not finished on a loaded 2-core machine in 109 minutes, which is why
## test does not need it yet; nothing to do when tools/vault is unchanged)
$(TOOLS)/vault: tools/vault/go.mod tools/vault/go.sum
	cd tools/vault && $(GO) build -o $(TOOLS)/vault github.com/hashicorp/vault
	touch $@

vault-tools: $(TOOLS)/vault

## test-vault: the Vault upstream's integration tests against a real Vault server (builds it first;
## see vault-tools). Not part of test yet.
test-vault: vault-tools
	$(GO) test -race -count=1 -timeout 20m -tags vault ./integration/vault/...

## postgres: Debian's PostgreSQL server programs for the tests and the benchmark (internal/pgtest runs
## them on 127.0.0.1 with a temporary data directory); installed once, as root, when missing
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "$$LANYARD_PG_BIN" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "install Debian's postgresql package (apt-get install postgresql) or set LANYARD_PG_BIN" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi

tools: $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc $(TOOLS)/govulncheck

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

## lint: vet (also of the vault-tagged Vault integration suite, which test leaves out), buf lint, gofmt, and govulncheck on the main module: known vulnerabilities in code
## the module calls, from the Go vulnerability database GOVULNDB (a URL, or file:///dir with a
## local copy). Found vulnerabilities fail lint. An unreachable database is reported loudly and
## fails lint only with GOVULNCHECK_REQUIRED=1 (some build machines reach no host but the module
## proxy).
GOVULNDB ?= https://vuln.go.dev
GOVULNCHECK_REQUIRED ?= 0
## buf breaking runs against BREAKING_AGAINST (default the previous commit, read with git archive so
## it works in clones and worktrees alike).
BREAKING_AGAINST ?= HEAD~1
lint: tools
	$(GO) vet ./...
	$(GO) vet -tags vault ./integration/vault/... ./integration/harness/vault/...
	$(TOOLS)/buf lint
	@if git rev-parse -q --verify '$(BREAKING_AGAINST)^{commit}' >/dev/null; then \
		tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
		git archive '$(BREAKING_AGAINST)' buf.yaml proto | tar -x -C $$tmp && \
		$(TOOLS)/buf breaking --against $$tmp && echo "buf breaking: no breaking change against $(BREAKING_AGAINST)"; \
	else echo "buf breaking: $(BREAKING_AGAINST) is not in this clone (shallow?): check skipped" >&2; fi
	@out=$$($(TOOLS)/govulncheck -db $(GOVULNDB) ./... 2>&1); rc=$$?; echo "$$out" | tail -60; \
	if [ $$rc -eq 0 ]; then echo "govulncheck: no known vulnerability in code the module calls"; \
	elif [ $$rc -eq 3 ]; then echo "govulncheck: vulnerabilities found" >&2; exit 1; \
	elif echo "$$out" | grep -q 'fetching vulnerabilities'; then \
		echo "WARNING: govulncheck did NOT run: vulnerability database $(GOVULNDB) unreachable" >&2; \
		[ "$(GOVULNCHECK_REQUIRED)" = 0 ] || exit 1; \
	else echo "govulncheck failed" >&2; exit 1; fi
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
