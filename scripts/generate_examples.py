"""Generate the synthetic example data for the job files in jobs/ (reproducibly).

    python scripts/generate_examples.py --products-count 2400 --invoices-count 600 \\
        --seed 11 --output-dir data

Writes four files to the output directory:

* `products.csv`: products of an online shop (sku, title, description, brand, price,
  category_hint) for `jobs/product-category.toml`. Each product is built from the
  vocabulary of one category (electronics, clothing, home, toys, other), so the words of
  its title and description make that category evident; `category_hint` is that category.
  About 5% of brands and 2% of descriptions are empty on purpose (nulls to handle).
* `products-truth.csv`: each product's true category by sku (`sku`, `expected`): the
  category its words were drawn from, the answer `aibatch eval` scores a model against.
* `invoices.jsonl`: invoice texts as pasted from an email or PDF ({"id", "text"}) for
  `jobs/invoice-extract.toml`. Each text keeps the lines `Invoice number:`, `Vendor:`,
  `Issue date:`, `Due date:`, `Currency:`, `Total:` and `Status:`, in varying order and
  surroundings, with 1-5 line items `- 3 x Item @ 149.00` whose sum is the total.
* `invoices-truth.jsonl`: the true fields of each invoice by id (the schema's fields plus
  `id`), so tests can check that an extraction came from its own row.

Standard library only. The same seed always gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

# -- products --------------------------------------------------------------------------------

# Share of each category; counts are exact (largest remainder), then shuffled.
CATEGORY_SHARES = {"electronics": 0.24, "clothing": 0.22, "home": 0.22, "toys": 0.16,
                   "other": 0.16}  # fmt: skip

BRANDS = [
    "Voltaris", "Nimbrook", "Quellan", "Brightwick", "Orvane", "Tallowby", "Kestrelle",
    "Mirefield", "Ondara", "Pellwood", "Sorrento Lane", "Cobalt Finch", "Harrowgate & Co",
    "Lumora", "Zephyrine", "Alderpeak", "Fennick", "Trevalo", "Glimmerjack", "Rowanby",
    "Solvik", "Marlowe Street", "Juniper Fox", "Ottercraft", "Vireo", "Blanchford",
]  # fmt: skip

# Per category: groups of products sharing plausible feature and closing sentences, and a
# price range in whole units. Items are (title, noun in sentences, what it is for).
PRODUCTS: dict[str, dict[str, Any]] = {
    "electronics": {
        "qualifiers": ["Pro", "Mini", "Max", "Lite", "2nd Gen", "X2", "Plus", "S", "Air", "Go"],
        "price": (9, 349),
        "groups": [
            {
                "items": [
                    ("Wireless Earbuds", "pair of wireless earbuds", "music and calls on the go"),
                    ("Bluetooth Speaker", "portable Bluetooth speaker", "playing music outdoors"),
                    (
                        "Noise-Cancelling Headphones",
                        "pair of over-ear wireless headphones",
                        "focused listening on flights and commutes",
                    ),
                    ("Smart Watch", "smart watch", "tracking steps, heart rate and notifications"),
                    ("E-Reader", "e-reader", "reading e-books on a glare-free screen"),
                    (
                        "Action Camera",
                        "waterproof action camera",
                        "filming sports and travel in 4K",
                    ),
                ],
                "features": [
                    "The rechargeable battery lasts up to {hours} hours on a single charge.",
                    "It pairs over Bluetooth {bt} in seconds and charges over USB-C.",
                    "Firmware updates arrive through the companion app on iOS and Android.",
                    "A full charge takes about {minutes} minutes with the included cable.",
                ],
                "closers": [
                    "Includes a USB-C charging cable and a quick start guide.",
                    "Covered by a {years}-year electronics warranty.",
                ],
            },
            {
                "items": [
                    (
                        "USB-C Charger",
                        "65 W USB-C wall charger",
                        "fast-charging phones and laptops",
                    ),
                    ("Power Bank", "{mah} mAh power bank", "recharging a phone away from a socket"),
                    (
                        "HDMI Cable",
                        "braided HDMI 2.1 cable",
                        "connecting a laptop or console to a TV",
                    ),
                    ("Portable SSD", "1 TB portable SSD", "backing up photos and files over USB-C"),
                    (
                        "Smart Plug",
                        "Wi-Fi smart plug",
                        "switching lamps on and off from a phone app",
                    ),
                    (
                        "Docking Station",
                        "USB-C docking station",
                        "connecting a laptop to monitors, Ethernet and USB devices",
                    ),
                ],
                "features": [
                    "It works with Windows, macOS, Android and iPhone out of the box.",
                    "Built-in protection against overheating and power surges keeps devices safe.",
                    "The compact aluminium case fits easily in a laptop bag.",
                    "Transfer speeds reach up to {speed} thanks to the latest USB standard.",
                ],
                "closers": [
                    "Covered by a {years}-year electronics warranty.",
                    "Plug and play: no drivers or software needed.",
                ],
            },
            {
                "items": [
                    ("Mechanical Keyboard", "mechanical keyboard", "typing and gaming on a PC"),
                    ("Wireless Mouse", "wireless mouse", "everyday work on a laptop or desktop"),
                    (
                        "4K Webcam",
                        "4K webcam with a built-in microphone",
                        "video calls and streaming",
                    ),
                    (
                        "Gaming Headset",
                        "gaming headset with a microphone",
                        "online gaming and chat",
                    ),
                ],
                "features": [
                    "It connects over a 2.4 GHz USB receiver or Bluetooth {bt}.",
                    "Works with Windows, macOS and Linux without extra drivers.",
                    "Customisable RGB lighting and buttons are set up in the desktop app.",
                    "The rechargeable battery lasts up to {hours} hours between charges.",
                ],
                "closers": [
                    "Includes a USB-C cable.",
                    "Covered by a {years}-year electronics warranty.",
                ],
            },
        ],
    },
    "clothing": {
        "qualifiers": [
            "Men's",
            "Women's",
            "Unisex",
            "Classic",
            "Relaxed Fit",
            "Organic",
            "Essential",
        ],
        "colors": [
            "Navy",
            "Black",
            "Olive",
            "Charcoal",
            "Cream",
            "Burgundy",
            "Sky Blue",
            "Heather Grey",
            "Sand",
            "Forest Green",
        ],
        "price": (8, 189),
        "groups": [
            {
                "items": [
                    ("Cotton T-Shirt", "cotton t-shirt", "everyday wear"),
                    ("Linen Shirt", "linen shirt", "hot summer days and holidays"),
                    (
                        "Slim Fit Chinos",
                        "pair of slim fit cotton chinos",
                        "the office or a smart dinner",
                    ),
                    ("Hooded Sweatshirt", "cotton hooded sweatshirt", "lounging and weekend walks"),
                    ("Pyjama Set", "cotton pyjama set", "sleeping comfortably"),
                    ("Summer Dress", "summer dress", "warm weather and garden parties"),
                ],
                "features": [
                    "It is made from {pct}% organic cotton with a soft, breathable feel.",
                    "Available in sizes XS to XXL; it runs true to size.",
                    "The fabric is machine washable at 30 degrees and keeps its shape.",
                    "It comes in {color} and pairs well with jeans, shorts or trousers.",
                    "A tagless neckline and flat seams make it comfortable to wear all day.",
                ],
                "closers": [
                    "Check the size chart before ordering.",
                    "Wash inside out to keep the colour bright.",
                    "Free returns on all sizes within 30 days.",
                ],
            },
            {
                "items": [
                    ("Merino Wool Sweater", "merino wool sweater", "staying warm on cold days"),
                    ("Denim Jacket", "denim jacket", "layering in spring and autumn"),
                    ("Rain Jacket", "waterproof rain jacket", "walking and commuting in the rain"),
                    ("Puffer Vest", "lightweight puffer vest", "chilly mornings"),
                    ("Fleece Jacket", "fleece jacket", "hiking and cool evenings"),
                    ("Wool Beanie", "knitted wool beanie", "keeping your head warm in winter"),
                ],
                "features": [
                    "The relaxed fit leaves room for a sweater or hoodie underneath.",
                    "Zipped pockets keep a phone and keys safe.",
                    "It comes in {color}, in sizes XS to XXL.",
                    "Warm without bulk, it packs into its own pocket for travel.",
                ],
                "closers": [
                    "Check the size chart before ordering.",
                    "Free returns on all sizes within 30 days.",
                ],
            },
            {
                "items": [
                    ("Leather Belt", "leather belt", "jeans and trousers"),
                    (
                        "Running Socks (3 pairs)",
                        "pack of cushioned running socks",
                        "long runs without blisters",
                    ),
                    ("Knit Scarf", "knitted scarf", "cold, windy days"),
                ],
                "features": [
                    "It comes in {color} and goes with casual and smart outfits.",
                    "One size fits most; see the size guide for exact measurements.",
                    "Soft on the skin and easy to care for.",
                ],
                "closers": ["A simple wardrobe staple.", "Free returns within 30 days."],
            },
        ],
    },
    "home": {
        "qualifiers": [
            "Classic",
            "Nordic",
            "Essential",
            "Family Size",
            "Compact",
            "Deluxe",
            "Rustic",
            "Modern",
        ],
        "price": (6, 229),
        "groups": [
            {
                "items": [
                    ("Nonstick Frying Pan", "nonstick frying pan", "cooking eggs and stir-fries"),
                    ("Cast Iron Casserole", "cast iron casserole dish", "slow-cooked stews"),
                    ("Chef's Knife", "stainless steel chef's knife", "chopping in the kitchen"),
                    (
                        "Bamboo Cutting Board",
                        "bamboo cutting board",
                        "prepping food in the kitchen",
                    ),
                    (
                        "Ceramic Dinner Plates (set of 4)",
                        "set of ceramic dinner plates",
                        "everyday meals at the dining table",
                    ),
                    ("Coffee Maker", "drip coffee maker", "brewing fresh coffee at home"),
                ],
                "features": [
                    "It is dishwasher safe and easy to clean after cooking.",
                    "Suitable for all hobs, including induction, and oven safe to 220 degrees.",
                    "It measures {cm} cm and stores neatly in a kitchen cupboard.",
                    "The timeless design suits a modern or farmhouse kitchen.",
                ],
                "closers": [
                    "Part of our kitchen and dining range.",
                    "A practical gift for a new home.",
                ],
            },
            {
                "items": [
                    ("Cotton Bed Sheet Set", "cotton bed sheet set", "a cool night's sleep"),
                    ("Bath Towel Set", "bath towel set", "the bathroom and guest room"),
                    ("Throw Blanket", "knitted throw blanket", "the sofa on winter evenings"),
                    (
                        "Linen Cushion Covers (set of 2)",
                        "set of linen cushion covers",
                        "refreshing a sofa or bed",
                    ),
                ],
                "features": [
                    "Soft, absorbent and made to last through hundreds of washes.",
                    "Machine washable at 40 degrees and quick to dry.",
                    "Available for single, double and king size beds.",
                    "The neutral colours match any bedroom or living room.",
                ],
                "closers": [
                    "Ships in plastic-free packaging.",
                    "Part of our bedroom and bath collection.",
                ],
            },
            {
                "items": [
                    ("Scented Candle", "scented soy candle", "a cosy living room"),
                    ("Table Lamp", "bedside table lamp", "reading in the bedroom"),
                    ("Wall Clock", "silent wall clock", "the kitchen or living room"),
                    (
                        "Storage Baskets (set of 3)",
                        "set of woven storage baskets",
                        "tidying shelves and wardrobes",
                    ),
                    (
                        "Microfiber Cleaning Cloths",
                        "pack of microfiber cleaning cloths",
                        "dusting and cleaning around the house",
                    ),
                ],
                "features": [
                    "Made from {material}, it fits a modern or rustic home.",
                    "It measures {cm} cm, so it fits on a shelf, desk or windowsill.",
                    "A simple way to make any room in the house feel tidier and warmer.",
                ],
                "closers": ["Ships in plastic-free packaging.", "A thoughtful housewarming gift."],
            },
        ],
    },
    "toys": {
        "qualifiers": ["Junior", "Deluxe", "Starter", "Mega", "Classic", "Adventure", "Rainbow"],
        "price": (5, 129),
        "groups": [
            {
                "items": [
                    (
                        "Jigsaw Puzzle (1000 pieces)",
                        "1000-piece jigsaw puzzle",
                        "family puzzle nights",
                    ),
                    ("Board Game for Families", "family board game", "game nights with kids"),
                    ("Card Game for Kids", "fast-paced card game", "kids aged 6 and up"),
                    ("Floor Puzzle (48 pieces)", "giant floor puzzle", "preschoolers"),
                ],
                "features": [
                    "A fun game for {players} players that takes about {minutes} minutes.",
                    "Recommended for ages {age}+.",
                    "All pieces store in the sturdy box after playtime.",
                    "It helps kids practise patience, counting and problem solving.",
                ],
                "closers": [
                    "A great birthday gift for kids.",
                    "Fun for children and grown-ups alike.",
                ],
            },
            {
                "items": [
                    (
                        "Wooden Building Blocks",
                        "set of wooden building blocks",
                        "toddlers learning to stack and build",
                    ),
                    (
                        "Building Bricks Castle Set",
                        "building bricks castle set",
                        "kids who love to build",
                    ),
                    ("Magnetic Tiles", "set of magnetic building tiles", "creative building play"),
                    ("Toy Train Set", "wooden toy train set", "young children building tracks"),
                    ("Stacking Rings", "stacking rings toy", "babies and toddlers"),
                    (
                        "Dollhouse with Furniture",
                        "wooden dollhouse with furniture",
                        "imaginative play",
                    ),
                    (
                        "Play Kitchen Toy Set",
                        "pretend-play kitchen toy set",
                        "role play for little chefs",
                    ),
                ],
                "features": [
                    "Made of child-safe, non-toxic materials and tested to toy safety standards.",
                    "Recommended for ages {age}+; contains small parts.",
                    "It helps kids build fine motor skills and creativity through play.",
                    "Bright colours keep toddlers and children engaged.",
                ],
                "closers": [
                    "A great birthday gift for kids.",
                    "Adult supervision recommended for younger children.",
                ],
            },
            {
                "items": [
                    ("Plush Teddy Bear", "plush teddy bear", "cuddles at bedtime"),
                    ("Soft Toy Dinosaur", "soft toy dinosaur", "playtime and naps"),
                    ("Remote Control Car", "remote control toy car", "racing in the garden"),
                    ("Kids' Art Kit", "kids' art and craft kit", "children who love to draw"),
                ],
                "features": [
                    "Made of child-safe materials and tested to toy safety standards.",
                    "Suitable for kids aged {age} and up.",
                    "A toy that sparks imaginative play indoors and out.",
                ],
                "closers": ["A great birthday gift for kids.", "Batteries not included."],
            },
        ],
    },
    "other": {
        "qualifiers": ["Pro", "Outdoor", "Trail", "Eco", "Everyday", "Travel", "Premium"],
        "price": (4, 259),
        "groups": [
            {
                "items": [
                    ("Yoga Mat", "non-slip yoga mat", "yoga, pilates and stretching"),
                    ("Dumbbell Set", "adjustable dumbbell set", "strength training at the gym"),
                    ("Bike Helmet", "cycling helmet", "safe rides to work and on trails"),
                    ("Camping Tent", "two-person camping tent", "weekend camping trips"),
                    ("Travel Backpack", "travel backpack", "hiking and carry-on travel"),
                    ("Fishing Rod", "telescopic fishing rod", "fishing at lakes and rivers"),
                ],
                "features": [
                    "Lightweight and durable, it is built for sport and the outdoors.",
                    "It weighs only {grams} g and packs down small.",
                    "Weather-resistant materials stand up to rain, mud and sun.",
                ],
                "closers": [
                    "Great for beginners and enthusiasts.",
                    "Part of our sports and outdoor range.",
                ],
            },
            {
                "items": [
                    ("Dog Leash", "reflective dog leash", "walking your dog at night"),
                    ("Cat Scratching Post", "cat scratching post", "keeping cats' claws healthy"),
                    ("Pet Grooming Brush", "pet grooming brush", "dogs and cats that shed"),
                ],
                "features": [
                    "Suitable for dogs and cats of all sizes.",
                    "Durable, easy to clean and safe for pets.",
                ],
                "closers": ["Your pet will thank you.", "Part of our pet supplies range."],
            },
            {
                "items": [
                    ("Spiral Notebook", "A5 spiral notebook", "notes, sketches and journaling"),
                    ("Fountain Pen", "refillable fountain pen", "handwriting and calligraphy"),
                    ("Desk Planner", "undated desk planner", "planning the week ahead"),
                ],
                "features": [
                    "The paper is {gsm} gsm, acid-free and takes ink without bleeding.",
                    "A sturdy cover protects pages in a bag or backpack.",
                ],
                "closers": [
                    "A favourite of students and writers.",
                    "Part of our stationery range.",
                ],
            },
            {
                "items": [
                    ("Shampoo Bar", "solid shampoo bar", "washing hair without plastic bottles"),
                    ("Garden Hose", "expandable garden hose", "watering plants and the lawn"),
                    ("Car Phone Mount", "car phone mount", "hands-free navigation while driving"),
                    ("Plant Pots (set of 3)", "set of plant pots", "growing herbs and succulents"),
                ],
                "features": [
                    "Made from recycled materials and recyclable at the end of its life.",
                    "Easy to use and built to last.",
                    "Vegan, cruelty-free and plastic-free where it matters.",
                ],
                "closers": ["A handy everyday essential.", "Great value for the price."],
            },
        ],
    },
}
MATERIALS = ["stainless steel", "stoneware", "oak wood", "tempered glass", "cast iron",
             "bamboo", "enamelled steel"]  # fmt: skip
PRICE_ENDINGS = [0.99, 0.99, 0.99, 0.49, 0.95, 0.00, 0.50]


def category_counts(count: int) -> dict[str, int]:
    """Exact per-category counts summing to `count` (largest remainder)."""
    raw = {c: count * share for c, share in CATEGORY_SHARES.items()}
    counts = {c: int(v) for c, v in raw.items()}
    missing = count - sum(counts.values())
    for c in sorted(raw, key=lambda c: raw[c] - counts[c], reverse=True)[:missing]:
        counts[c] += 1
    return counts


def product_description(rng: random.Random, group: dict[str, Any], noun: str, purpose: str) -> str:
    values = {
        "hours": rng.choice([8, 12, 20, 24, 30, 40]),
        "bt": rng.choice(["5.0", "5.2", "5.3"]),
        "mah": rng.choice([5000, 10000, 20000]),
        "minutes": rng.choice([30, 45, 60, 90]),
        "years": rng.choice([1, 2, 3]),
        "speed": rng.choice(["1,000 MB/s", "10 Gbit/s", "40 Gbit/s"]),
        "pct": rng.choice([60, 80, 95, 100]),
        "color": rng.choice(PRODUCTS["clothing"]["colors"]).lower(),
        "material": rng.choice(MATERIALS),
        "cm": rng.choice([20, 24, 28, 30, 45]),
        "age": rng.choice([3, 4, 6, 8]),
        "players": rng.choice(["2-4", "2-6", "3-5"]),
        "gsm": rng.choice([80, 100, 120]),
        "grams": rng.choice([250, 400, 900, 1800]),
    }
    opener = rng.choice([
        "A {noun} for {purpose}.",
        "This {noun} is made for {purpose}.",
        "Our {noun} is designed for {purpose}.",
        "Meet the {noun}, a reliable choice for {purpose}.",
    ]).replace("{noun}", noun).replace("{purpose}", purpose)  # fmt: skip
    sentences = [opener, *rng.sample(group["features"], k=rng.randint(1, 2))]
    if rng.random() < 0.6:
        sentences.append(rng.choice(group["closers"]))
    return " ".join(sentences).format(**values)


def product_title(rng: random.Random, category: str, title: str) -> str:
    spec = PRODUCTS[category]
    unfit = ("Men's", "Unisex") if "Dress" in title else ()
    qualifiers = [q for q in spec["qualifiers"] if q not in unfit]
    qualifier = rng.choice(qualifiers)
    if category == "clothing":
        return f"{qualifier} {title} - {rng.choice(spec['colors'])}"
    if category == "electronics":
        return f"{title} {qualifier}"
    return f"{qualifier} {title}"


def generate_products(count: int, rng: random.Random) -> list[dict[str, str]]:
    categories = [c for c, n in category_counts(count).items() for _ in range(n)]
    rng.shuffle(categories)
    skus = rng.sample(range(1, 1_000_000), count)
    rows = []
    seen: set[tuple[str, str]] = set()
    for category, sku in zip(categories, skus, strict=True):
        spec = PRODUCTS[category]
        for _ in range(50):  # distinct (title, description) pairs where the vocabulary allows
            group = rng.choice(spec["groups"])
            title, noun, purpose = rng.choice(group["items"])
            full_title = product_title(rng, category, title)
            description = product_description(rng, group, noun, purpose)
            if (full_title, description) not in seen:
                break
        seen.add((full_title, description))
        low, high = spec["price"]
        price = int(rng.triangular(low, high, low)) + rng.choice(PRICE_ENDINGS)
        rows.append({
            "sku": f"SKU-{sku:06d}",
            "title": full_title,
            "description": "" if rng.random() < 0.02 else description,
            "brand": "" if rng.random() < 0.05 else rng.choice(BRANDS),
            "price": f"{price:.2f}",
            "category_hint": category,
        })  # fmt: skip
    return rows


# -- invoices --------------------------------------------------------------------------------

VENDORS = [
    ("Hollowbrook Office Supply Ltd", "GBP", "14 Tanner Row, Leeds LS1 4AB"),
    ("Kestrel Print & Design GmbH", "EUR", "Hafenstrasse 22, 20457 Hamburg"),
    ("Bluepine Cloud Services Inc.", "USD", "880 Mission Ave, Suite 300, Austin, TX 78701"),
    ("Marrowfield Catering BV", "EUR", "Keizersgracht 118, 1015 CW Amsterdam"),
    ("Stonebridge IT Hardware Ltd", "GBP", "Unit 7, Canal Park, Manchester M4 6HF"),
    ("Larkspur Furniture Co.", "USD", "42 Elm Street, Portland, OR 97204"),
    ("Quillon Legal Translations SARL", "EUR", "9 rue des Tanneurs, 69002 Lyon"),
    ("Northgate Facility Cleaning Ltd", "GBP", "3 Mill Lane, Bristol BS1 5QT"),
    ("Tidewater Logistics LLC", "USD", "1200 Harbor Blvd, Long Beach, CA 90802"),
    ("Vellum & Oak Stationers", "GBP", "27 High Street, Oxford OX1 4AP"),
    ("Fjordlight Software AS", "EUR", "Storgata 5, 0155 Oslo"),
    ("Coppergate Marketing Studio", "USD", "315 W 36th St, New York, NY 10018"),
    ("Brambleway Coffee Roasters", "EUR", "Calle de Alcala 48, 28014 Madrid"),
    ("Ironleaf Security Systems Ltd", "GBP", "Riverside House, Glasgow G1 3PQ"),
    ("Saltmarsh Event Rentals", "USD", "77 Dock Road, Charleston, SC 29401"),
    ("Orchard Row Accounting Partners", "EUR", "Via Torino 61, 20123 Milano"),
]  # fmt: skip
LINE_ITEMS = [
    ("Ergonomic chair", 89, 349), ("Standing desk", 199, 749), ("Laptop stand", 19, 79),
    ("27-inch monitor", 149, 499), ("Wireless keyboard", 25, 120),
    ("Printer toner cartridge", 35, 140),
    ("A4 copy paper (box of 5 reams)", 18, 45), ("Cloud hosting, monthly plan", 49, 900),
    ("Software licence, annual", 99, 1200), ("Consulting hours", 75, 220),
    ("Design work, hourly", 55, 150), ("Office cleaning visit", 60, 240),
    ("Catering for team lunch", 120, 850), ("Coffee beans, 1 kg", 14, 38),
    ("Courier delivery", 9, 65), ("Document translation, per page", 20, 55),
    ("Security camera", 79, 260), ("Alarm system maintenance", 90, 310),
    ("Business cards (500)", 25, 90), ("Event tent rental, per day", 150, 600),
    ("Network switch", 60, 420), ("USB-C docking station", 79, 260),
    ("Bookkeeping, monthly", 180, 950), ("Marketing campaign setup", 300, 2400),
]  # fmt: skip
CUSTOMERS = ["Ledgerly Ltd", "Acorn Analytics", "Pinewood Dental Clinic", "Harbour Lights Hotel",
             "Greenline Architects", "Mosaic Learning Ltd", "Riverbend Bakery"]  # fmt: skip


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def invoice_fields(rng: random.Random, number: int) -> dict[str, Any]:
    vendor, currency, address = rng.choice(VENDORS)
    if rng.random() < 0.15:  # some vendors bill abroad in another currency
        currency = rng.choice(["EUR", "USD", "GBP"])
    issue = date(2026, 1, 1) + timedelta(days=rng.randint(0, 364))
    due = issue + timedelta(days=rng.choice([7, 14, 14, 30, 30, 30, 45, 60]))
    items = []
    for name, low, high in rng.sample(LINE_ITEMS, k=rng.randint(1, 5)):
        quantity = rng.choice([1, 1, 1, 2, 2, 3, 4, 5, 10, 12])
        unit_cents = rng.randint(low, high) * 100 + rng.choice([0, 0, 0, 50, 99, 95, 25])
        items.append((name, quantity, unit_cents))
    total_cents = sum(q * c for _, q, c in items)
    return {
        "invoice_number": f"INV-2026-{number:05d}",
        "vendor": vendor,
        "address": address,
        "issue_date": issue.isoformat(),
        "due_date": due.isoformat(),
        "currency": currency,
        "items": items,
        "total_cents": total_cents,
        "paid": rng.random() < 0.45,
    }


def invoice_text(rng: random.Random, f: dict[str, Any]) -> str:
    """The invoice as pasted text. Every text has the lines `Invoice number:`, `Vendor:`,
    `Issue date:`, `Due date:`, `Currency:`, `Total:` and `Status:`; no other ISO date, no
    other line starting with one of those field names, no "subtotal", and the word "paid"
    only on paid invoices."""
    header = [
        f"Invoice number: {f['invoice_number']}",
        f"Vendor: {f['vendor']}",
        f"Issue date: {f['issue_date']}",
        f"Due date: {f['due_date']}",
        f"Currency: {f['currency']}",
    ]
    # Vary the order of the header lines, keeping the issue date before the due date.
    order = rng.choice([[0, 1, 2, 3, 4], [1, 0, 2, 3, 4], [0, 2, 3, 1, 4], [1, 4, 0, 2, 3],
                        [0, 4, 1, 2, 3], [2, 3, 0, 1, 4]])  # fmt: skip
    header = [header[i] for i in order]
    if rng.random() < 0.5:
        header.insert(rng.randint(1, len(header)), f"Bill to: {rng.choice(CUSTOMERS)}")
    if rng.random() < 0.3:
        header.insert(rng.randint(1, len(header)), f"PO reference: PO-{rng.randint(1000, 9999)}")
    if rng.random() < 0.4:
        terms = (date.fromisoformat(f["due_date"]) - date.fromisoformat(f["issue_date"])).days
        header.append(f"Payment terms: Net {terms}")

    each = rng.choice(["", "", " each"])
    items_title = rng.choice(["Items:", "Line items:", "Description of services:", "Details:", ""])
    items = [f"- {q} x {name} @ {money(c)}{each}" for name, q, c in f["items"]]
    total = f"Total: {money(f['total_cents'])}"
    status = f"Status: {'paid' if f['paid'] else 'unpaid'}"
    if f["paid"]:
        note = rng.choice(["Payment received with thanks.", "This invoice has been paid in full.",
                           "Thank you for your payment.", ""])  # fmt: skip
    else:
        note = rng.choice([
            "Please pay by bank transfer before the due date.",
            f"Amount due: {money(f['total_cents'])} {f['currency']}",
            "Please quote the invoice number with your payment.",
            "",
        ])  # fmt: skip

    top: list[str] = []
    style = rng.choice(["email", "pdf", "plain", "forward"])
    if style == "email":
        top += [f"Subject: Invoice no. {f['invoice_number']} from {f['vendor']}", "",
                rng.choice(["Hello,", "Dear customer,", "Hi,"]), "",
                "Please find your invoice details below.", ""]  # fmt: skip
    elif style == "forward":
        top += ["---------- Forwarded message ----------",
                f"From: billing@{f['vendor'].split()[0].lower()}.example",
                f"Subject: Your invoice {f['invoice_number']}", ""]  # fmt: skip
    top += [f["vendor"]]
    if style != "plain" or rng.random() < 0.5:
        top += [f["address"]]
    top += [""]
    if style == "pdf":
        top += [rng.choice(["INVOICE", "TAX INVOICE", "Invoice"]), ""]

    body = header + [""] + ([items_title] if items_title else []) + items + [""]
    tail = [total, status] if rng.random() < 0.7 else [status, total]
    if note:
        tail.append(note)
    if style == "email":
        tail += ["", rng.choice(["Kind regards,", "Best regards,", "Thanks,"]),
                 f"Accounts team, {f['vendor']}"]  # fmt: skip
    elif style == "pdf" and rng.random() < 0.5:
        tail += ["", "Page 1 of 1"]
    return "\n".join(top + body + tail)


def generate_invoices(
    count: int, rng: random.Random
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    numbers = rng.sample(range(1, 100_000), count)
    rows, truth = [], []
    for index, number in enumerate(numbers, start=1):
        f = invoice_fields(rng, number)
        row_id = f"INV-TXT-{index:05d}"
        rows.append({"id": row_id, "text": invoice_text(rng, f)})
        truth.append({
            "id": row_id,
            "invoice_number": f["invoice_number"],
            "vendor": f["vendor"],
            "issue_date": f["issue_date"],
            "due_date": f["due_date"],
            "currency": f["currency"],
            "total": round(f["total_cents"] / 100, 2),
            "paid": f["paid"],
            "line_items": [
                {"description": name, "quantity": q, "unit_price": round(c / 100, 2)}
                for name, q, c in f["items"]
            ],
            "line_count": len(f["items"]),
        })  # fmt: skip
    return rows, truth


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products-count", type=int, default=2400)
    parser.add_argument("--invoices-count", type=int, default=600)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--output-dir", type=Path, default=Path("data"))
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)

    # Separate streams, so changing one count leaves the other file as it was.
    products = generate_products(args.products_count, random.Random(f"{args.seed}:products"))
    path = args.output_dir / "products.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(products[0]))
        writer.writeheader()
        writer.writerows(products)
    truth_path = args.output_dir / "products-truth.csv"
    with truth_path.open("w", newline="", encoding="utf-8") as handle:
        truth_writer = csv.writer(handle)
        truth_writer.writerow(["sku", "expected"])
        truth_writer.writerows((p["sku"], p["category_hint"]) for p in products)
    print(f"wrote {len(products)} products to {path} (truth in {truth_path})")

    invoices, truth = generate_invoices(args.invoices_count, random.Random(f"{args.seed}:invoices"))
    write_jsonl(args.output_dir / "invoices.jsonl", invoices)
    write_jsonl(args.output_dir / "invoices-truth.jsonl", truth)
    print(f"wrote {len(invoices)} invoices to {args.output_dir / 'invoices.jsonl'} "
          f"(truth in {args.output_dir / 'invoices-truth.jsonl'})")  # fmt: skip


if __name__ == "__main__":
    main()
