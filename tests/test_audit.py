"""The human-audit sheet: stratified sampling, the sheet's shape, and the scores read back
(Krippendorff's alpha checked against the published worked example)."""

from __future__ import annotations

import csv

import pytest

from lewin.udfs import audit


def test_allocation_is_even_capped_and_complete():
    assert audit.allocate({"a": 100, "b": 100, "c": 100}, 120) == {"a": 40, "b": 40, "c": 40}
    # a small stratum gives its unused share to the others
    assert audit.allocate({"a": 5, "b": 100, "c": 100}, 120) == {"a": 5, "b": 58, "c": 57}
    assert audit.allocate({"a": 3, "b": 2}, 120) == {"a": 3, "b": 2}
    assert sum(audit.allocate({"x": 7, "y": 0, "z": 50}, 20).values()) == 20
    with pytest.raises(ValueError, match="n must be"):
        audit.allocate({"a": 1}, -1)


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers, 12 units.
_KRIPPENDORFF_EXAMPLE = list(zip(
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
))


@pytest.mark.parametrize("metric,expected", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_alpha_reproduces_krippendorffs_worked_example(metric, expected):
    assert round(audit.krippendorff_alpha(_KRIPPENDORFF_EXAMPLE, metric), 3) == expected


def test_alpha_is_one_for_perfect_agreement_and_undefined_without_variation():
    assert audit.krippendorff_alpha([(1, 1), (5, 5), (3, 3)]) == 1.0
    assert audit.krippendorff_alpha([(4, 4), (4, 4)]) is None
    assert audit.krippendorff_alpha([(1, None), (None, 2)]) is None  # nothing pairable


def _gold(spark):
    rows = [(a, s, f"u{i}", f"r{i}" if a == "scenario" else None, f"{a}:{s}:{i}", f"out {a} {i}")
            for a, s, k in (("persona", "reddit", 10), ("persona", "blogger", 2), ("scenario", "reddit", 10))
            for i in range(k)]
    return spark.createDataFrame(rows, "artifact string, source string, user_id string, record_id string, "
                                       "ledger_key string, output string")


def test_sample_is_stratified_seeded_and_sheet_marks_what_does_not_apply(spark, tmp_path):
    got = [r.asDict() for r in audit.sample(_gold(spark), 8, seed=1).collect()]
    strata = sorted((r["source"], r["artifact"]) for r in got)
    assert strata.count(("blogger", "persona")) == 2 and strata.count(("reddit", "persona")) == 3
    assert strata.count(("reddit", "scenario")) == 3 and len(got) == 8
    again = {r["ledger_key"] for r in audit.sample(_gold(spark), 8, seed=1).collect()}
    other = {r["ledger_key"] for r in audit.sample(_gold(spark), 8, seed=2).collect()}
    assert again == {r["ledger_key"] for r in got} and other != again
    path = tmp_path / "sheet.csv"
    assert audit.write_sheet(got, path) == 8
    rows = list(csv.DictReader(path.open()))
    persona = next(r for r in rows if r["artifact"] == "persona")
    assert persona["coverage"] == "" and persona["novelty"] == audit.NOT_APPLICABLE
    scenario = next(r for r in rows if r["artifact"] == "scenario")
    assert scenario["novelty"] == "" and scenario["conciseness"] == audit.NOT_APPLICABLE


def _fill(src, dst, rating):
    with src.open() as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0].keys())
    for i, r in enumerate(rows):
        for c in audit.CRITERIA:
            if r[c] == "":
                r[c] = str(rating(i, c))
    with dst.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def test_scores_of_two_filled_sheets(spark, tmp_path):
    sheet = tmp_path / "sheet.csv"
    audit.write_sheet([r.asDict() for r in audit.sample(_gold(spark), 6).collect()], sheet)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _fill(sheet, a, lambda i, c: 5 if i % 2 else 4)
    _fill(sheet, b, lambda i, c: 5 if i % 2 else 3)
    res = audit.score_sheets([a, b])
    ra, rb = audit.read_sheet(a), audit.read_sheet(b)
    assert res.raters == 2 and res.items == 6
    assert res.mean == pytest.approx((sum(ra.values()) + sum(rb.values())) / (len(ra) + len(rb)))
    units = sorted(ra)
    assert res.alpha == pytest.approx(audit.krippendorff_alpha([(ra[u], rb[u]) for u in units]))
    assert 0 < res.alpha < 1
    with pytest.raises(ValueError, match="two or more"):
        audit.score_sheets([a])


def test_a_rating_outside_one_to_five_names_the_file_row_and_column(spark, tmp_path):
    sheet = tmp_path / "sheet.csv"
    audit.write_sheet([r.asDict() for r in audit.sample(_gold(spark), 2).collect()], sheet)
    bad = tmp_path / "bad.csv"
    _fill(sheet, bad, lambda i, c: 7 if (i, c) == (1, "hallucination") else 3)
    with pytest.raises(ValueError, match=r"bad.csv:3: hallucination must be 1-5"):
        audit.read_sheet(bad)
