"""The HTML report: every section present, every embedded image a readable PNG, the parameter
table equal to the fit's, a missing input explained in place, and the report of a CLI fit folder."""

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import jax
import matplotlib
import numpy as np
import pytest

import nlme_ppl as nlp
from nlme_ppl.diagnostics import SurrogateWarning
from nlme_ppl.io import report, report_from_dir
from nlme_ppl.io._report import SECTIONS

matplotlib.use("Agg")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA = "examples/data/theophylline.csv"
SMALL = {"num_simulations": 50, "num_replicates": 20, "num_ebe_draws": 200, "max_individuals": 4}


class _Page(HTMLParser):
    """Section ids, image sources, notes, and the cells (with `data-value`) of tables by id."""

    def __init__(self):
        super().__init__()
        self.ids, self.images, self.notes, self.tables = [], [], [], {}
        self._table = self._row = None
        self._note = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "h2":
            self.ids.append(a.get("id"))
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "table" and a.get("id"):
            self._table = self.tables.setdefault(a["id"], [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._row.append(a.get("data-value", ""))
        elif tag == "p" and a.get("class") in ("note", "error"):
            self._note = [a["class"], ""]
            self.notes.append(self._note)

    def handle_data(self, data):
        if self._row is not None and self._row and self._row[-1] == "":
            self._row[-1] = data
        if self._note is not None:
            self._note[1] += data

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = self._row = None
        elif tag == "p":
            self._note = None


def _parse(path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _check_images(page: _Page) -> None:
    from PIL import Image

    assert page.images
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == PNG_MAGIC
        Image.open(io.BytesIO(raw)).verify()  # a complete, readable PNG


@pytest.fixture(scope="module")
def fitted():
    model = nlp.models.pk_oral_1cmt()
    data = nlp.read_nonmem(DATA)
    with pytest.warns(SurrogateWarning):  # a few Theophylline subjects have heavy-tailed weights at 100 draws
        fit = nlp.fit_map(nlp.populations.gaussian(model, fixed=("sigma_add",)), nlp.pretrained("pk_oral_1cmt"), data,
                          jax.random.key(0), num_starts=2, refine=False, max_draws=100)  # fmt: skip
    return data, fit


def test_report_sections_images_and_table(fitted, tmp_path):
    data, fit = fitted
    other = fit  # the comparison section's fallback (or compare()) gets two names
    path = report(fit, data, jax.random.key(1), path=tmp_path / "sub" / "report.html", fits={"a": fit, "b": other}, **SMALL)
    assert path == tmp_path / "sub" / "report.html" and path.is_file()
    page = _parse(path)
    assert page.ids == [sid for sid, _ in SECTIONS]
    assert not [n for n in page.notes if n[0] == "error"]
    _check_images(page)
    # every number of the parameter table is fit.table()'s (at full precision, in data-value)
    expected = fit.table()
    rows = page.tables["parameter-table"]
    header, body = rows[0], rows[1:]
    assert [r[0] for r in body] == list(expected.index)
    for col in expected.columns:
        got = np.array([float(r[header.index(col)]) for r in body])
        np.testing.assert_allclose(got, expected[col].to_numpy(float), rtol=1e-12, equal_nan=True)
    shrink = np.array([float(r[header.index("shrinkage_percent")]) for r in body])
    assert np.isfinite(shrink[[i for i, p in enumerate(expected.index) if p.startswith("sd[")]]).all()
    # the MCMC section says why it is empty
    assert any("no NUTS fit given" in text for _, text in page.notes)
    assert "comparison-table" in page.tables


def test_report_refuses_a_bad_key(fitted, tmp_path):
    data, fit = fitted
    with pytest.raises((TypeError, ValueError)):
        report(fit, data, 0, path=tmp_path / "r.html")


def test_report_from_dir(fitted, tmp_path):
    # A folder as `nlme-ppl fit` writes it (fit.json with its settings); the fit is redone from them.
    data, fit = fitted
    settings = {"model": "pk_oral_1cmt", "estimator": None, "data": str(Path(DATA).resolve()),
                "covariance": "diag", "fixed": ["sigma_add"], "fixed_treatment": "auto", "refine": False, "seed": 0,
                "num_draws": 100, "num_starts": 2, "max_draws": 100, "method": "map"}  # fmt: skip
    (tmp_path / "fit").mkdir()
    (tmp_path / "fit" / "fit.json").write_text(json.dumps({"settings": settings}))
    with pytest.warns(SurrogateWarning):
        path = report_from_dir(tmp_path / "fit", path=tmp_path / "r.html", **SMALL)
    page = _parse(path)
    assert page.ids == [sid for sid, _ in SECTIONS]
    _check_images(page)
    est = [float(r[1]) for r in page.tables["parameter-table"][1:]]
    np.testing.assert_allclose(est, fit.table()["estimate"].to_numpy(float), rtol=1e-9)  # same settings, same fit
    # and the same key gives the same report, byte for byte
    title = "Population fit: pk_oral_1cmt (map, fit)"
    again = report(fit, data, jax.random.key(0), path=tmp_path / "again.html", posterior=nlp.pretrained("pk_oral_1cmt"), title=title, **SMALL)
    assert again.read_text() == path.read_text()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "fit.json").write_text(json.dumps({"model": "pk_oral_1cmt"}))
    with pytest.raises(ValueError, match="lacks the settings"):
        report_from_dir(tmp_path / "bad", path=tmp_path / "x.html")
    with pytest.raises(ValueError, match="no fit.json"):
        report_from_dir(tmp_path, path=tmp_path / "x.html")
