"""Generate the FDS data files deterministically: orders, personas and splits.

    python -m interactcs_gym.fds.generate_data [--out interactcs_gym/fds/data]

The shipped ``data/orders.json``, ``data/personas.json`` and ``data/splits.json`` are exactly what
this script writes (a test regenerates them and compares byte for byte), so the bank can be
audited and extended here. Everything is drawn from one ``numpy`` generator seeded with
:data:`SEED`. Merchants and menus are invented; the dispute mechanics follow SPEC 4.1 and the
remedy is always :func:`interactcs_gym.fds.sop.sop_remedy`.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from interactcs_gym.fds.personas import DEMAND_TYPES, cooperation_level
from interactcs_gym.fds.sop import (DISPUTE_TYPES, LATE_THRESHOLD_MIN, is_verified, needs_photo,
                                    sop_remedy)
from interactcs_gym.fds.splits import DIFFICULTIES, TEST_USERS, TRAIN_USERS, level_counts

SEED = 20260226
N_ORDERS = 360          # the first 2 x 80 are the hard and easy test orders, the rest train orders
PERSONAS_PER_LEVEL = 100

# name | dish:price; dish:price; ...
_MENUS = """\
Bart's Diner|Mix French Toast:9.50;Pancake Stack:8.00;Club Sandwich:10.50;Cheese Omelette:7.50;Hash Browns:3.50;Milkshake:4.50
Koyikodan|Puttu:6.00;Egg Curry:8.50;Appam:5.50;Kerala Parotta:3.00;Fish Moilee:12.00;Payasam:4.00
Shawarma Classic|Chicken Shawarma:7.50;Beef Shawarma:8.50;Falafel Wrap:6.50;Garlic Fries:3.50;Hummus Plate:5.00;Mint Lemonade:3.00
4 Twins|Crepe Suzette:7.00;Nutella Crepe:6.50;Chocolate Pudding:4.50;Ham and Cheese Galette:9.00;Fruit Salad:5.00;Iced Latte:4.00
Golden Wok|Kung Pao Chicken:11.00;Fried Rice:7.00;Spring Rolls:4.50;Mapo Tofu:9.50;Sweet and Sour Pork:11.50;Wonton Soup:6.00
Pasta Fresca|Spaghetti Carbonara:12.50;Penne Arrabbiata:10.50;Lasagna:13.00;Garlic Bread:4.00;Tiramisu:6.00;Minestrone:6.50
Sakura Sushi|Salmon Nigiri Set:14.00;California Roll:9.00;Miso Soup:3.00;Chicken Katsu Bento:13.50;Edamame:4.00;Tuna Sashimi:15.00
Taco Loco|Carnitas Tacos:9.00;Chicken Burrito:10.00;Nachos Grande:8.50;Guacamole:4.50;Churros:5.00;Horchata:3.50
Burger Barn|Classic Cheeseburger:9.50;Bacon Double Burger:12.00;Veggie Burger:9.00;Onion Rings:4.00;Sweet Potato Fries:4.50;Vanilla Shake:5.00
Green Bowl|Quinoa Power Bowl:11.50;Caesar Salad:9.00;Avocado Toast:8.00;Acai Bowl:9.50;Green Smoothie:6.00;Lentil Soup:6.50
Curry House|Butter Chicken:12.50;Lamb Rogan Josh:14.00;Vegetable Biryani:11.00;Garlic Naan:3.00;Samosas:5.00;Mango Lassi:4.00
Pho Saigon|Beef Pho:11.00;Chicken Pho:10.50;Banh Mi:7.50;Fresh Rolls:6.00;Bun Cha:11.50;Vietnamese Coffee:4.00
Pizza Napoli|Margherita Pizza:11.00;Pepperoni Pizza:13.00;Quattro Formaggi:14.00;Calzone:12.50;Caprese Salad:7.50;Panna Cotta:5.50
Seoul Kitchen|Bibimbap:12.00;Korean Fried Chicken:14.50;Kimchi Pancake:8.00;Japchae:10.00;Tteokbokki:9.00;Bulgogi Rice Bowl:12.50
Falafel King|Falafel Plate:9.00;Halloumi Wrap:8.50;Tabbouleh:5.50;Baba Ganoush:5.00;Shakshuka:10.00;Baklava:4.50
Dim Sum Palace|Har Gow:6.50;Siu Mai:6.00;Char Siu Bao:5.50;Cheung Fun:7.00;Egg Tarts:4.50;Turnip Cake:5.00
Smokey's BBQ|Pulled Pork Sandwich:11.00;Beef Brisket Plate:16.00;Smoked Wings:10.00;Mac and Cheese:5.50;Coleslaw:3.00;Cornbread:3.50
Bagel Corner|Lox Bagel:9.50;Egg and Cheese Bagel:6.50;Cream Cheese Bagel:4.00;Tuna Melt:8.50;Blueberry Muffin:3.50;Cold Brew:4.50
Noodle Bar|Dan Dan Noodles:10.50;Beef Chow Fun:12.00;Pad Thai:11.00;Laksa:12.50;Sesame Cold Noodles:9.00;Thai Iced Tea:4.00
Mama's Kitchen|Meatloaf Dinner:13.00;Chicken Pot Pie:12.00;Mashed Potatoes:4.00;Fried Chicken Basket:12.50;Apple Pie:5.00;Sweet Tea:3.00
Athens Grill|Chicken Souvlaki:11.50;Lamb Gyro:10.50;Greek Salad:8.50;Spanakopita:6.50;Moussaka:13.50;Tzatziki:3.50
Bombay Spice|Chicken Tikka Masala:13.00;Palak Paneer:11.50;Chana Masala:10.00;Onion Bhaji:5.00;Lamb Samosa:6.00;Gulab Jamun:4.50
Poke Paradise|Salmon Poke Bowl:14.00;Tuna Poke Bowl:15.00;Tofu Poke Bowl:12.00;Seaweed Salad:4.50;Spicy Mayo Fries:5.00;Coconut Water:3.50
Bangkok Street|Green Curry:12.00;Tom Yum Soup:9.50;Pad See Ew:11.00;Mango Sticky Rice:6.00;Satay Skewers:8.00;Papaya Salad:7.50
Le Petit Bistro|Croque Monsieur:10.00;French Onion Soup:8.50;Quiche Lorraine:9.50;Steak Frites:19.00;Creme Brulee:6.50;Croissant:3.50
Chicken Shack|Spicy Chicken Sandwich:9.50;Chicken Tenders:8.50;Waffle Fries:4.00;Honey Biscuits:3.50;Buffalo Wings:10.50;Lemonade:3.00
Dumpling Den|Pork Dumplings:9.00;Chive Dumplings:8.50;Soup Dumplings:11.00;Scallion Pancake:6.00;Hot and Sour Soup:6.50;Sesame Balls:4.50
Ramen Ichi|Tonkotsu Ramen:13.50;Shoyu Ramen:12.50;Spicy Miso Ramen:13.50;Gyoza:6.00;Karaage:7.50;Matcha Ice Cream:4.50
Casa Paella|Seafood Paella:18.00;Chicken Paella:15.00;Patatas Bravas:6.00;Gambas al Ajillo:11.00;Croquetas:7.00;Sangria Soda:4.00
Smoothie Lab|Berry Blast Smoothie:6.50;Protein Shake:7.50;Chicken Wrap:8.50;Granola Bowl:8.00;Energy Bites:4.00;Veggie Soup:6.00"""

_RESPONSIBLE_MIX: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "late_delivery": (("rider", "merchant", "platform", "user"), (0.35, 0.25, 0.2, 0.2)),
    "damaged": (("rider", "merchant", "user"), (0.5, 0.3, 0.2)),
    "missing_item": (("merchant", "rider", "unclear"), (0.7, 0.1, 0.2)),
    "wrong_item": (("merchant", "platform", "user"), (0.7, 0.1, 0.2)),
    "cold_food": (("rider", "merchant", "unclear"), (0.4, 0.3, 0.3)),
    "quality": (("merchant", "unclear"), (0.55, 0.45)),
    "rider_conduct": (("rider", "unclear"), (0.6, 0.4)),
}

_ACCOUNT = {
    "late_delivery": "The app promised {promised} but it only arrived at {actual}, {late} minutes late.",
    "damaged": "The {item} container was crushed and the sauce leaked all over the bag.",
    "missing_item": "The receipt lists the {item} but it was not in the bag.",
    "wrong_item": "I ordered the {item} but got a completely different dish.",
    "cold_food": "I opened it about {opened} minutes after it was delivered and the {item} was already cold.",
    "quality/merchant": "The {item} was undercooked in the middle, I could not eat it.",
    "quality/unclear": "The {item} tasted off, really bland and dry.",
    "rider_conduct": "The rider was rude to me and refused to bring the bag to my door.",
    "late_delivery/user": "I changed the delivery address after ordering, but it still took forever.",
    "damaged/user": "I may have tilted the bag on the stairs, but the packaging should hold up.",
    "wrong_item/user": "I picked the {item} in the app, but I am sure I wanted the other version.",
}
_PHOTO = {
    "damaged": "The {item} container is crushed and sauce has leaked over the bag.",
    "missing_item": "The receipt lists the {item}; the opened bag holds only the other items.",
    "wrong_item": "The box labelled {item} holds a different dish.",
    "cold_food": "The {item} looks flat and cold, with no steam and congealed sauce.",
    "quality/merchant": "The {item} is visibly raw in the middle.",
    "quality/unclear": "The {item} looks ordinary; nothing is visibly wrong with it.",
}
_IM = {
    "late_delivery/rider": [("rider", "Sorry, heavy traffic on my route, I am running late.")],
    "late_delivery/merchant": [("merchant", "Order not ready yet, we need about 20 more minutes."),
                               ("system", "Merchant marked the order ready {late} minutes after the estimate.")],
    "late_delivery/platform": [("system", "Dispatch reassigned the order to a new rider twice.")],
    "late_delivery/user": [("user", "Sorry, please bring it to my new address instead."),
                           ("system", "Delivery address changed by the user after pickup.")],
    "damaged/rider": [("rider", "Sorry, the bag tipped over on my bike.")],
    "damaged/merchant": [("rider", "The bag was already leaking when I picked it up.")],
    "damaged/user": [("system", "Rider's handover photo shows the bag sealed and upright.")],
    "missing_item/merchant": [("merchant", "We ran out of one dish and sent the rest of the order.")],
    "missing_item/rider": [("rider", "The bag came open at pickup, I closed it again.")],
    "missing_item/unclear": [],
    "wrong_item/merchant": [("merchant", "Sorry, two orders were swapped at the counter.")],
    "wrong_item/platform": [("system", "Menu sync error: item options were mislabelled in the app.")],
    "wrong_item/user": [("system", "Item option chosen by the user at checkout matches the dish sent.")],
    "cold_food/rider": [("rider", "Sorry, I had another drop-off first.")],
    "cold_food/merchant": [("system", "The order waited 25 minutes at the counter before pickup.")],
    "cold_food/unclear": [],
    "quality/merchant": [("system", "Three other complaints about this dish today.")],
    "quality/unclear": [],
    "rider_conduct/rider": [("rider", "Come down yourself, I am not climbing the stairs."),
                            ("rider", "Stop calling me.")],
    "rider_conduct/unclear": [("rider", "Delivered.")],
}
_RATIONALE = {
    "voucher": "Verified ({how}) and the {who} is responsible: one goodwill voucher.",
    "refund_item": "Verified ({how}) and the {who} is responsible: refund of the {item} ({amount:.2f}).",
    "feedback": "No compensation: {why}. Apologise, explain and record the feedback.",
    "manual_review": "Cannot be settled in chat: {why}. Submit for manual review.",
}


_DRINKS = ("Milkshake", "Lemonade", "Latte", "Lassi", "Coffee", "Tea", "Horchata", "Shake", "Smoothie",
           "Water", "Brew", "Soda")


def _is_drink(dish: str) -> bool:
    return dish.endswith(_DRINKS)


def _hhmm(m: int) -> str:
    return f"{m // 60:02d}:{m % 60:02d}"


def _menus() -> list[tuple[str, list[tuple[str, float]]]]:
    out = []
    for line in _MENUS.splitlines():
        name, dishes = line.split("|")
        out.append((name, [(d.split(":")[0], float(d.split(":")[1])) for d in dishes.split(";")]))
    return out


def _choice(rng: np.random.Generator, options: tuple | list, p: Any = None) -> Any:
    return options[int(rng.choice(len(options), p=p))]


def _rationale(kind: str, dtype: str, resp: str, history: str, late: int, photo: bool,
               item: str | None, amount: float | None) -> str:
    how = {"late_delivery": "delivery times", "rider_conduct": "IM log"}.get(dtype, "photo")
    if kind == "feedback":
        why = ("the user is responsible" if resp == "user" else
               f"late by {late} minutes, under the {LATE_THRESHOLD_MIN}-minute threshold"
               if dtype == "late_delivery" else "a matter of taste with no objective defect")
    elif is_verified(dtype, resp, late, photo):
        why = "the user has a frequent-complaint history"
    else:
        why = "the complaint cannot be verified (" + (
            "the user holds no photo" if needs_photo(dtype) else "the IM log does not show it") + ")"
    return _RATIONALE[kind].format(how=how, who=resp, item=item, amount=amount or 0.0, why=why)


def make_order(i: int, dtype: str, rng: np.random.Generator,
               menus: list[tuple[str, list[tuple[str, float]]]]) -> dict[str, Any]:
    """One order with dispute ``dtype``; every random draw comes from ``rng``."""
    merchant, menu = menus[int(rng.integers(len(menus)))]
    n_lines = int(rng.integers(1, 4))
    picks = sorted(int(k) for k in rng.choice(len(menu), size=n_lines, replace=False))
    items = [{"name": menu[k][0], "quantity": 1 if rng.random() < 0.8 else 2, "price": menu[k][1]}
             for k in picks]
    fee = float(_choice(rng, (0.0, 1.5, 2.0, 2.5, 3.0)))
    total = round(sum(it["quantity"] * it["price"] for it in items) + fee, 2)
    resp = _choice(rng, *_RESPONSIBLE_MIX[dtype])
    placed = int(rng.integers(11 * 12, 20 * 12)) * 5
    promised = placed + int(rng.integers(6, 11)) * 5
    if dtype == "late_delivery":
        late = int(rng.integers(25, 61)) if rng.random() < 0.65 else int(rng.integers(8, LATE_THRESHOLD_MIN))
    elif dtype == "cold_food":
        late = int(rng.integers(0, 19))
    else:
        late = int(rng.integers(-8, 13))
    actual = promised + late
    food = [it["name"] for it in items if not _is_drink(it["name"])]
    if not food:  # an order of drinks only gets a dish, so that every dispute type makes sense
        dish, price = next((d, p) for d, p in menu if not _is_drink(d))
        items.insert(0, {"name": dish, "quantity": 1, "price": price})
        total = round(total + price, 2)
        food = [dish]
    item = None if dtype in ("late_delivery", "rider_conduct") else food[int(rng.integers(len(food)))]
    key = f"{dtype}/{resp}"
    fill = {"item": item, "promised": _hhmm(promised), "actual": _hhmm(actual), "late": max(late, 0),
            "opened": int(rng.integers(5, 16))}
    account = _ACCOUNT.get(key) or _ACCOUNT[dtype]
    photo = needs_photo(dtype) and rng.random() < 0.75
    photo_desc = (_PHOTO.get(key) or _PHOTO[dtype]).format(**fill) if photo else None
    history = _choice(rng, ("none", "occasional", "frequent"), (0.7, 0.2, 0.1))
    pickup = min(placed + int(rng.integers(10, 25)), actual - 5)
    log = [{"time": _hhmm(placed + 1), "sender": "system", "text": f"Order accepted by {merchant}."}]
    extra = _IM.get(key, [])
    for j, (sender, text) in enumerate(extra):
        t = pickup + 1 + j * max(1, (actual - pickup - 2) // (len(extra) + 1))
        log.append({"time": _hhmm(min(t, actual - 1)), "sender": sender, "text": text.format(**fill)})
    log.insert(1, {"time": _hhmm(pickup), "sender": "system", "text": "Rider picked up the order."})
    log.append({"time": _hhmm(actual), "sender": "system", "text": "Order marked as delivered."})
    log.sort(key=lambda m: m["time"])
    kind = sop_remedy(dtype, resp, history, max(late, 0), photo_received=photo)
    line = next((it for it in items if it["name"] == item), None)
    amount = round(line["quantity"] * line["price"], 2) if kind == "refund_item" and line else None
    return {
        "order_id": f"FD-{100001 + i:06d}", "merchant": merchant, "items": items,
        "delivery_fee": fee, "total": total, "placed_at": _hhmm(placed),
        "promised_delivery": _hhmm(promised), "actual_delivery": _hhmm(actual),
        "dispute": {"type": dtype, "affected_item": item, "user_account": account.format(**fill)},
        "responsible": resp,
        "evidence": {"photo": photo, "photo_description": photo_desc},
        "complaint_history": history, "im_log": log,
        "fair_remedy": {"kind": kind, "refund_amount": amount,
                        "rationale": _rationale(kind, dtype, resp, history, max(late, 0), photo, item, amount)},
    }


def make_orders(rng: np.random.Generator) -> list[dict[str, Any]]:
    """:data:`N_ORDERS` orders; every block of 7 consecutive orders covers the 7 dispute types."""
    menus = _menus()
    types = []
    for _ in range(N_ORDERS // 7 + 1):
        types.extend(DISPUTE_TYPES[int(k)] for k in rng.permutation(len(DISPUTE_TYPES)))
    return [make_order(i, types[i], rng, menus) for i in range(N_ORDERS)]


def make_personas(rng: np.random.Generator) -> list[dict[str, Any]]:
    """:data:`PERSONAS_PER_LEVEL` distinct personas per cooperation level, demand types balanced."""
    combos: dict[int, list[tuple[int, int, int, int]]] = {lv: [] for lv in range(1, 6)}
    for c in itertools.product(range(4), repeat=4):
        combos[cooperation_level(*c)].append(c)
    out: list[dict[str, Any]] = []
    for level in range(1, 6):
        demands = [DEMAND_TYPES[k % 4] for k in range(PERSONAS_PER_LEVEL)]
        demands = [demands[int(k)] for k in rng.permutation(len(demands))]
        seen: set[tuple] = set()
        for demand in demands:
            while True:
                pol, dis, ps, aff = combos[level][int(rng.integers(len(combos[level])))]
                verb = int(rng.integers(3))
                target = _choice(rng, ("full_refund", "item_refund")) if demand == "rigid_pursuit" else None
                key = (pol, dis, ps, aff, verb, demand, target)
                if key not in seen:
                    seen.add(key)
                    break
            out.append({
                "persona_id": f"P-{len(out) + 1:04d}",
                "traits": {"communication": {"verbosity": verb, "politeness": pol},
                           "disclosure": dis, "problem_solving": ps, "affective": aff},
                "demand": {"type": demand, "target_remedy": target},
                "cooperation_level": level,
            })
    return out


def make_splits(rng: np.random.Generator, personas: list[dict[str, Any]],
                orders: list[dict[str, Any]]) -> dict[str, dict[str, list[list[str]]]]:
    """Hard/easy test users (80 each, held-out personas and orders) and train users (2000 each)."""
    pools: dict[int, dict[str, list[str]]] = {lv: {dem: [] for dem in DEMAND_TYPES} for lv in range(1, 6)}
    for k in rng.permutation(len(personas)):
        p = personas[int(k)]
        pools[p["cooperation_level"]][p["demand"]["type"]].append(p["persona_id"])
    # Test personas: per difficulty, the level counts of the weights, demand types in turn (20 each).
    test_p: dict[str, list[str]] = {d: [] for d in DIFFICULTIES}
    for d in DIFFICULTIES:
        k = 0
        for lv, n in zip(range(1, 6), level_counts(d, TEST_USERS)):
            for _ in range(n):
                test_p[d].append(pools[lv][DEMAND_TYPES[k % len(DEMAND_TYPES)]].pop())
                k += 1
    train_p = {lv: sorted(pid for ids in pools[lv].values() for pid in ids) for lv in range(1, 6)}
    order_ids = [o["order_id"] for o in orders]
    test_o = {"hard": order_ids[:TEST_USERS], "easy": order_ids[TEST_USERS:2 * TEST_USERS]}
    train_o = order_ids[2 * TEST_USERS:]
    out: dict[str, dict[str, list[list[str]]]] = {}
    for d in DIFFICULTIES:
        ps = [test_p[d][int(k)] for k in rng.permutation(TEST_USERS)]
        test = [[p, o] for p, o in zip(ps, test_o[d])]
        train: list[list[str]] = []
        seen: set[tuple[str, str]] = set()
        for lv, n in zip(range(1, 6), level_counts(d, TRAIN_USERS)):
            count = 0
            while count < n:
                pair = (train_p[lv][int(rng.integers(len(train_p[lv])))],
                        train_o[int(rng.integers(len(train_o)))])
                if pair not in seen:
                    seen.add(pair)
                    train.append(list(pair))
                    count += 1
        train = [train[int(k)] for k in rng.permutation(len(train))]
        out[d] = {"test": test, "train": train}
    return out


def generate() -> dict[str, str]:
    """The three data files as text, keyed by file name."""
    rng = np.random.default_rng(SEED)
    orders = make_orders(rng)
    personas = make_personas(rng)
    splits = make_splits(rng, personas, orders)
    def dump(records: list[dict[str, Any]]) -> str:  # one record per line: diffable, compact
        return "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n"

    splits_text = "{\n" + ",\n".join(
        f' "{d}": {{\n' + ",\n".join(
            f'  "{s}": [\n' + ",\n".join(f"   {json.dumps(p)}" for p in pairs) + "\n  ]"
            for s, pairs in v.items()) + "\n }"
        for d, v in splits.items()) + "\n}\n"
    return {"orders.json": dump(orders), "personas.json": dump(personas), "splits.json": splits_text}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "data"),
                        help="folder to write orders.json, personas.json and splits.json into")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in generate().items():
        (out / name).write_text(text, encoding="utf-8")
        print(f"wrote {out / name} ({len(text):,} bytes)")


if __name__ == "__main__":
    main()
