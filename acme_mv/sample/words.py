"""The words sample rows are made of, shared by the bulk loader (as SQL arrays)
and the simulator (in Python), so both write the same kind of names."""

from __future__ import annotations

import random

FIRST_NAMES = (
    "Ana",
    "Bruno",
    "Carla",
    "Diego",
    "Elena",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Kenji",
    "Lara",
    "Marco",
    "Nadia",
    "Omar",
    "Paula",
    "Quentin",
    "Rosa",
    "Samir",
    "Tina",
    "Ugo",
    "Vera",
    "Wen",
    "Ximena",
    "Yusuf",
    "Zoe",
)
LAST_NAMES = (
    "Almeida",
    "Becker",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fontaine",
    "Garcia",
    "Hansen",
    "Ito",
    "Jansen",
    "Kowalski",
    "Lopez",
    "Moreau",
    "Novak",
    "Oliveira",
    "Petrov",
    "Quinn",
    "Rossi",
    "Silva",
    "Tanaka",
    "Urban",
    "Varga",
    "Weber",
    "Xu",
    "Yilmaz",
    "Zimmermann",
)
STREETS = (
    "Harbour Road",
    "Mill Lane",
    "Station Street",
    "Market Square",
    "Rua das Flores",
    "Avenida Central",
    "Lindenstrasse",
    "Rue de la Gare",
    "Via Roma",
    "Church Street",
    "Quay Side",
    "Orchard Way",
)
CITIES = (
    "Porto",
    "Lyon",
    "Hamburg",
    "Turin",
    "Gdansk",
    "Rotterdam",
    "Leeds",
    "Valencia",
    "Brno",
    "Gothenburg",
    "Antwerp",
    "Cork",
)
ADJECTIVES = (
    "Compact",
    "Heavy-duty",
    "Insulated",
    "Folding",
    "Reinforced",
    "Waterproof",
    "Stackable",
    "Lightweight",
    "Industrial",
    "Reusable",
)
NOUNS = (
    "Crate",
    "Pallet",
    "Tape",
    "Box",
    "Strap",
    "Label Roll",
    "Container",
    "Drum",
    "Bag",
    "Trolley",
    "Wrap",
    "Divider",
)


def customer_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def customer_address(rng: random.Random) -> str:
    return (
        f"{rng.randint(1, 400)} {rng.choice(STREETS)}, "
        f"{rng.randint(1000, 9999)} {rng.choice(CITIES)}"
    )


def product_name(rng: random.Random) -> str:
    return f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.randint(1, 999)}"


def barcode(rng: random.Random) -> str:
    """A 13-digit EAN-like code (not checked: the source does not check either)."""
    return f"{rng.randrange(10**13):013d}"


def unity_price(rng: random.Random) -> str:
    """A price in 0.50..500.00 as a decimal string (DECIMAL column, no float rounding)."""
    return f"{rng.randint(50, 50000) / 100:.2f}"
