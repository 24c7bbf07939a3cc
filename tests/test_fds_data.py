"""FDS data: the shipped banks load, follow the SOP and the difficulty weights, and bad files fail clearly."""

from __future__ import annotations

import json

import pytest

from interactcs_gym.fds import generate_data
from interactcs_gym.fds.datafiles import DataFileError, data_path
from interactcs_gym.fds.personas import cooperation_level, load_personas
from interactcs_gym.fds.scenarios import load_orders
from interactcs_gym.fds.sop import sop_remedy
from interactcs_gym.fds.splits import DIFFICULTY_WEIGHTS, level_counts, load_split


def test_shipped_files_are_exactly_what_the_generator_writes():
    for name, text in generate_data.generate().items():
        assert data_path(name).read_text(encoding="utf-8") == text, f"{name} is stale: rerun generate_data"


def test_banks_are_large_and_varied():
    orders, personas = load_orders(), load_personas()
    assert len(orders) == 360 and len(personas) == 500
    assert {o.dispute.type for o in orders} == {"late_delivery", "damaged", "missing_item", "wrong_item",
                                                 "cold_food", "quality", "rider_conduct"}
    assert {o.responsible for o in orders} == {"merchant", "rider", "platform", "user", "unclear"}
    assert {o.fair_remedy.kind for o in orders} == {"voucher", "refund_item", "feedback", "manual_review"}
    assert {p.demand.type for p in personas} == {"rigid_pursuit", "preference_learning", "incentive_open",
                                                  "feedback_oriented"}
    assert [sum(p.cooperation_level == lv for p in personas) for lv in range(1, 6)] == [100] * 5
    assert len({o.merchant for o in orders}) >= 25


@pytest.mark.parametrize("difficulty", ["hard", "easy"])
def test_splits_follow_the_weights_exactly_and_test_users_are_unseen(difficulty):
    test, train = load_split(difficulty, "test"), load_split(difficulty, "train")
    assert len(test) == 80 and len(train) == 2000
    assert [sum(u.persona.cooperation_level == lv for u in test) for lv in range(1, 6)] == \
        [round(w * 80) for w in DIFFICULTY_WEIGHTS[difficulty]]
    assert [sum(u.persona.cooperation_level == lv for u in train) for lv in range(1, 6)] == \
        list(level_counts(difficulty, 2000))
    train_p = {u.persona.persona_id for d in ("hard", "easy") for u in load_split(d, "train")}
    train_o = {u.order.order_id for d in ("hard", "easy") for u in load_split(d, "train")}
    assert not {u.persona.persona_id for u in test} & train_p
    assert not {u.order.order_id for u in test} & train_o
    assert len({u.persona.persona_id for u in test}) == 80       # 80 distinct users
    assert [sum(u.persona.demand.type == d for u in test) for d in
            ("rigid_pursuit", "preference_learning", "incentive_open", "feedback_oriented")] == [20] * 4


def test_level_counts_by_hand():
    assert level_counts("hard", 80) == (28, 24, 16, 8, 4)
    assert level_counts("easy", 80) == (4, 8, 16, 24, 28)
    assert level_counts("hard", 2000) == (700, 600, 400, 200, 100)


def test_cooperation_level_formula_by_hand():
    # s = politeness + disclosure + problem_solving + affective; cuts 3 / 5 / 6 / 8
    assert cooperation_level(0, 1, 1, 1) == 1   # s = 3
    assert cooperation_level(1, 1, 1, 1) == 2   # s = 4
    assert cooperation_level(2, 1, 1, 1) == 2   # s = 5
    assert cooperation_level(3, 1, 1, 1) == 3   # s = 6
    assert cooperation_level(3, 3, 1, 1) == 4   # s = 8
    assert cooperation_level(3, 3, 3, 0) == 5   # s = 9


@pytest.mark.parametrize("args, want", [
    (("late_delivery", "rider", "none", 35, False), "voucher"),
    (("late_delivery", "rider", "none", 19, False), "feedback"),
    (("late_delivery", "user", "none", 40, False), "feedback"),
    (("cold_food", "merchant", "none", 0, False), "manual_review"),
    (("cold_food", "merchant", "frequent", 0, True), "manual_review"),
    (("missing_item", "merchant", "occasional", 0, True), "refund_item"),
    (("wrong_item", "user", "none", 0, True), "feedback"),
    (("quality", "unclear", "none", 0, True), "feedback"),
    (("quality", "merchant", "none", 0, True), "voucher"),
    (("rider_conduct", "rider", "none", 0, False), "voucher"),
    (("rider_conduct", "unclear", "none", 0, False), "manual_review"),
])
def test_sop_remedy_rules(args, want):
    d, r, h, late, photo = args
    assert sop_remedy(d, r, h, late, photo_received=photo) == want


def _first_order() -> dict:
    return json.loads(data_path("orders.json").read_text(encoding="utf-8"))[0]


def test_bad_order_file_names_file_record_and_field(tmp_path):
    record = _first_order()
    record["items"][0]["price"] = -1
    path = tmp_path / "orders.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(DataFileError) as err:
        load_orders(path)
    msg = str(err.value)
    assert str(path) in msg and "record 0" in msg and record["order_id"] in msg and "items.0.price" in msg


def test_order_whose_remedy_contradicts_the_sop_is_rejected(tmp_path):
    record = _first_order()
    record["fair_remedy"]["kind"] = "voucher" if record["fair_remedy"]["kind"] != "voucher" else "feedback"
    path = tmp_path / "orders.yaml"
    path.write_text(json.dumps([record]))  # JSON is valid YAML
    with pytest.raises(DataFileError, match="contradicts the SOP"):
        load_orders(path)


def test_persona_with_a_wrong_cooperation_level_is_rejected(tmp_path):
    record = json.loads(data_path("personas.json").read_text(encoding="utf-8"))[0]
    record["cooperation_level"] = 5 if record["cooperation_level"] != 5 else 1
    path = tmp_path / "personas.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(DataFileError, match="cooperation_level"):
        load_personas(path)


def test_unreadable_and_non_json_files_fail_clearly(tmp_path):
    with pytest.raises(DataFileError, match="cannot read"):
        load_orders(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataFileError, match="not valid JSON"):
        load_orders(bad)
