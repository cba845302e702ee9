# Every target sets itself up: .venv with pinned packages and the MicroPython unix port,
# and the Debian mosquitto broker (and PostgreSQL for the host tests) where it is needed.
PY := .venv/bin/python
MP := .venv/bin/micropython
export PYTHONPATH := $(CURDIR)
export MICROPYPATH := $(CURDIR):.frozen

.PHONY: setup test lint unit-mp sim bench bench-drain bench-heap bench-fleet bench-vip test-cluster \
	certs clean

setup:
	@scripts/setup-venv

test: setup
	@scripts/ensure-mosquitto
	@scripts/ensure-postgresql || echo "(no PostgreSQL: the host tests on PostgreSQL are skipped)"
	@scripts/ensure-browser || echo "(no chromium: the dashboard's browser test is skipped)"
	$(PY) -m ruff check .
	$(PY) -m pytest

# Only the both-runtime tests, on MicroPython, without pytest (fast feedback).
unit-mp: setup
	$(MP) -X heapsize=8M tests/mp_run.py

lint: setup
	$(PY) -m ruff check .

sim: setup
	@scripts/ensure-mosquitto || echo "(no mosquitto: the simulator falls back to the amqtt broker)"
	$(PY) -m host_sim.sim $(SIM_ARGS)

# Coupon checks, the queue and the drain (docs/bench.md, rewritten in place), then the VIP
# scheduler over 100 000 memberships on SQLite (JSON lines; bench-heap and bench-fleet apart).
bench: setup
	@scripts/ensure-mosquitto
	$(PY) -m tests.bench
	$(PY) -m tests.bench_vip

# 5 000 queued charges drained, CPython then MicroPython terminal, against raw paho QoS 1 through
# the same broker; last line {"drain_per_s", "raw_per_s", "ratio"} (CPython's).
bench-drain: setup
	@scripts/ensure-mosquitto
	$(PY) -m tests.bench_drain --runtime both --raw-reps 3

# The smallest MicroPython data heap a terminal with 2 000 pending lives its day in, per step;
# last line {"min_heap_kib", "pending", "whole_heap_kib", ...}. BENCH_HEAP_ARGS=--romfs: the
# code runs from a ROMFS image and the figure is all the RAM beyond it (tests/bench_heap.py).
bench-heap: setup
	@scripts/ensure-mosquitto
	$(PY) -m tests.bench_heap $(BENCH_HEAP_ARGS)

# 1 000 terminals against host workers on PostgreSQL: one JSON line (docs/scale.md).
bench-fleet: setup
	@scripts/ensure-mosquitto
	@scripts/ensure-postgresql
	@$(PY) -m tests.bench_fleet $(FLEET_ARGS)

# The fleet tests with RabbitMQ (MQTT plugin) as the broker and the workers on its queue.
test-cluster: setup
	@scripts/ensure-postgresql
	@scripts/ensure-rabbitmq
	FLEET_BROKER=rabbitmq $(PY) -m pytest tests/integration/test_fleet.py

# The VIP renewal scheduler over 100 000 memberships (SQLite; BENCH_VIP_ARGS="--db URL" for
# PostgreSQL): one JSON line per figure (docs/bench.md).
bench-vip: setup
	$(PY) -m tests.bench_vip $(BENCH_VIP_ARGS)

certs: setup
	@scripts/make-certs

clean:
	rm -rf var .hypothesis .ruff_cache
