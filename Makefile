# imqtt: build, run and test. `make test` is the command CI runs (.ci/run).

GO       ?= go
BIN      ?= bin/imqtt
FUZZTIME ?= 60s
# Go minimises every new interesting input for up to 60 s by default, during
# which a target may show 0 execs/s for minutes; 5 s keeps the run fuzzing.
FUZZFLAGS ?= -fuzzminimizetime 5s
# Extra arguments for `make run`, e.g. make run ARGS='--config testdata/imqtt.example.yaml'
ARGS     ?=

.PHONY: all build run test fmt-check vet fuzz bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/imqtt

run:
	$(GO) run ./cmd/imqtt serve $(ARGS)

# gofmt check, go vet, then every test under the race detector.
test: fmt-check vet
	$(GO) test -race ./...

fmt-check:
	@out="$$(gofmt -l .)"; \
	if [ -n "$$out" ]; then echo "gofmt: these files need formatting (run gofmt -w):"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Runs every Fuzz* target in the repository for FUZZTIME each. Targets are
# found with grep, so a new one is picked up without editing this file.
# Go 1.26's fuzz coordinator can end a duration-bounded run with a bare
# "context deadline exceeded" and no failing input (go.dev/issue/75804,
# fixed in Go 1.27): that is reported and the loop goes on; a run that wrote
# a failing input stops it.
fuzz:
	@found=0; log=$$(mktemp); \
	for f in $$(grep -rlE --include='*_test.go' --exclude-dir=testdata --exclude-dir=.git '^func Fuzz[A-Za-z0-9_]*\(' .); do \
		dir=$$(dirname "$$f"); \
		for name in $$(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' "$$f"); do \
			found=1; \
			echo "== $$name ($$dir, $(FUZZTIME))"; \
			if ! $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $(FUZZFLAGS) "$$dir" 2>&1 | tee "$$log"; then :; fi; \
			if grep -qE '^(--- )?FAIL' "$$log"; then \
				if grep -q 'context deadline exceeded' "$$log" && ! grep -q 'Failing input written' "$$log"; then \
					echo "== $$name: coordinator deadline at the end of the run, no failing input (go.dev/issue/75804)"; \
				else rm -f "$$log"; exit 1; fi; \
			fi; \
		done; \
	done; \
	rm -f "$$log"; \
	if [ $$found = 0 ]; then echo "no Fuzz targets found"; fi

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin

# The same bounded loads against mosquitto and imqtt on loopback, then a ratio
# table (bench/compare.sh; installs mosquitto if missing; under 10 minutes).
# QUICK=1 runs only the throughput and latency rows. See docs/PERFORMANCE.md.
.PHONY: bench-compare
bench-compare:
	bench/compare.sh

# The kill -9 crash loop with 20 cycles under the race detector (issue 7):
# every acknowledged message must survive. `go test` runs 5 cycles. The flag
# goes after -args: go test would take an unknown flag before the package for
# the end of its own arguments and test the current directory instead.
.PHONY: crash-loop
crash-loop:
	$(GO) test -race -run TestCrash ./cmd/imqtt/ -args -crash.cycles=20
