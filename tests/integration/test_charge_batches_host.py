# The host's side of charges in batches (protocol/batch_messages.py): `caps` only for a hello
# that offers batches, each item of `charges` decided as its own `charge` (same cid, same
# result, whatever form it came in), a bad item dropped alone, the results in one message in
# the items' order, withheld ones left out. Real mosquitto, fake terminals (test_host.py's).
import pytest

from tests.integration.test_host import HELLO, WAIT, charge, drops_total, host_rig


@pytest.fixture
def shop(broker, host_db):
    yield from host_rig(broker, host_db)


def test_caps_answer_only_a_hello_that_offers_batches(shop):
    a, b = shop.terminal("T-A"), shop.terminal("T-B")
    a.send("hello", HELLO)
    b.send("hello", dict(HELLO, batch=500))
    [(mtype, caps)] = b.wait(1)
    assert mtype == "caps" and caps["body"] == {"batch": 32}
    b.send("hello", dict(HELLO, batch=8))
    assert b.wait(2)[1][1]["body"] == {"batch": 8}
    # SPEC's hello (and a batch of one) gets nothing the terminal would not know
    a.send("hello", dict(HELLO, batch=1))
    shop.host.send("T-A", "config", {"status_interval_s": 30})
    assert [m for m, _ in a.wait(1)] == ["config"]
    assert a.errors == [] and b.errors == []


def test_each_item_is_a_charge_and_the_results_come_back_together(shop):
    a, b = shop.terminal("T-A"), shop.terminal("T-B")
    host = shop.host
    a.send("charge", charge(1, amt=500))
    [(_, single)] = a.wait(1)
    bad = dict(charge(3), amt=99999)  # amt above gross
    a.send("charges", {"items": [charge(1, amt=500), charge(2, cpn=[b"\xc2"]), bad,
                                 charge(4, amt=4000)]})
    mtype, res = a.wait(2)[1]
    assert mtype == "charge_results"
    items = res["body"]["items"]
    assert [r["cid"][0] for r in items] == [1, 2, 4]
    assert items[0] == single["body"]  # the cid answered before: its original result
    assert items[1]["cpn"] == [{"cti": b"\xc2", "st": "ok"}] and items[2]["st"] == "approved"
    assert drops_total(host, 1)
    assert host.metrics()["drops"] == {"T-A": {"bad_body": 1}}
    # the store's other terminal learns of the coupon once
    [(mtype, red)] = b.wait(1)
    assert mtype == "redeemed" and red["body"]["cti"] == [b"\xc2"]
    # the batch again (a retry after a lost answer): the same results, nothing applied twice
    a.send("charges", {"items": [charge(2, cpn=[b"\xc2"]), charge(4, amt=4000)]})
    assert a.wait(3)[2][1]["body"]["items"] == items[1:]
    m = host.metrics()
    assert m["processed"] == {"charge": 1, "charges": 2}
    assert m["charges"]["approved"] == 3 and m["charges"]["repeats"] == 3
    rep = host.charges.report()
    assert rep["approved"] == {"count": 3, "amount": {"CNY": 5500}}
    assert rep["coupons_redeemed"] == 1
    # every result counts in the latency, one per item
    assert host.wait_for(lambda: host.metrics()["latency_ms"]["count"] == 6, WAIT)


def test_an_outage_withholds_a_batchs_results(shop):
    a = shop.terminal("T-A")
    host = shop.host
    host.outage = True
    a.send("charges", {"items": [charge(5), charge(6)]})
    assert host.wait_for(lambda: host.metrics()["charges"].get("withheld") == 2, WAIT)
    host.outage = False
    a.send("charges", {"items": [charge(6), charge(5)]})
    [(mtype, res)] = a.wait(1)
    assert mtype == "charge_results"
    assert [(r["cid"][0], r["st"]) for r in res["body"]["items"]] == [(6, "approved"),
                                                                       (5, "approved")]
    assert host.charges.report()["approved"]["count"] == 2
