# flowguard — the two commands a newcomer needs are `make run` and `make test`.
GO        ?= go
FUZZTIME  ?= 10s
BENCHTIME ?= 1s

.PHONY: run build test test-short lint fuzz bench bench-go bench-wheel bench-load clean

run: ## start the service on the embedded default (http://localhost:8080)
	$(GO) run ./cmd/flowguard serve

build:
	$(GO) build -o bin/flowguard ./cmd/flowguard

test: lint ## every test, with the race detector (needs redis-server and promtool; .ci/run installs them)
	$(GO) test -race -count=1 -timeout 9m ./...

test-short:
	$(GO) test -count=1 -short ./...

lint: ## gofmt and go vet must be clean
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fuzz: ## run every fuzz target for FUZZTIME each
	@scripts/fuzz.sh $(FUZZTIME)

bench: bench-go bench-wheel bench-load ## Go benchmarks, the wheel bandit table, then the HTTP load figures

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

bench-wheel: ## the wheel bandit of Riquelme et al. 2018: regret of LinTS, NIG, ε-greedy, Uniform = 100
	$(GO) run ./cmd/flowguard sim wheel --steps 2000 --runs 20

bench-load: ## throughput and fixed-rate p99, as ratios to a bare fasthttp baseline
	@scripts/loadbench.sh

clean:
	rm -rf bin out
