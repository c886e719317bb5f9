"""Encoding detection never picks a codec on thin evidence (issue 15, item 1).

A corpus of small exports in cp1252 (five languages) and in cp1251, Shift-JIS, GB18030 and
ISO-8859-7: each file is either read as exactly the text that was written, or refused with
the candidates, a line decoded each way and the ``--encoding`` to pass. A few go end to end
through the CLI into the sandbox, with the stored values checked letter by letter.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from encoding_corpus import corpus

from importer.cli import cli
from importer.exceptions import InputError
from importer.sandbox.server import RunningSandbox
from importer.sources import ReadOptions, SourceFile, detect_encoding, resolve_inputs
from importer.sources.encoding import UncertainEncoding

MAPPING = """\
version: 1
target: contacts
fields:
  _user_id: id
  _first_name: first_name
  _last_name: last_name
"""


def _outcome(path: Path, text: str) -> str:
    """'right', 'refused' (with the full message checked) or 'WRONG codec-name'."""
    try:
        [source] = resolve_inputs([str(path)])
    except InputError as exc:
        message = str(exc)
        assert "cannot tell the text encoding for sure" in message
        assert "decoded each way" in message and "--encoding=" in message
        assert message.count("  --encoding=") >= 2, message  # at least two candidates shown
        return "refused"
    assert source.encoding is not None and source.encoding_reason
    read_back = path.read_bytes().decode(source.encoding)
    return "right" if read_back.removeprefix("\ufeff") == text else f"WRONG {source.encoding}"


def test_corpus_of_small_files_is_read_right_or_refused(tmp_path: Path) -> None:
    files = corpus(western=1000, others=60)
    outcomes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for item in files:
        path = tmp_path / item.name
        path.write_bytes(item.data)
        outcomes[item.codec][_outcome(path, item.text)] += 1
    wrong = {codec: {k: v for k, v in c.items() if k.startswith("WRONG")}
             for codec, c in outcomes.items()}
    assert all(not w for w in wrong.values()), (wrong, dict(outcomes))
    western = outcomes["cp1252"]
    assert sum(western.values()) == 1000
    # The point of a Western default: Western exports are read, not refused.
    assert western["right"] >= 990, dict(western)
    for codec in ("cp1251", "shift_jis", "gb18030", "iso8859_7"):
        assert sum(outcomes[codec].values()) == 60


def test_the_issue_examples_are_cp1252() -> None:
    for text in ["id;nombre\n1;Hélène\n2;Núñez\n3;Córdoba\n", "id,n\n1,Àlex\n",
                 "id;nombre;ciudad\n1;José;Logroño\n"]:
        choice = detect_encoding(text.encode("cp1252"), complete=True)
        assert choice.encoding == "cp1252", text
        assert "Western European" in choice.reason


def test_cyrillic_with_enough_text_is_read_and_says_why() -> None:
    text = "id,имя,город\n" + "".join(
        f"{i},Ольга Смирнова,Санкт-Петербург, постоянный клиент\n" for i in range(40))
    choice = detect_encoding(text.encode("cp1251"), complete=True)
    assert choice.encoding == "cp1251"
    assert "Cyrillic" in choice.reason


def test_thin_evidence_lists_the_candidates() -> None:
    with pytest.raises(UncertainEncoding) as caught:
        detect_encoding("id,n\n1,田中\n".encode("shift_jis"), complete=True)
    assert len(caught.value.candidates) >= 2


def test_refusal_message_shows_a_line_decoded_each_way(tmp_path: Path) -> None:
    path = tmp_path / "jp.csv"
    path.write_bytes("id;first_name;last_name\nC1;太郎;田中\n".encode("shift_jis"))
    with pytest.raises(InputError) as caught:
        resolve_inputs([str(path)])
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot tell the text encoding for sure")
    assert "line 2 decoded each way:" in message
    assert "  --encoding=cp932" in message
    assert "C1;太郎;田中" in message  # the right reading is among those shown
    assert "; nothing was sent — pass the --encoding whose line reads right" in message


def test_given_encoding_is_reported_as_given(tmp_path: Path) -> None:
    path = tmp_path / "jp.csv"
    path.write_bytes("id;first_name\nC1;太郎\n".encode("shift_jis"))
    [source] = resolve_inputs([str(path)], ReadOptions(encoding="shift_jis"))
    assert (source.encoding, source.encoding_reason) == ("shift_jis", "given with --encoding")
    assert "shift_jis [given with --encoding]" in source.describe()


def test_describe_states_encoding_and_why() -> None:
    source = SourceFile(path="crm.csv", format="csv", columns=("a",), encoding="cp1252",
                        delimiter=";", compression=None, total=1, total_unit="bytes",
                        encoding_reason="not UTF-8; reads as Western European text")
    assert source.describe() == (
        "crm.csv (csv, cp1252 [not UTF-8; reads as Western European text], ';'-separated)")


# ───────────── end to end through the CLI and the sandbox ─────────────


@pytest.fixture
def box(make_sandbox: Callable[..., RunningSandbox]) -> RunningSandbox:
    return make_sandbox()


def _cli(args: list[str], box: RunningSandbox) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args, env=box.env(), catch_exceptions=False)
    return result.exit_code, result.stderr


@pytest.mark.parametrize(
    ("language", "rows"),
    [("es", [("E1", "Hélène", "Núñez"), ("E2", "Àlex", "Córdoba"), ("E3", "Íñigo", "Ibáñez")]),
     ("de", [("D1", "Jürgen", "Größer"), ("D2", "Käthe", "Weiß")])],
)
def test_small_cp1252_file_lands_letter_for_letter(
    tmp_path: Path, box: RunningSandbox, language: str, rows: list[tuple[str, str, str]]
) -> None:
    data = tmp_path / f"{language}.csv"
    body = "".join(f"{i};{f};{last}\r\n" for i, f, last in rows)
    data.write_bytes(f"id;first_name;last_name\r\n{body}".encode("cp1252"))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    code, err = _cli(["run", str(data), "--mapping", str(mapping)], box)
    assert code == 0, err
    assert "cp1252 [not UTF-8" in err  # the report says which encoding and why
    for user_id, first, last in rows:
        stored = box.app.get_contact(user_id)
        assert stored is not None
        assert (stored["_first_name"], stored["_last_name"]) == (first, last)


def test_uncertain_file_is_exit_2_before_anything_is_sent(
    tmp_path: Path, box: RunningSandbox
) -> None:
    data = tmp_path / "ru.csv"
    data.write_bytes("id,first_name,last_name\nR1,Иван,Попов\n".encode("cp1251"))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    code, err = _cli(["run", str(data), "--mapping", str(mapping)], box)
    assert code == 2
    assert "cannot tell the text encoding for sure" in err and "--encoding=cp1251" in err
    assert "R1,Иван,Попов" in err  # the cp1251 reading is shown for the user to pick
    assert "Traceback" not in err
    assert box.app.stats()["requests_total"] == 0
    code, err = _cli(["run", str(data), "--mapping", str(mapping), "--encoding", "cp1251"], box)
    assert code == 0, err
    stored = box.app.get_contact("R1")
    assert stored is not None and (stored["_first_name"], stored["_last_name"]) == ("Иван", "Попов")


def test_validate_states_the_encoding_and_why(tmp_path: Path, box: RunningSandbox) -> None:
    data = tmp_path / "fr.csv"
    data.write_bytes("id,first_name,last_name\nF1,Hélène,Lefèvre\n".encode("cp1252"))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    result = CliRunner().invoke(cli, ["validate", str(data), "--mapping", str(mapping)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "cp1252 [not UTF-8; every non-ASCII byte reads as a Western European letter" in (
        result.output)
