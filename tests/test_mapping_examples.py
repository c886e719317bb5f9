"""The shipped mappings and sample files: exact outcomes, accepted by the sandbox, documented."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import orjson
import pytest

from importer.mapping import parse_mapping
from importer.validate import ValidationReport, validate_files

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {
    # mapping: (input, rows read, valid, filtered, rejects by code)
    "contacts": ("contacts.csv", 60, 50, 2, {"invalid_email": 3, "invalid_date": 2,
                                              "required_missing": 2, "invalid_phone": 1}),
    "events": ("events.parquet", 80, 76, 0, {"required_missing": 3, "invalid_json": 1}),
    "orders": ("orders.csv", 50, 45, 0, {"invalid_date": 2, "invalid_email": 1,
                                          "required_missing": 1, "invalid_number": 1}),
    "orders_user_data": ("orders.csv", 50, 45, 0, {"invalid_date": 2, "invalid_email": 1,
                                                    "required_missing": 1,
                                                    "invalid_number": 1}),
    "clientes_es": ("clientes_es.csv", 40, 33, 0, {"invalid_date": 2, "invalid_phone": 1,
                                                    "invalid_number": 1, "invalid_email": 1,
                                                    "invalid_bool": 1, "required_missing": 1}),
}


def check(name: str) -> ValidationReport:
    data = str(ROOT / "sample_data" / EXAMPLES[name][0])
    return validate_files([data], ROOT / "mappings" / f"{name}.yaml", sample=1000)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_outcomes(name: str) -> None:
    _, rows, valid, filtered, codes = EXAMPLES[name]
    report = check(name)
    assert report.warnings == ()
    assert (report.rows_read, report.valid, report.filtered) == (rows, valid, filtered)
    assert dict(report.rejects_by_code) == codes
    assert report.exit_code == 3
    for bodies in report.samples.values():
        assert len(bodies) == valid


def test_spanish_export_values() -> None:
    report = check("clientes_es")
    first = orjson.loads(report.samples["contacts"][0])
    assert first["_user_id"] == "ES-0001" and first["_first_name"] == "Chloé"
    assert first["fecha_nacimiento"] == "1995-07-19"  # "19/07/1995": the day as written
    assert first["fecha_alta"] == "2021-08-21T12:20:00.000Z"  # 14:20 in Madrid, summer
    assert b'"importe_total":49.90' in report.samples["contacts"][2]


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(EXAMPLES))
async def test_sandbox_accepts_every_valid_payload(name: str, asgi_client: httpx.AsyncClient
                                                   ) -> None:
    report = check(name)
    for target in report.targets:  # contacts first, as a run sends them
        bodies = report.samples[target]
        for start in range(0, len(bodies), 100):
            chunk = b"[" + b",".join(bodies[start:start + 100]) + b"]"
            response = await asgi_client.post(
                f"/stream/{target}", content=chunk, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 202, response.text
            entity = response.json()["entity"]
            assert entity["failed"] == 0, [i for i in entity["items"] if i["status"] != "success"]


def test_docs_examples_parse_and_every_mapping_is_documented() -> None:
    doc = (ROOT / "docs" / "mapping.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", doc, flags=re.S)
    complete = [b for b in blocks if re.search(r"^targets?:", b, flags=re.M)]
    assert len(complete) >= 5
    for block in complete:
        parse_mapping(block)  # raises MappingError on any problem
    for name in EXAMPLES:
        assert f"mappings/{name}.yaml" in doc
