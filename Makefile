# flowguard — the two commands a newcomer needs are `make run` and `make test`.
GO        ?= go
FUZZTIME  ?= 10s
BENCHTIME ?= 1s
# What flowguard version prints for make build: the commit, from git.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: run build test test-short lint fuzz bench bench-go bench-wheel bench-load bench-cost bench-mem bench-schema check-rules chaos soak sim-small sim-default sim-pack sim-trace sim-bench quotas-example clean

run: ## start the service on the embedded default (http://localhost:8080)
	$(GO) run ./cmd/flowguard serve

build: ## bin/flowguard, stamped with VERSION
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/flowguard ./cmd/flowguard

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

bench: bench-go bench-wheel bench-load bench-cost bench-mem bench-schema ## Go benchmarks, the wheel bandit table, the HTTP load figures, CPU cost per decision, memory per key, schema v2 against v1

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

bench-wheel: ## the wheel bandit of Riquelme et al. 2018: regret of LinTS, NIG, ε-greedy, Uniform = 100
	$(GO) run ./cmd/flowguard sim wheel --steps 2000 --runs 20

bench-load: ## throughput and fixed-rate p99, as ratios to a bare fasthttp baseline
	@scripts/loadbench.sh

bench-mem: ## memory per key from the process at 1M keys (MEM_KEYS), and a 2M-key burst through the decision log (BURST_KEYS)
	@scripts/memkeys.sh

bench-schema: ## feature schema v2 against v1 (its last commit, in a git worktree), in one run: stage 2 and the decide path, v2/v1
	@scripts/benchschema.sh

bench-cost: ## CPU-seconds per 1M decisions, embedded and Redis mode, in $ per request at $0.04/vCPU-hour (COST_VCPU_HOUR)
	@scripts/cost.sh

check-rules: ## promtool check + unit tests of the Prometheus alert rules (also run by make test: serving/ops_rules_test.go)
	promtool check rules deploy/prometheus/flowguard-alerts.yml
	promtool test rules deploy/prometheus/flowguard-alerts_test.yml

chaos: ## fault and load harness: 3 regions × 2 serve, learn, 3 redis-server, kfake; kills and restores each (≈ 4 min)
	$(GO) run ./internal/chaos -fault $${CHAOS_FAULT:-20s} -settle $${CHAOS_SETTLE:-10s} -v

soak: ## fixed rate for SOAK_DURATION (30m), RSS and heap every minute, verdict on memory flatness
	SOAK_DURATION=$${SOAK_DURATION:-30m} scripts/soak.sh

sim-small: ## the small scenario, every policy (a few seconds)
	$(GO) run ./cmd/flowguard sim --scenario examples/scenarios/small.yaml --out out/sim-small

sim-default: ## the default (DevFlow-like) scenario, every policy: about 2.5 minutes on 2 cores
	$(GO) run ./cmd/flowguard sim --scenario examples/scenarios/default.yaml --seed 1 --out out/sim-default

sim-pack: ## the scenario pack (examples/scenarios/pack) × seeds 1..3, every policy: one table with 95% intervals in out/sim-pack/pack.md
	$(GO) run ./cmd/flowguard sim --scenario examples/scenarios/pack --seeds $${SIM_SEEDS:-1..3} --out out/sim-pack

sim-trace: ## replay the 2015 Apache access log (examples/data) through the pipeline
	$(GO) run ./cmd/flowguard sim --trace examples/data/apache_access_2015.log --out out/sim-trace

quotas-example: build ## fit static quotas on the 2015 Apache access log into out/quotas.yaml (ignored), then backtest them
	@mkdir -p out
	bin/flowguard quotas fit --access-log examples/data/apache_access_2015.log \
		--until 2015-05-18 --lookback 2d --out out/quotas.yaml
	@# Exit status 3 is the backtest's ALERT lines, which this log raises (docs/quotas.md).
	bin/flowguard quotas backtest --access-log examples/data/apache_access_2015.log \
		--train-until 2015-05-18 --test-until 2015-05-20 --lookback 2d; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 3 ]

sim-bench: ## simulator throughput in key-epochs/s; SIM_KEYS=1200000 is the issue's full target (346M key-epochs)
	FLOWGUARD_SIM_BENCH_KEYS=$${SIM_KEYS:-200000} $(GO) test -run '^$$' -bench BenchmarkSimKeyEpochs -benchtime 1x -timeout 60m ./sim/

clean:
	rm -rf bin out
