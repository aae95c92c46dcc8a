"""Generate the synthetic support tickets shipped in data/tickets.csv (reproducibly).

    python scripts/generate_tickets.py --count 5000 --seed 7 --output data/tickets.csv

Tickets are assembled from a greeting, a problem of one category (billing, technical,
feature request, other), details, a request and a sign-off, so that summaries and labels
have something real to work on. The same seed always gives the same file.
"""

from __future__ import annotations

import argparse
import csv
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

PRODUCTS = ["Ledgerly", "Ledgerly Mobile", "Ledgerly API", "Payroll add-on", "Inventory add-on"]
TIERS = ["free", "starter", "business", "enterprise"]
CHANNELS = ["email", "chat", "web form", "phone transcript"]
NAMES = ["Dana", "Sam", "Priya", "Jonas", "Mei", "Omar", "Lucia", "Tom", "Aiko", "Femi"]
GREETINGS = ["Hi,", "Hello,", "Hi team,", "Good morning,", "Hey there,", ""]
SIGNOFFS = ["Thanks, {name}", "Regards, {name}", "Cheers, {name}", "Best, {name}", "{name}"]

PROBLEMS = {
    "billing": [
        "I was charged twice for my {tier} subscription this month.",
        "The invoice for {month} shows the wrong VAT number for our company.",
        "My card was billed after I cancelled the plan on the {day}th.",
        "We were charged for {seats} seats but only have {seats_used} users.",
        "The annual plan price on the invoice is higher than the price on your website.",
        "I need a refund for the payment that went through by mistake yesterday.",
    ],
    "technical": [
        "Since the last update the {product} app crashes when I open the reports page.",
        "I cannot log in: the login page shows error {code} every time.",
        "Bank sync has been stuck on 'loading' for {hours} hours.",
        "Exports to CSV fail with a timeout error for anything over {rows} rows.",
        "The API returns 500 errors when we create invoices in bulk.",
        "Password reset emails never arrive, so I am locked out of my account.",
    ],
    "feature request": [
        "It would be great if {product} could add a dark mode.",
        "Could you add an option to schedule recurring invoices weekly?",
        "We would like an integration with our CRM so contacts sync both ways.",
        "Please add support for multiple currencies on one invoice.",
        "I suggest adding the ability to export reports as PDF directly.",
        "Is there a way to set user roles? We wish we could limit access for interns.",
    ],
    "other": [
        "I wanted to say the new onboarding videos were really clear.",
        "Where can I find your company's security and data processing documents?",
        "We are moving offices and want to know whether our data stays in the EU.",
        "Who is our account manager now that Alex has left?",
        "Do you offer a discount for non-profit organisations?",
        "How do I change the company name shown on our profile?",
    ],
}
DETAILS = {
    "billing": [
        "The transaction reference is {ref}.",
        "Our finance team needs this fixed before the month closes.",
        "I have attached the invoice number {ref} for reference.",
    ],
    "technical": [
        "It happens on both Chrome and the desktop app.",
        "I already cleared the cache and reinstalled, nothing helps.",
        "My whole team of {seats_used} is blocked by this.",
        "The error started around {hour}:00 UTC.",
    ],
    "feature request": [
        "Several of our accountants asked for this.",
        "Competitors already offer this, so it matters for our renewal.",
        "We would be happy to test an early version.",
    ],
    "other": [
        "No rush on this.",
        "Our auditor asked for it.",
        "Thanks for the great support so far.",
    ],
}
REQUESTS = {
    "billing": ["Please refund the duplicate charge.", "Can you correct the invoice?",
                "Please confirm when the billing is fixed."],
    "technical": ["Please fix this as soon as possible.", "Can you look into this urgently?",
                  "Is there a workaround until it is fixed?"],
    "feature request": ["Is this on your roadmap?", "Could you let me know if you plan this?",
                        "Please consider it for a future release."],
    "other": ["Could you point me in the right direction?", "Let me know, thanks.",
              "Can you help?"],
}  # fmt: skip


def ticket_text(rng: random.Random, category: str, product: str, tier: str) -> str:
    values = {
        "tier": tier,
        "product": product,
        "month": rng.choice(["January", "March", "June", "September", "November"]),
        "day": rng.randint(2, 28),
        "seats": rng.randint(10, 60),
        "seats_used": rng.randint(2, 9),
        "code": rng.choice([401, 403, 500, 502, 504]),
        "hours": rng.randint(2, 48),
        "rows": rng.choice([1000, 5000, 10000]),
        "ref": f"INV-{rng.randint(100000, 999999)}",
        "hour": rng.randint(0, 23),
        "name": rng.choice(NAMES),
    }
    parts = [rng.choice(GREETINGS), rng.choice(PROBLEMS[category])]
    parts += rng.sample(DETAILS[category], k=rng.randint(1, 2))
    parts += [rng.choice(REQUESTS[category]), rng.choice(SIGNOFFS)]
    return " ".join(p for p in parts if p).format(**values)


def generate(count: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    categories = list(PROBLEMS)
    weights = [0.35, 0.4, 0.15, 0.1]
    rows = []
    seen: set[str] = set()
    for number in range(1, count + 1):
        # Distinct texts, so "the same prompt paid twice" in tests means a real re-send.
        text = ""
        while not text or text in seen:
            category = rng.choices(categories, weights)[0]
            product = rng.choice(PRODUCTS)
            tier = rng.choice(TIERS)
            text = ticket_text(rng, category, product, tier)
        seen.add(text)
        created = start + timedelta(minutes=rng.randint(0, 60 * 24 * 56))
        rows.append({
            "id": f"T-{number:05d}",
            "text": text,
            "customer_tier": tier,
            "channel": rng.choice(CHANNELS),
            "product": product,
            "created_at": created.isoformat().replace("+00:00", "Z"),
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=Path("data/tickets.csv"))
    args = parser.parse_args()
    rows = generate(args.count, args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} tickets to {args.output}")


if __name__ == "__main__":
    main()
