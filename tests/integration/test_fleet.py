"""Several host workers (issue 15): the shared subscription, exactly once with two workers and a
worker SIGKILLed mid-drain on PostgreSQL, and a small fleet scenario on both engines. Terminals
are real device agents in shard processes (host_sim/fleet); workers are `python -m host_sim
serve --worker N` processes; the broker is real mosquitto, or with FLEET_BROKER=rabbitmq
(`make test-cluster`) a RabbitMQ node whose MQTT plugin the terminals use while the workers
consume a durable queue over AMQP (host_sim/amqp_inbound.py).
"""
import os
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from host_sim.fleet.run import Fleet, host_storms, scenario
from host_sim.store import open_store

RABBIT = os.environ.get("FLEET_BROKER") == "rabbitmq"


def _count_charges(db):
    store = open_store(db)
    try:
        with store.read() as tx:
            return tx.execute("SELECT COUNT(*) FROM charges").fetchone()[0]
    finally:
        store.close()


def _wait_hellos(db, n, timeout=15.0):
    """Terminals whose hello the host recorded, once all n are (or the timeout)."""
    store = open_store(db)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with store.read() as tx:
                got = tx.execute("SELECT COUNT(*) FROM devices WHERE last_hello IS NOT NULL"
                                 ).fetchone()[0]
            if got >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.1)
    finally:
        store.close()


@pytest.mark.skipif(RABBIT, reason="mosquitto's shared subscriptions (RabbitMQ: a queue)")
def test_shared_subscription_by_topic_name_for_311_clients(broker):
    """mosquitto 2.0 shares `$share/GROUP/filter` between MQTT 3.1.1 clients by its name: each
    message goes to one member of the group."""
    got = {"a": [], "b": []}
    subscribed = threading.Semaphore(0)
    clients = []
    for name in got:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="share-" + name,
                        protocol=mqtt.MQTTv311)
        c.on_message = lambda cl, ud, msg, name=name: got[name].append(msg.payload)
        c.on_subscribe = lambda *a: subscribed.release()
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        c.subscribe("$share/host/share-test/dev/+/up/#", qos=1)
        clients.append(c)
    for _ in clients:
        assert subscribed.acquire(timeout=5)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="share-pub",
                      protocol=mqtt.MQTTv311)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        for i in range(40):
            pub.publish("share-test/dev/T%d/up/charge" % (i % 4), b"%d" % i, qos=1)
        deadline = time.monotonic() + 10
        while len(got["a"]) + len(got["b"]) < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        for c in clients + [pub]:
            c.loop_stop()
            c.disconnect()
    everything = sorted(got["a"] + got["b"], key=int)
    assert everything == [b"%d" % i for i in range(40)]  # each once
    assert got["a"] and got["b"]  # shared, not copied


class _Mosquitto:
    def __init__(self, broker):
        self.port = broker.port
        self.worker_args = ()


class _Rabbit:
    def __init__(self, node):
        self.node = node
        self.port = node.mqtt_port
        self.worker_args = ("--amqp", node.amqp_url)


@pytest.fixture
def fleet_broker(request):
    """The broker the fleet tests run on: mosquitto, or RabbitMQ under make test-cluster."""
    if not RABBIT:
        yield _Mosquitto(request.getfixturevalue("fresh_broker"))
        return
    from tests.support.rabbitmq import RabbitMQ, missing_reason

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    node = RabbitMQ()
    try:
        node.start()
        yield _Rabbit(node)
    finally:
        node.close()


@pytest.fixture
def pg_db(pg_server):
    return pg_server.new_database("fleet")


def test_two_workers_exactly_once_with_a_worker_killed_mid_drain(fleet_broker, pg_db, tmp_path):
    """20 terminals come back with 6 sales each; two workers drain them; worker 2 is SIGKILLed
    with part of the backlog handled and restarted (same client id: the broker hands it what it
    held); every sale is at the host exactly once."""
    fleet = Fleet(pg_db, fleet_broker.port, 20, shards=2, work=str(tmp_path / "fleet"),
                  coupons=20, worker_args=fleet_broker.worker_args)
    try:
        fleet.prepare()
        fleet.start_workers(2)  # before the terminals, as a shop runs them
        fleet.start_shards()
        assert sum(e["online"] for e in fleet.ask("wait_online", wait=90, timeout=60)) == 20
        # every terminal's first hello reached a worker (none lost to an empty share group)
        assert _wait_hellos(pg_db, 20) == 20
        fleet.ask("cut", group="all")
        total = sum(e["sold"] for e in fleet.ask("burst", per_terminal=6))
        assert total == 120
        fleet.ask("restore", group="all")
        deadline = time.monotonic() + 60
        while _count_charges(pg_db) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        fleet.kill_worker(2)
        at_kill = _count_charges(pg_db)
        time.sleep(1.0)
        fleet.start_worker(2)
        done = fleet.ask("wait_drained", wait=120, timeout=100)
        assert sum(e["pending"] for e in done) == 0
        reports = fleet.ask("report", wait=60)
        fleet.stop_workers()
        check = fleet.verify(reports)
    finally:
        fleet.close()
    assert 20 <= at_kill < total  # killed mid-drain
    assert check["committed"] == total and check["host_charges"] == total
    assert check["lost"] == 0 and check["duplicated"] == 0 and check["unresolved"] == 0
    assert check["fresh_applies_logged"] == total  # the workers' own account: once each


def test_small_fleet_scenario_on_both_engines(fleet_broker, host_db, tmp_path):
    """12 terminals, two workers on one database (PostgreSQL, or one SQLite file shared by two
    processes): steady sales with an outage, then a reconnect storm with a backlog."""
    fleet = Fleet(host_db, fleet_broker.port, 12, shards=2, work=str(tmp_path / "fleet"),
                  coupons=10, outage_share=0.25, worker_args=fleet_broker.worker_args)
    try:
        fleet.prepare()
        report = scenario(fleet, rate=6.0, duration=4.5, burst=3, scale=(2,), workers=2)
    finally:
        fleet.close()
    check = report["check"]
    assert check["lost"] == 0 and check["duplicated"] == 0 and check["unresolved"] == 0
    assert check["committed"] == report["steady_sales"] + 36
    assert report["storms"]["2"]["pending"] == 0
    assert report["latency_ms"]["steady/online"]["n"] > 0


def test_a_terminal_with_an_older_list_gets_it_again(fleet_broker, host_db, tmp_path):
    """A broker whose retained store lacks the trust list (RabbitMQ keeps retained messages per
    node; here the retained copy is cleared): the hellos that report an older trust_ver make the
    host publish it again, and every terminal installs it."""
    fleet = Fleet(host_db, fleet_broker.port, 6, shards=1, work=str(tmp_path / "fleet"),
                  coupons=1, worker_args=fleet_broker.worker_args)
    try:
        fleet.prepare()
        fleet.start_workers(1)  # worker 1 publishes the trust list, retained
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="clear-retained",
                        protocol=mqtt.MQTTv311)
        c.connect("127.0.0.1", fleet_broker.port)
        c.loop_start()
        c.publish("pos/v1/fleet/down/trustlist", b"", qos=1, retain=True).wait_for_publish(5)
        c.loop_stop()
        c.disconnect()
        fleet.start_shards()
        assert sum(e["online"] for e in fleet.ask("wait_online", wait=60, timeout=45)) == 6
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            [rep] = fleet.ask("report", wait=30)
            vers = {t["trust_ver"] for t in rep["terminals"].values()}
            if vers == {1}:
                break
            time.sleep(0.2)
    finally:
        fleet.close()
    assert vers == {1}


def test_host_only_storms_apply_every_charge_once_with_one_and_two_workers(fleet_broker, host_db,
                                                                           tmp_path):
    """The bench's host-only storm (host_sim/fleet/storm.py): charges sealed beforehand for 12
    more registered terminals, published by one client as fast as the broker takes them; with
    one worker, then two, every charge is at the host once and no message was refused."""
    fleet = Fleet(host_db, fleet_broker.port, 0, work=str(tmp_path / "fleet"),
                  worker_args=fleet_broker.worker_args)
    try:
        fleet.prepare()
        storms = host_storms(fleet, (1, 2), devices=12, per_device=10, log=lambda line: None)
    finally:
        fleet.close()
    assert sorted(storms) == ["1", "2"]
    for storm in storms.values():
        assert storm["charges"] == 120 and storm["charges_per_s"] > 0
        assert storm["lost"] == 0 and storm["duplicated"] == 0 and storm["drops"] == {}
    assert _count_charges(host_db) == 240
