# `python -m host_sim config`: host-managed settings to terminals through the host outbox.
import json

from host_sim import service
from host_sim.__main__ import main
from host_sim.registry import Registry
from host_sim.store import open_store


def _db(tmp_path):
    db = str(tmp_path / "host.db")
    reg = Registry(db)
    reg.register("T-1", "S-001", "M-ACME")
    reg.register("T-2", "S-001", "M-ACME")
    reg.register("T-9", "S-009", "M-ACME")
    reg.close()
    return db


def _outbox(db):
    store = open_store(db)
    try:
        with store.transaction() as tx:
            return service.take_outbox(tx)
    finally:
        store.close()


def test_config_reaches_the_chosen_terminals(tmp_path, capsys):
    db = _db(tmp_path)
    assert main(["config", "--db", db, "--store", "S-001", '{"tier_disc": {"gold": 10}}']) == 0
    assert json.loads(capsys.readouterr().out)["devices"] == ["T-1", "T-2"]
    assert _outbox(db) == [("T-1", "config", {"tier_disc": {"gold": 10}}),
                           ("T-2", "config", {"tier_disc": {"gold": 10}})]
    assert main(["config", "--db", db, "--device", "T-9", '{"bookings": false}']) == 0
    assert _outbox(db) == [("T-9", "config", {"bookings": False})]


def test_config_refuses_what_terminals_cannot_keep(tmp_path, capsys):
    db = _db(tmp_path)
    assert main(["config", "--db", db, '{"colour": "red"}']) == 1
    assert main(["config", "--db", db, '{"status_interval_s": 1}']) == 1
    assert main(["config", "--db", db, "--device", "T-404", '{"bookings": true}']) == 1
    assert main(["config", "--db", db, "not json"]) == 1
    assert _outbox(db) == []
