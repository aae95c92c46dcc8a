"""Your own job, end to end on the simulator: a label job over two columns, a text job whose
template uses two columns, template errors refused before any call, an edited job answered
afresh and an unchanged one not at all, and trial runs."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from aibatch.app.cli import app
from aibatch.flows.process_rows import process_rows
from aibatch.jobs.spec import load_job_file
from aibatch.runs.parameters import RunParameters
from aibatch.simulator import SimulatorServer
from tests.conftest import FlowSimulator
from tests.helpers import write_tickets

StartSimulator = Callable[..., SimulatorServer]
UseSimulator = Callable[[SimulatorServer], None]

CATEGORIES = ["electronics", "clothing", "home", "toys", "other"]
PRODUCTS = [
    ("SKU-1", "Wireless earbuds", "Bluetooth earbuds with a charging case and 20 h battery."),
    ("SKU-2", "Cotton t-shirt", "A soft cotton shirt, machine washable, in five colours."),
    ("SKU-3", "Kitchen knife set", "Three steel knives for the kitchen with a wooden block."),
    ("SKU-4", "Wooden puzzle", ""),  # a null description: the template gives a default
    ("SKU-5", "USB charger", "A fast wireless charger for phones and earbuds."),
]
LABEL_JOB = '''name = "product-category"
system = "You sort the products of an online shop into one category each."
prompt = """Title: {{ title }}
Description: {{ description | default("(no description)") }}"""
id_column = "sku"
[output]
kind = "label"
labels = ["electronics", "clothing", "home", "toys", "other"]
[output.definitions]
electronics = "devices such as a charger, earbuds or speakers; anything with a battery"
clothing = "a shirt, trousers, shoes: things to wear, cotton or not"
home = "kitchen, furniture, bedding and decoration"
toys = "games, a puzzle or a toy for children"
'''
DIGEST_JOB = '''name = "ticket-digest"
system = "You write a one-sentence digest of a support ticket for the product team."
prompt = """Product: {{ product }}
Ticket: {{ text }}"""
max_tokens = 200
[output]
kind = "text"
'''


def write_products(path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "title", "description", "brand", "price"])
        for sku, title, description in PRODUCTS:
            writer.writerow([sku, title, description, "Acme", "9.99"])


def params_for(tmp_path: Path, job_text: str, data: str, **options: object) -> RunParameters:
    job = tmp_path / "job.toml"
    job.write_text(job_text, encoding="utf-8")
    return RunParameters.model_validate({
        "input_path": str(tmp_path / data), "output_dir": str(tmp_path / "out"),
        "job_definition": load_job_file(job), "chunk_size": 50, **options,
    })  # fmt: skip


def test_a_label_job_over_two_columns_answers_each_row_from_the_set(
    flow_simulator: FlowSimulator, tmp_path: Path,
) -> None:  # fmt: skip
    server = flow_simulator()
    write_products(tmp_path / "products.csv")
    summary = asyncio.run(process_rows(params_for(tmp_path, LABEL_JOB, "products.csv")))

    assert summary["ok"] == 5 and summary["job"] == "product-category"
    results = pd.read_parquet(tmp_path / "out" / "product-category" / "results").set_index("id")
    assert set(results["result"]) <= set(CATEGORIES)
    assert results.loc["SKU-1", "result"] == "electronics"
    assert results.loc["SKU-2", "result"] == "clothing"
    assert results.loc["SKU-3", "result"] == "home"
    assert results.loc["SKU-4", "result"] == "toys"
    assert {"brand", "price"} <= set(results.columns)  # columns the prompt does not read
    assert "title" not in results.columns  # ... and not those it does: they are the question

    # Unchanged: not one call. Edited (one definition more): every row again.
    before = server.stats()["requests_total"]
    again = asyncio.run(process_rows(params_for(tmp_path, LABEL_JOB, "products.csv")))
    assert again["rows"] == 0 and server.stats()["requests_total"] == before
    edited = LABEL_JOB + 'other = "anything the four others do not cover"\n'
    changed = asyncio.run(process_rows(params_for(tmp_path, edited, "products.csv")))
    assert changed["ok"] == 5 and changed["prompt_version"] != summary["prompt_version"]
    assert server.stats()["requests_total"] == before + 5


def test_a_text_job_whose_template_uses_two_columns(
    flow_simulator: FlowSimulator, tmp_path: Path,
) -> None:  # fmt: skip
    flow_simulator()
    texts = write_tickets(tmp_path / "tickets.csv", 20)
    products = pd.read_csv(tmp_path / "tickets.csv", dtype=str).set_index("id")["product"]
    summary = asyncio.run(process_rows(params_for(tmp_path, DIGEST_JOB, "tickets.csv")))

    assert summary["ok"] == 20
    results = pd.read_parquet(tmp_path / "out" / "ticket-digest" / "results")
    named = 0
    for ticket_id, digest in zip(results["id"], results["result"], strict=True):
        # Drawn from both columns of its own row, and from nothing else.
        own = set((products[ticket_id] + " " + texts[ticket_id]).split())
        assert set(digest.split()) <= own, (ticket_id, digest)
        named += digest.startswith(products[ticket_id])
    assert named > 0  # the product column reached the model


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("{{ product }}", "{{ produkt }}"),
         "column 'produkt': missing column: the prompt template reads it (columns present: id, "
         "text, customer_tier, channel, product, created_at)"),
        (("{{ product }}", "{{ product "), "prompt template, line 2"),
    ],
)  # fmt: skip
def test_template_errors_exit_2_before_any_call_and_write_nothing(
    start_simulator: StartSimulator, use_simulator: UseSimulator, tmp_path: Path,
    edit: tuple[str, str], expected: str,
) -> None:  # fmt: skip
    server = start_simulator()
    use_simulator(server)
    write_tickets(tmp_path / "tickets.csv", 5)
    (tmp_path / "job.toml").write_text(DIGEST_JOB.replace(*edit), encoding="utf-8")
    result = CliRunner().invoke(app, [
        "run", str(tmp_path / "tickets.csv"), "--job-file", str(tmp_path / "job.toml"),
        "--output", str(tmp_path / "out"), "--no-progress",
    ])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert server.stats()["requests_total"] == 0 and not (tmp_path / "out").exists()


def test_trial_runs_send_a_few_rows_and_a_dry_run_sends_none(
    flow_simulator: FlowSimulator, tmp_path: Path,
) -> None:  # fmt: skip
    server = flow_simulator()
    write_tickets(tmp_path / "tickets.csv", 40)
    first = asyncio.run(process_rows(params_for(tmp_path, DIGEST_JOB, "tickets.csv", limit=5)))
    assert first["ok"] == 5 and first["held_back"] == 35
    results = pd.read_parquet(tmp_path / "out" / "ticket-digest" / "results")
    assert sorted(results["id"]) == [f"T-{i:05d}" for i in range(1, 6)]  # the first five
    sampled = asyncio.run(process_rows(params_for(tmp_path, DIGEST_JOB, "tickets.csv", sample=7)))
    assert sampled["ok"] == 7 and sampled["already_done"] == 5
    assert server.stats()["requests_total"] == 12

    dry = CliRunner().invoke(app, [
        "run", str(tmp_path / "tickets.csv"), "--job-file", str(tmp_path / "job.toml"),
        "--output", str(tmp_path / "out"), "--dry-run", "--limit", "2",
    ])  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert dry.output.count('"model": "claude-sonnet-5-5"') == 2
    assert "Product: <data>" in dry.output and "ticket-digest of 2 rows" in dry.output
    assert server.stats()["requests_total"] == 12  # counted, not sent
