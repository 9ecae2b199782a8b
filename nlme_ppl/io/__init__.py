"""Input and output: NONMEM-format data, estimator files (no pickle).

`report`, `report_from_dir` and `fit_from_dir` (the HTML report, `nlme_ppl.io._report`) are looked up the same way.
`load_posterior`, `save_posterior` and `pretrained` are those of `nlme_ppl.estimators`, looked up
when first used: the estimator-archive format (`nlme_ppl.io.serialization`) sits below the
estimators in the layer order, and the estimators import it, so this package must not import
them when it is itself imported.
"""

from typing import TYPE_CHECKING

from .nonmem import NonmemReport as NonmemReport, read_nonmem as read_nonmem, write_nonmem as write_nonmem
from .tables import read_table as read_table

__all__ = ["NonmemReport", "ReportWarning", "fit_from_dir", "load_posterior", "pretrained", "read_nonmem", "read_table", "report", "report_from_dir", "save_posterior", "write_nonmem"]

if TYPE_CHECKING:  # for type checkers and the API docs (griffe); at run time they are looked up when first used
    from ._report import ReportWarning as ReportWarning, fit_from_dir as fit_from_dir, report as report, report_from_dir as report_from_dir

_FROM_ESTIMATORS = ("load_posterior", "pretrained", "save_posterior")
#: The HTML report (`nlme_ppl.io._report`) reads fits and runs diagnostics: imported when first used.
_FROM_REPORT = ("ReportWarning", "fit_from_dir", "report", "report_from_dir")


def __getattr__(name: str):
    if name in _FROM_ESTIMATORS:
        from .. import estimators

        return getattr(estimators, name)
    if name in _FROM_REPORT:
        from . import _report

        return getattr(_report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
