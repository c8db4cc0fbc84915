"""Tables and plots from a results file: the same files from the same records, every time.

``build_report(results.jsonl, out_dir)`` writes

- ``results.csv`` and ``results.md``: one row per (method, pattern, sparsity), metrics averaged over
  seeds: clean accuracy / F1, the share of the most predicted class, a collapse flag, accuracy under
  each attack (with success rate and queries), on each shift and on the robust set;
- ``analysis.md`` (and ``analysis.csv``): per method, the essential sparsity (ES) of clean accuracy and
  ES_robust of every robust metric over the non-collapsed points, with the Spearman correlation of the
  clean and robust curves and its permutation p-value, also Holm-adjusted over the table's Spearman tests
  (:mod:`robustprune.eval.analysis` defines them);
  then every per-point exact McNemar test against the dense model, Holm-corrected per metric, with how
  many were made and which survive; and, when the sweep has ``random`` points, each other method's robust
  metrics against random pruning at the same pattern and sparsity (exact McNemar on the same examples, Holm
  per metric): the control that tells a robustness gain from drift toward chance; and the methods the
  papers compare (IMP against OMP, the robust ticket against the IMP and the random ticket, each
  calibration variant ``wanda@label`` against the plain method, point against point at the same pattern
  and sparsity; adversarial training and the EarlyRobust ticket against their dense baselines), exact
  McNemar, two-sided, Holm per metric;
- ``plots/<metric>.png``: the metric against sparsity per method (unstructured curves, N:M points as
  markers, the dense model dashed), ES marked by dotted lines, collapsed points crossed out;
- ``paper.md``, when the run's config names a ``paper_table``: the table shaped like that paper's main
  table (:mod:`robustprune.experiments.paper_tables`);
- ``protocol.md``, when the run's config follows a paper's protocol (config key ``paper``): every element
  of that protocol, the paper's value against this run's (:mod:`robustprune.experiments.protocol`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustprune.eval.analysis import (
    CurvePoint,
    McNemarResult,
    PairedEssentialSparsity,
    es_robust,
    essential_sparsity,
    essential_sparsity_paired,
    flag_collapsed,
    holm,
    mcnemar_exact,
    spearman_test,
    wilson_interval,
)
from robustprune.experiments.config import STRUCTURED_PATTERN, split_method
from robustprune.experiments.results import ResultsFile, ResultsMismatchError
from robustprune.experiments.tables import MASK_COSINE, Row
from robustprune.experiments.tables import column_name as _column_name
from robustprune.experiments.tables import fmt as _fmt
from robustprune.experiments.tables import fmt_accuracy as _fmt_accuracy
from robustprune.experiments.tables import markdown as _markdown
from robustprune.experiments.tables import robust_keys as _robust_keys
from robustprune.experiments.tables import set_of as _set_of


# Evaluated sets: "clean", "robust_set", "shift:<name>". Attacks run on clean examples.
def _set_name(set_key: str) -> str:
    return {"clean": "clean", "robust_set": "robust set"}.get(set_key, set_key[6:])


def _robust_metrics(record: dict[str, Any]) -> dict[str, float]:
    """Robust metrics of one record, keyed ``attack:<recipe>`` (Aua%), ``shift:<name>``, ``robust_set``."""
    out: dict[str, float] = {}
    for recipe, summary in sorted(record.get("attacks", {}).items()):
        metrics = summary["metrics"]
        out[f"attack:{recipe}"] = metrics["accuracy_under_attack"]
        out[f"attack:{recipe}:success_rate"] = metrics["success_rate"]
        out[f"attack:{recipe}:queries"] = metrics["avg_queries"]
    for name, result in sorted(record.get("shifts", {}).items()):
        out[f"shift:{name}"] = result["accuracy"]
    if "robust_set" in record:
        out["robust_set"] = record["robust_set"]["accuracy"]
    return out


def _accuracy_counts(record: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """``(correct, n)`` of each accuracy of a record (Aua%: failed attacks of the attacked examples);
    records written before evaluations carried ``n`` give none."""
    out: dict[str, tuple[int, int]] = {}
    if "n" in record.get("clean", {}):
        out["clean_accuracy"] = (round(record["clean"]["accuracy"] * record["clean"]["n"] / 100),
                                 record["clean"]["n"])
    for recipe, summary in record.get("attacks", {}).items():
        metrics = summary["metrics"]
        out[f"attack:{recipe}"] = (int(metrics["failed"]), int(metrics["examples"]))
    for name, result in record.get("shifts", {}).items():
        if "n" in result:
            out[f"shift:{name}"] = (round(result["accuracy"] * result["n"] / 100), result["n"])
    if "n" in record.get("robust_set", {}):
        robust = record["robust_set"]
        out["robust_set"] = (round(robust["accuracy"] * robust["n"] / 100), robust["n"])
    return out


def _set_results(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A record's evaluations of whole sets (with prediction balance and majority rate), by set key."""
    out = {f"shift:{name}": result for name, result in record.get("shifts", {}).items()}
    if "robust_set" in record:
        out["robust_set"] = record["robust_set"]
    return out


def aggregate(records: Sequence[dict[str, Any]]) -> tuple[list[Row], dict[str, float]]:
    """Rows averaged over seeds (sorted: dense first, then method, pattern, sparsity) and the majority-class
    rate of each evaluated set (``clean``, ``robust_set``, ``shift:<name>``)."""
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = defaultdict(list)
    majorities: dict[str, float] = {}
    for record in records:
        groups[(record["method"], record["pattern"], round(float(record["sparsity"]), 6))].append(record)
        if "clean" in record:
            majorities["clean"] = record["clean"]["majority_rate"]
        for set_key, result in _set_results(record).items():
            majorities[set_key] = result["majority_rate"]
    rows = []
    for (method, pattern, sparsity), members in groups.items():
        values: dict[str, list[float]] = defaultdict(list)
        balance: dict[int, list[float]] = defaultdict(list)
        counts: dict[str, list[tuple[int, int]]] = defaultdict(list)
        set_balance: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for record in members:
            for set_key, result in _set_results(record).items():
                for cls, share in result["prediction_balance"].items():
                    set_balance[set_key][int(cls)].append(share)
            for key, count in _accuracy_counts(record).items():
                counts[key].append(count)
            if "clean" in record:
                values["clean_accuracy"].append(record["clean"]["accuracy"])
                values["clean_f1"].append(record["clean"]["f1"])
                for cls, share in record["clean"]["prediction_balance"].items():
                    balance[int(cls)].append(share)
            for key, value in _robust_metrics(record).items():
                values[key].append(value)
            values["measured_sparsity"].append(record.get("measured_sparsity", 0.0))
            details = record.get("details") or {}
            if "cosine_vs_omp_pretrained" in details:  # an IMP ticket's mask against OMP of the pre-trained model
                values[MASK_COSINE].append(float(details["cosine_vs_omp_pretrained"]))
            for key in ("parameters", "parameters_without_embeddings", "prune_seconds", "finetune_seconds"):
                if key in record:
                    values[key].append(float(record[key]))
        intervals = {key: wilson_interval(sum(c for c, _ in pairs), sum(n for _, n in pairs))
                     for key, pairs in counts.items() if len(pairs) == len(members)}
        spread = {key: statistics.stdev(v) for key, v in values.items() if key in intervals and len(v) > 1}
        rows.append(Row(method, pattern, sparsity, len(members),
                        {k: sum(v) / len(v) for k, v in values.items()},
                        {c: sum(v) / len(v) for c, v in sorted(balance.items())}, intervals, spread,
                        {k: {c: sum(v) / len(v) for c, v in sorted(b.items())} for k, b in set_balance.items()},
                        any(record.get("resumed", False) for record in members)))
    rows.sort(key=lambda r: (r.method != "dense", r.method, r.pattern != "unstructured", r.pattern, r.sparsity))
    return rows, majorities


def _collapsed_flags(rows: Sequence[Row], majorities: dict[str, float]) -> list[dict[str, bool]]:
    """Per row, per evaluated set: has the point collapsed onto one class on that set? Clean and shifted
    sets: accuracy within 2 points of the set's majority rate, or >= 90 % of predictions in one class; the
    robust set: the prediction share alone (adversarial sets put even the dense model below chance)."""
    flags: list[dict[str, bool]] = [{} for _ in rows]
    set_keys = ["clean"] + sorted({k for r in rows for k in r.set_balances})
    for set_key in set_keys:
        metric = "clean_accuracy" if set_key == "clean" else set_key
        measured = [i for i, r in enumerate(rows) if metric in r.metrics]
        if not measured:
            continue
        balance = [(rows[i].balance if set_key == "clean" else rows[i].set_balances.get(set_key)) or None
                   for i in measured]
        points = [CurvePoint(rows[i].sparsity, rows[i].metrics[metric], b) for i, b in zip(measured, balance)]
        majority = None if set_key == "robust_set" else majorities.get(set_key)
        for i, flag in zip(measured, flag_collapsed(points, majority)):
            flags[i][set_key] = flag
    return flags


# facts of a point, not evaluations
_NOT_METRICS = ("measured_sparsity", "parameters", "parameters_without_embeddings", "prune_seconds",
                "finetune_seconds", MASK_COSINE)


def results_table(rows: Sequence[Row], collapsed: Sequence[dict[str, bool]], *, split_intervals: bool = False
                  ) -> tuple[list[str], list[list[str]]]:
    """The results table: one row per point. Accuracies read ``mean [low, high]`` (``± sd`` with several
    seeds); with ``split_intervals`` (the CSV) the interval and the spread get columns of their own."""
    metric_keys = sorted({k for r in rows for k in r.metrics} - {"clean_accuracy", "clean_f1", *_NOT_METRICS})
    accuracy_keys = {k for r in rows for k in r.intervals}

    def columns(key: str, name: str) -> list[str]:
        if not split_intervals or key not in accuracy_keys:
            return [name]
        return [name, f"{name} 95% low", f"{name} 95% high", f"{name} sd over seeds"]

    def cells(row: Row, key: str) -> list[str]:
        if not split_intervals:
            return [_fmt_accuracy(row, key) if key in accuracy_keys else _fmt(row.metrics.get(key))]
        if key not in accuracy_keys:
            return [_fmt(row.metrics.get(key))]
        low, high = row.intervals.get(key, (None, None))
        return [_fmt(row.metrics.get(key)), _fmt(low, 2), _fmt(high, 2), _fmt(row.spread.get(key), 2)]

    other_sets = sorted({k for r in rows for k in r.set_balances})
    header = ["method", "pattern", "sparsity", "measured sparsity", "seeds", *columns("clean_accuracy", "clean acc"),
              "clean F1", "top class share", *[f"{_set_name(k)} top class share" for k in other_sets],
              "collapsed on", *[name for k in metric_keys for name in columns(k, _column_name(k))]]
    body = []
    for row, flags in zip(rows, collapsed):
        tops = [max(b.values()) if b else None for b in [row.balance, *[row.set_balances.get(k) for k in other_sets]]]
        where = ", ".join(_set_name(k) for k, flag in flags.items() if flag) or "no"
        body.append([row.method, row.pattern, f"{row.sparsity:.2f}", f"{row.metrics.get('measured_sparsity', 0):.4f}",
                     str(row.seeds), *cells(row, "clean_accuracy"), _fmt(row.metrics.get("clean_f1")),
                     *[_fmt(None if top is None else 100 * top) for top in tops], where,
                     *[cell for k in metric_keys for cell in cells(row, k)]])
    return header, body


ANALYSIS_CLEAN_COLUMNS = 6  # method, points, collapsed, ES, ES paired, ES interval
ANALYSIS_COLUMNS_PER_METRIC = 6  # ES_robust, ES_robust paired, Spearman, its p, its Holm p, points excluded
ALPHA = 0.05


def _correct_vectors(records: Sequence[dict[str, Any]], folder: Path) -> dict[tuple[str, str, float], dict[str, Any]]:
    """Per point, per accuracy metric, whether each example was answered correctly, read from the
    records' per-example files, the seeds' vectors concatenated in seed order (so they pair with the
    dense model's). Points whose files are missing get none."""
    import numpy as np

    by_point: dict[tuple[str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_point[(record["method"], record["pattern"], round(float(record["sparsity"]), 6))].append(record)
    out: dict[tuple[str, str, float], dict[str, Any]] = {}
    for point, members in by_point.items():
        vectors: dict[str, list[Any]] = defaultdict(list)
        for record in sorted(members, key=lambda r: r.get("seed", 0)):
            path = record.get("files", {}).get("predictions")
            if path is None or not (folder / path).is_file():
                vectors.clear()
                break
            data = json.loads((folder / path).read_text(encoding="utf-8"))
            for key, entry in [("clean_accuracy", data.get("clean")), ("robust_set", data.get("robust_set")),
                               *[(f"shift:{k}", v) for k, v in data.get("shifts", {}).items()]]:
                if entry is not None:
                    vectors[key].append(np.asarray(entry["predictions"]) == np.asarray(entry["labels"]))
            for recipe, entry in data.get("attacks", {}).items():
                vectors[f"attack:{recipe}"].append(np.asarray(entry["status"]) == "failed")
        out[point] = {key: np.concatenate(parts) for key, parts in vectors.items() if len(parts) == len(members)}
    return out


def _alternative(key: str) -> str:
    """The one-sided claim a per-point test of ``key`` makes: clean accuracy drops below the dense model's
    ("less"), a robust metric rises above it ("greater", the gain the robustness papers report)."""
    return "less" if key == "clean_accuracy" else "greater"


def _paired(curve: Sequence[Row], dense: Row, key: str, vectors: dict[tuple[str, str, float], dict[str, Any]],
            epsilon: float) -> tuple[PairedEssentialSparsity, list[McNemarResult]] | None:
    dense_vector = vectors.get(_point_of(dense), {}).get(key)
    point_vectors = [vectors.get(_point_of(r), {}).get(key) for r in curve]
    if dense_vector is None or any(v is None or v.shape != dense_vector.shape for v in point_vectors) or not curve:
        return None
    tests = [mcnemar_exact(dense_vector, v, _alternative(key)) for v in point_vectors]
    return essential_sparsity_paired([r.sparsity for r in curve], point_vectors, dense_vector, epsilon, ALPHA), tests


def _point_of(row: Row) -> tuple[str, str, float]:
    return row.method, row.pattern, round(float(row.sparsity), 6)


@dataclass(frozen=True)
class PairedCurve:
    """The paired tests of one method's curve on one metric: the points tested (not collapsed on the
    metric's set), the paired-bootstrap ES (``result``) and per point the exact McNemar test against the
    dense model, one-sided in the direction :func:`_alternative` gives (``tests``); both None without
    per-example files."""

    points: list[Row]
    result: PairedEssentialSparsity | None
    tests: list[McNemarResult] | None = None


def paired_curves(rows: Sequence[Row], collapsed: Sequence[dict[str, bool]], epsilon: float,
                  vectors: dict[tuple[str, str, float], dict[str, Any]]) -> dict[tuple[str, str], PairedCurve]:
    """``(method, metric key) -> PairedCurve`` for the clean accuracy and every robust metric."""
    dense = next((r for r in rows if r.method == "dense"), None)
    out: dict[tuple[str, str], PairedCurve] = {}
    if dense is None:
        return out
    for method in sorted({r.method for r in rows if r.method != "dense" and r.pattern == "unstructured"}):
        curve = [(r, f) for r, f in zip(rows, collapsed) if r.method == method and r.pattern == "unstructured"]
        for key in ["clean_accuracy", *_robust_keys(rows)]:
            if key == "clean_accuracy":
                points = [r for r, _ in curve]
            else:
                points = [r for r, f in curve if not f.get(_set_of(key), False)]
            if points and key in dense.metrics and all(key in r.metrics for r in points):
                done = _paired(points, dense, key, vectors, epsilon)
                out[(method, key)] = PairedCurve(points, *(done or (None, None)))
    return out


def analysis_table(rows: Sequence[Row], collapsed: Sequence[dict[str, bool]], epsilon: float,
                   paired: dict[tuple[str, str], PairedCurve] | None = None
                   ) -> tuple[list[str], list[list[str]]]:
    """Per method (unstructured curve, dense model at sparsity 0): ES, and per robust metric ES_robust and
    the Spearman correlation of the clean and robust curves, both over the points not collapsed on the
    set that metric is measured on (Spearman: nor on the clean set), with how many were excluded.

    With ``paired`` (:func:`paired_curves`), ES and ES_robust are also decided by paired bootstrap tests
    against the dense model (:func:`essential_sparsity_paired`, level :data:`ALPHA`), and ES's own 95 %
    bootstrap interval is given. Spearman's p-value is a two-sided permutation test
    (:func:`~robustprune.eval.analysis.spearman_test`), also given Holm-adjusted over every Spearman test in
    the table (:func:`~robustprune.eval.analysis.holm`): one family per sweep, as for the per-point tests."""
    paired = paired or {}

    def tested(method: str, key: str) -> PairedEssentialSparsity | None:
        entry = paired.get((method, key))
        return None if entry is None else entry.result

    dense = next((r for r in rows if r.method == "dense"), None)
    robust_keys = _robust_keys(rows)
    header = ["method", "points", "collapsed on clean", "ES (clean)", "ES (clean, paired test)",
              "ES (clean) 95% interval"]
    for key in robust_keys:
        name = _column_name(key)
        header += [f"ES_robust ({name})", f"ES_robust ({name}, paired test)", f"Spearman clean vs {name}",
                   f"Spearman p ({name}, permutation)", f"Spearman p ({name}, Holm)",
                   f"excluded as collapsed ({name})"]
    body = []
    if dense is None or "clean_accuracy" not in dense.metrics:
        return header, body
    methods = sorted({r.method for r in rows if r.method != "dense" and r.pattern == "unstructured"})
    spearman_cells: list[tuple[list[str], int, float]] = []  # (line, column of its Holm p, raw p)
    for method in methods:
        curve = [(r, f) for r, f in zip(rows, collapsed) if r.method == method and r.pattern == "unstructured"]
        sparsities = [r.sparsity for r, _ in curve]
        clean = [r.metrics["clean_accuracy"] for r, _ in curve]
        clean_flags = [f.get("clean", False) for _, f in curve]
        clean_test = tested(method, "clean_accuracy")
        line = [method, str(len(curve)), str(sum(clean_flags)),
                _fmt(essential_sparsity(sparsities, clean, dense.metrics["clean_accuracy"], epsilon), 2),
                "" if clean_test is None else _fmt(clean_test.es, 2),
                "" if clean_test is None else f"[{clean_test.es_interval[0]:.2f}, {clean_test.es_interval[1]:.2f}]"]
        for key in robust_keys:
            if key not in dense.metrics or any(key not in r.metrics for r, _ in curve):
                line += [""] * ANALYSIS_COLUMNS_PER_METRIC
                continue
            robust = [r.metrics[key] for r, _ in curve]
            flags = [f.get(_set_of(key), False) for _, f in curve]
            es = es_robust(sparsities, robust, dense.metrics[key], flags, epsilon)
            robust_test = tested(method, key)
            paired_cell = ("0.00" if all(flags) else "" if robust_test is None else _fmt(robust_test.es, 2))
            kept = [i for i, (f, c) in enumerate(zip(flags, clean_flags)) if not (f or c)]
            rho, p = spearman_test([dense.metrics["clean_accuracy"], *[clean[i] for i in kept]],
                                   [dense.metrics[key], *[robust[i] for i in kept]]) if kept else (math.nan, math.nan)
            line += [_fmt(es, 2), paired_cell, _fmt(rho, 3), _fmt(p, 4), "", str(len(curve) - len(kept))]
            if not math.isnan(p):
                spearman_cells.append((line, len(line) - 2, p))
        body.append(line)
    for (line, column, _), adjusted in zip(spearman_cells, holm([p for *_, p in spearman_cells])):
        line[column] = _fmt(adjusted, 4)
    return header, body


@dataclass(frozen=True)
class PointTest:
    """One per-point test of a metric's family: the exact McNemar test of ``row`` against the dense model
    and its Holm-adjusted p-value over all tests of that metric in the sweep."""

    key: str
    method: str
    row: Row
    test: McNemarResult
    adjusted: float

    @property
    def survives(self) -> bool:
        return self.adjusted <= ALPHA


def point_tests(paired: dict[tuple[str, str], PairedCurve]) -> dict[str, list[PointTest]]:
    """Per metric key (clean accuracy first), the per-point exact McNemar tests of every method's points,
    one family per metric: the p-values are Holm-adjusted over that family (:func:`holm`)."""
    families: dict[str, list[tuple[str, Row, McNemarResult]]] = defaultdict(list)
    for (method, key), entry in sorted(paired.items(), key=lambda item: (item[0][1] != "clean_accuracy", item[0])):
        for row, test in zip(entry.points, entry.tests or []):
            families[key].append((method, row, test))
    out: dict[str, list[PointTest]] = {}
    for key, members in families.items():
        adjusted = holm([test.pvalue for _, _, test in members])
        out[key] = [PointTest(key, method, row, test, p) for (method, row, test), p in zip(members, adjusted)]
    return out


def _metric_name(key: str) -> str:
    return "clean acc" if key == "clean_accuracy" else _column_name(key)


def _survivors(families: dict[str, list[Any]], what: str, name: Callable[[Any], str]) -> list[str]:
    """One line per metric: how many tests of the family were made and which survive Holm's correction."""
    lines = []
    for key, family in families.items():
        kept = [t for t in family if t.survives]
        which = ": " + ", ".join(name(t) for t in kept) if kept else ""
        verb = "survives" if len(kept) == 1 else "survive"
        lines.append(f"- {_metric_name(key)}{what}: {len(family)} tests, {len(kept)} {verb} Holm at {ALPHA:g}{which}.")
    return lines


def tests_section(families: dict[str, list[PointTest]]) -> str:
    """The part of ``analysis.md`` that lists the per-point tests: per metric how many were made and which
    survive Holm's correction, then one table line per test."""
    if not families:
        return ""
    intro = ("Per-point tests: the exact McNemar test of each point against the dense model on the same examples "
             "(binomial test on the discordant pairs: `lost` = right only for the dense model, `gained` = right "
             "only for the point), one-sided in the direction of the claim (clean accuracy: below the dense "
             "model; robust metrics: above it), p-values Holm-adjusted over all the tests of one metric in this "
             f"sweep; a point survives when its adjusted p is <= {ALPHA:g}.")
    lines = ["", intro, "", *_survivors(families, "", lambda t: f"{t.method} {t.row.sparsity:.2f}")]
    header = ["metric", "method", "sparsity", "lost", "gained", "p (exact McNemar, one-sided)", "p (Holm)",
              "survives"]
    body = [[_metric_name(t.key), t.method, f"{t.row.sparsity:.2f}", str(t.test.lost), str(t.test.gained),
             f"{t.test.pvalue:.4g}", f"{t.adjusted:.4g}", "yes" if t.survives else "no"]
            for family in families.values() for t in family]
    return "\n".join(lines) + "\n\n" + _markdown(header, body)


CONTROL = "random"  # the control method: uniformly random masks at the same sparsity and pattern


@dataclass(frozen=True)
class ReferenceTest:
    """One point against a reference point on one metric, on the same examples: the exact McNemar test with
    the reference as the baseline (``lost``: right only under the reference, ``gained``: right only under the
    point) and its Holm-adjusted p-value over all the tests of that metric in its family. The control family has random pruning at the same pattern and sparsity as the
    reference and asks, one-sided, whether the method scores higher; the comparison family pairs the methods
    and models the papers compare and asks, two-sided, whether the two differ."""

    key: str
    row: Row
    reference: Row
    test: McNemarResult
    adjusted: float

    @property
    def method(self) -> str:
        return self.row.method

    @property
    def survives(self) -> bool:
        return self.adjusted <= ALPHA


def _reference_tests(rows: Sequence[Row], vectors: dict[tuple[str, str, float], dict[str, Any]],
                     keys: Sequence[str], references_of: Callable[[Row], list[Row]], alternative: str
                     ) -> dict[str, list[ReferenceTest]]:
    """Per metric key, every row tested against each of its ``references_of`` rows on the same examples
    (:func:`~robustprune.eval.analysis.mcnemar_exact`); one Holm family per metric. Pairs without
    per-example files on both sides are not tested."""
    families: dict[str, list[tuple[Row, Row, McNemarResult]]] = defaultdict(list)
    for key in keys:
        for row in rows:
            for reference in references_of(row):
                ours = vectors.get(_point_of(row), {}).get(key)
                theirs = vectors.get(_point_of(reference), {}).get(key)
                if ours is None or theirs is None or ours.shape != theirs.shape:
                    continue
                families[key].append((row, reference, mcnemar_exact(theirs, ours, alternative)))
    return {key: [ReferenceTest(key, row, reference, test, p)
                  for (row, reference, test), p in zip(members, holm([test.pvalue for *_, test in members]))]
            for key, members in families.items()}


def _by_point(rows: Sequence[Row]) -> dict[tuple[str, str, float], Row]:
    return {(r.method, r.pattern, round(float(r.sparsity), 6)): r for r in rows}


def control_tests(rows: Sequence[Row], vectors: dict[tuple[str, str, float], dict[str, Any]]
                  ) -> dict[str, list[ReferenceTest]]:
    """Per robust metric key, every method's point (any pattern, any method but the dense model and the
    control) tested against the :data:`CONTROL` point of the same pattern and sparsity, paired on the same
    examples (exact McNemar, one-sided "greater"); one Holm family per metric. Why: on a fixed adversarial
    set the dense model scores below chance, so any pruning that pushes predictions toward chance raises the
    robust accuracy; only a gain over random pruning at the same sparsity is more than that drift."""
    points = _by_point(rows)

    def control(row: Row) -> list[Row]:
        found = points.get((CONTROL, row.pattern, round(float(row.sparsity), 6)))
        return [] if row.method in ("dense", CONTROL) or found is None else [found]

    return _reference_tests(rows, vectors, _robust_keys(rows), control, "greater")


# The methods the papers compare point by point, (method, against): Jaiswal et al.'s LTH against OMP (Figure
# 9), Zheng et al.'s robust ticket against the IMP and the random ticket (Table 1); each point against the
# reference's point of the same pattern and sparsity.
PAPER_COMPARISONS = (("imp", "magnitude"), ("robust_ticket", "imp"), ("robust_ticket", "random_ticket"))
# The models the papers set against dense baselines, (method, against): adversarial training against plain
# fine-tuning (both papers' Table 1), the EarlyRobust ticket against both (Xi et al., Table 1); each point
# against every point of the baseline (PGD and FreeLB are two points of ``adversarial``).
BASELINE_COMPARISONS = (("adversarial", "dense"), ("early_robust", "dense"), ("early_robust", "adversarial"))


def _model_name(row: Row) -> str:
    """A compared model's name: the method, with its pattern for a dense model that has one (adversarial
    training's ``pgd`` / ``freelb``)."""
    if row.sparsity == 0 and row.pattern not in ("dense", "unstructured"):
        return f"{row.method} ({row.pattern})"
    return row.method


def comparison_tests(rows: Sequence[Row], vectors: dict[tuple[str, str, float], dict[str, Any]]
                     ) -> dict[str, list[ReferenceTest]]:
    """Per metric key (clean accuracy first), the methods the papers compare (:data:`PAPER_COMPARISONS`) and
    every calibration variant (``wanda@advglue``, calibrated on ``pruning.calibration.compare``'s source)
    against the same method calibrated on the sweep's own source (``wanda``), each point against its
    partner at the same pattern and sparsity; and the models the papers set against dense baselines
    (:data:`BASELINE_COMPARISONS`), against every point of the baseline. All on the same examples (exact
    McNemar, two-sided: do the two differ, either way); one Holm family per metric. Empty when the sweep
    holds no such pair."""
    points = _by_point(rows)
    same_point: dict[str, list[str]] = defaultdict(list)
    for method, reference in PAPER_COMPARISONS:
        same_point[method].append(reference)
    for method in {r.method for r in rows}:
        base, label = split_method(method)
        if label is not None:
            same_point[method].append(base)
    baselines: dict[str, list[str]] = defaultdict(list)
    for method, reference in BASELINE_COMPARISONS:
        baselines[method].append(reference)

    def partners(row: Row) -> list[Row]:
        at_point = (points.get((other, row.pattern, round(float(row.sparsity), 6)))
                    for other in same_point.get(row.method, []))
        return ([r for r in at_point if r is not None]
                + [r for other in baselines.get(row.method, []) for r in rows if r.method == other])

    return _reference_tests(rows, vectors, ["clean_accuracy", *_robust_keys(rows)], partners, "two-sided")


def _reference_section(intro: str, what: str, reference_name: str, side: str,
                       families: dict[str, list[ReferenceTest]], collapsed: dict[int, dict[str, bool]],
                       label: Callable[[ReferenceTest], str]) -> str:
    """A part of ``analysis.md`` listing one family of reference tests: per metric how many were made and
    which survive Holm's correction, then one table line per test (``collapsed``: the flags of each row, by
    ``id(row)``, on the metric's set; ``label``: what the method column says of a test)."""
    if not families:
        return ""
    lines = ["", intro, "", *_survivors(families, what, lambda t: f"{label(t)}{_at(t)}")]
    header = ["metric", "method", "pattern", "sparsity", "method acc", f"{reference_name} acc", "lost", "gained",
              f"p (exact McNemar, {side})", "p (Holm)", "survives", f"collapsed (method / {reference_name})"]

    def flag(row: Row, key: str) -> str:
        return "yes" if collapsed.get(id(row), {}).get(_set_of(key), False) else "no"

    body = [[_metric_name(t.key), label(t), t.row.pattern, f"{t.row.sparsity:.2f}", _fmt(t.row.metrics.get(t.key)),
             _fmt(t.reference.metrics.get(t.key)), str(t.test.lost), str(t.test.gained), f"{t.test.pvalue:.4g}",
             f"{t.adjusted:.4g}", "yes" if t.survives else "no", f"{flag(t.row, t.key)} / {flag(t.reference, t.key)}"]
            for family in families.values() for t in family]
    return "\n".join(lines) + "\n\n" + _markdown(header, body)


def control_section(families: dict[str, list[ReferenceTest]], collapsed: dict[int, dict[str, bool]]) -> str:
    """The part of ``analysis.md`` that compares every method with random pruning (:func:`control_tests`)."""
    intro = (f"Against random pruning (a control): each method's point against the `{CONTROL}` point of the same "
             "pattern and sparsity on the same examples (exact McNemar: `lost` = right only under random "
             "pruning, `gained` = right only under the method), one-sided (the method scores higher), p-values "
             "Holm-adjusted over all the control tests of one metric. On a fixed adversarial set the dense model "
             "scores below chance, so pruning that only pushes predictions toward chance raises robust accuracy "
             "too; a gain over the dense model that is not also a gain over random pruning at the same sparsity "
             f"cannot be told from that drift. A test survives when its adjusted p is <= {ALPHA:g}.")
    return _reference_section(intro, " vs random pruning", "random", "one-sided", families, collapsed,
                              lambda t: t.method)


def comparison_section(families: dict[str, list[ReferenceTest]], collapsed: dict[int, dict[str, bool]]) -> str:
    """The part of ``analysis.md`` that compares methods point by point (:func:`comparison_tests`)."""
    intro = ("Methods compared: the pairs the papers compare (the IMP ticket against OMP; the robust ticket "
             "against the IMP and the random ticket) and each calibration variant `method@label` against the "
             "plain method (calibrated on `pruning.calibration.source`), point against point at the same pattern "
             "and sparsity; adversarial training against plain fine-tuning and the EarlyRobust ticket against "
             "both, model against model. All on the same examples (exact McNemar: `lost` = right only under the "
             "reference, the second name, `gained` = right only under the first), two-sided, p-values "
             "Holm-adjusted over all "
             f"the comparisons of one metric. A test survives when its adjusted p is <= {ALPHA:g}.")
    return _reference_section(intro, " between methods", "reference", "two-sided", families, collapsed,
                              lambda t: f"{_model_name(t.row)} vs {_model_name(t.reference)}")


def _pattern_label(row: Row) -> str:
    return f"{row.sparsity:.2f}" if row.pattern == "unstructured" else f"{row.pattern} ({row.sparsity:.2f})"


def _at(test: ReferenceTest) -> str:
    """`` 0.50`` for a test of two pruned points at the same pattern and sparsity; nothing for a model against
    a dense baseline, where the names say it all."""
    same = (test.row.pattern, test.row.sparsity) == (test.reference.pattern, test.reference.sparsity)
    return f" {_pattern_label(test.row)}" if same and test.row.sparsity > 0 else ""


def _where(tests: Sequence[ReferenceTest], note: Callable[[ReferenceTest], str] = lambda _: "") -> str:
    """The points of ``tests`` in words: ``0.50 (79.6 vs 77.2)``, the point's score then the reference's."""
    return ", ".join(f"{_pattern_label(t.row)} ({t.row.metrics[t.key]:.1f} vs {t.reference.metrics[t.key]:.1f}"
                     f"{note(t)})" for t in tests)


def control_findings(families: dict[str, list[ReferenceTest]]) -> list[str]:
    """In words, per method and robust metric: whether any of its points scores significantly above random
    pruning at the same sparsity and pattern (surviving Holm over that metric's control tests)."""
    lines = []
    for key, family in families.items():
        name = _column_name(key)
        how = f"exact McNemar, one-sided, Holm over the {len(family)} control tests of {name}"
        for method in sorted({t.method for t in family}):
            above = [t for t in family if t.method == method and t.survives]
            if above:
                lines.append(f"{method}: {name} is significantly above random pruning's at the same sparsity and "
                             f"pattern at {_where(above)} ({how}).")
            else:
                lines.append(f"{method}: {name} is never significantly above random pruning's at the same sparsity "
                             f"and pattern ({how}): any gain over the dense model there cannot be told from drift "
                             "toward chance.")
    return lines


def comparison_findings(families: dict[str, list[ReferenceTest]], collapsed: dict[int, dict[str, bool]]
                        ) -> list[str]:
    """In words, per compared pair and metric: where the first method's score differs significantly from
    the second's at the same pattern and sparsity (surviving Holm over that metric's comparisons), and which
    side had collapsed there (``collapsed``: each row's flags, by ``id(row)``): on an adversarial set a
    collapsed point's difference is drift toward chance, not robustness."""

    def state(t: ReferenceTest) -> str:
        fallen = [_model_name(row) for row in (t.row, t.reference)
                  if collapsed.get(id(row), {}).get(_set_of(t.key), False)]
        return f"; collapsed: {', '.join(fallen)}" if fallen else ""

    lines = []
    for key, family in families.items():
        name = _metric_name(key)
        how = f"exact McNemar, two-sided, Holm over the {len(family)} comparisons of {name}"
        for method, reference in sorted({(_model_name(t.row), _model_name(t.reference)) for t in family}):
            pair = [t for t in family if (_model_name(t.row), _model_name(t.reference)) == (method, reference)]
            differs = [t for t in pair if t.survives]
            if len(pair) == 1 and not _at(pair[0]):  # a model against a dense baseline
                (t,) = pair
                verdict = "differs significantly" if differs else "does not differ significantly"
                lines.append(f"{method} vs {reference}: {name} {verdict} ({t.row.metrics[key]:.1f} vs "
                             f"{t.reference.metrics[key]:.1f}{state(t)}; {how}).")
            elif differs:
                lines.append(f"{method} vs {reference}: {name} differs significantly at {_where(differs, state)}; "
                             f"at the other {len(pair) - len(differs)} of {len(pair)} points it does not ({how}).")
            else:
                lines.append(f"{method} vs {reference}: {name} never differs significantly at the same sparsity "
                             f"and pattern ({len(pair)} point{'' if len(pair) == 1 else 's'}; {how}).")
    return lines


def findings(rows: Sequence[Row], paired: dict[tuple[str, str], PairedCurve], majorities: dict[str, float]
             ) -> list[str]:
    """What the numbers support, in plain words: for each pair of methods whether one keeps clean accuracy
    to a significantly higher sparsity (paired bootstrap over the same resamples of the examples), and for
    each method and robust metric whether a non-collapsed point scores significantly above the dense
    model (exact McNemar, one-sided, surviving Holm's correction over that metric's tests:
    :func:`point_tests`), next to what always answering the majority class would score."""
    dense = next((r for r in rows if r.method == "dense"), None)
    lines: list[str] = []
    clean = {method: entry.result for (method, key), entry in paired.items()
             if key == "clean_accuracy" and entry.result is not None}
    methods = sorted(clean)
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            ra, rb = clean[a], clean[b]
            higher = sum(x > y for x, y in zip(ra.es_resampled, rb.es_resampled)) / len(ra.es_resampled)
            lower = sum(x < y for x, y in zip(ra.es_resampled, rb.es_resampled)) / len(ra.es_resampled)
            if higher >= 1 - ALPHA / 2:
                verdict = f"{a} keeps clean accuracy to a significantly higher sparsity than {b}"
            elif lower >= 1 - ALPHA / 2:
                verdict = f"{b} keeps clean accuracy to a significantly higher sparsity than {a}"
            else:
                verdict = f"{a} and {b} are not distinguishable by how far they keep clean accuracy"
            lines.append(f"{verdict} (fixed-rule ES {_fmt(ra.es_interval[0], 2)}-{_fmt(ra.es_interval[1], 2)} vs "
                         f"{_fmt(rb.es_interval[0], 2)}-{_fmt(rb.es_interval[1], 2)} over the resamples; {a} higher "
                         f"in {100 * higher:.0f}%, lower in {100 * lower:.0f}% of them).")
    families = point_tests(paired)
    for (method, key), entry in sorted(paired.items()):
        if key == "clean_accuracy" or entry.tests is None or dense is None:
            continue
        name = _column_name(key)
        baseline = majorities.get(_set_of(key))
        chance = "" if baseline is None else f"; always answering the majority class would score {baseline:.1f}"
        how = f"exact McNemar, one-sided, Holm over the {len(families[key])} tests of {name}"
        rises = [t.row for t in families[key] if t.method == method and t.survives]
        if rises:
            where = ", ".join(f"{r.sparsity:.2f} ({r.metrics[key]:.1f})" for r in rises)
            lines.append(f"{method}: {name} rises significantly above the dense model's {dense.metrics[key]:.1f} at "
                         f"sparsity {where}, at points not collapsed on that set ({how}){chance}.")
        else:
            lines.append(f"{method}: {name} never rises significantly above the dense model's "
                         f"{dense.metrics[key]:.1f} at a non-collapsed point ({how}){chance}.")
    return lines


def _csv(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(body)
    return buffer.getvalue()


_NM_MARKERS = ("s", "D", "^", "v", "P")  # one marker per N:M pattern
_CURVE_PATTERNS = {"unstructured": "-", STRUCTURED_PATTERN: "--"}  # patterns drawn as curves over sparsity


def _dense_baseline(row: Row) -> bool:
    """A dense point (pattern ``dense``, or an adversarial-training baseline named by its adversary)."""
    return row.pattern == "dense" or row.method == "adversarial"


def _plot(rows: Sequence[Row], collapsed: Sequence[bool], key: str, label: str, path: Path,
          es_by_method: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    dense = next((r for r in rows if r.method == "dense" and key in r.metrics), None)
    if dense is not None:
        ax.axhline(dense.metrics[key], color="gray", linestyle="--", linewidth=1, label="dense")
    methods = sorted({r.method for r in rows if r.method != "dense"})
    nm_patterns = {r.pattern for r in rows if r.pattern not in _CURVE_PATTERNS and not _dense_baseline(r)}
    for index, method in enumerate(methods):
        color = colors[index % len(colors)]
        for pattern, style in _CURVE_PATTERNS.items():
            curve = [(r, f) for r, f in zip(rows, collapsed)
                     if r.method == method and r.pattern == pattern and key in r.metrics]
            if not curve:
                continue
            xs = [0.0] + [r.sparsity for r, _ in curve] if dense else [r.sparsity for r, _ in curve]
            ys = ([dense.metrics[key]] if dense else []) + [r.metrics[key] for r, _ in curve]
            ax.plot(xs, ys, marker="o", color=color, linestyle=style,
                    label=method if pattern == "unstructured" else f"{method} {pattern}")
            points = ([dense] if dense else []) + [r for r, _ in curve]
            if all(key in r.intervals for r in points):  # the 95 % Wilson band around the curve
                ax.fill_between(xs, [r.intervals[key][0] for r in points], [r.intervals[key][1] for r in points],
                                color=color, alpha=0.12, linewidth=0)
            for r, flag in curve:
                if flag:
                    ax.plot(r.sparsity, r.metrics[key], marker="x", color="black", markersize=10)
        for r in rows:  # a dense baseline of another method (adversarial training): a star at sparsity 0
            if r.method == method and _dense_baseline(r) and key in r.metrics:
                ax.plot(0.0, r.metrics[key], marker="*", color=color, linestyle="none", markersize=12,
                        label=method if r.pattern == "dense" else f"{method} {r.pattern}")
        for r, flag in zip(rows, collapsed):
            if r.method == method and r.pattern not in _CURVE_PATTERNS and not _dense_baseline(r) \
                    and key in r.metrics:
                marker = _NM_MARKERS[sorted(nm_patterns).index(r.pattern) % len(_NM_MARKERS)]
                ax.plot(r.sparsity, r.metrics[key], marker=marker, color=color, linestyle="none",
                        markerfacecolor="none", markersize=9, label=f"{method} {r.pattern}")
                if flag:
                    ax.plot(r.sparsity, r.metrics[key], marker="x", color="black", markersize=10)
        if method in es_by_method and not math.isnan(es_by_method[method]):
            ax.axvline(es_by_method[method], color=color, linestyle=":", linewidth=1.2)
    ax.set_xlabel("sparsity")
    ax.set_ylabel(label)
    ax.set_title(f"{label} vs sparsity (dotted: ES; x: collapsed)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


@dataclass(frozen=True)
class Report:
    """The files :func:`build_report` wrote (``paper``: the paper-shaped table, when the config asks;
    ``protocol``: ``protocol.md``, when the config follows a paper's protocol)."""

    results_csv: Path
    results_md: Path
    analysis_csv: Path
    analysis_md: Path
    plots: list[Path]
    paper: Path | None = None
    protocol: Path | None = None


def _require_one_sweep(records: Sequence[dict[str, Any]], path: Path) -> None:
    fingerprints = sorted({str(r.get("fingerprint")) for r in records})
    if len(fingerprints) > 1:
        raise ResultsMismatchError(f"{path} holds records of {len(fingerprints)} different configs (fingerprints "
                                   f"{', '.join(fingerprints)}); a report would average them as if they were seeds: "
                                   "split them into one results file per config")
    seen: set[str] = set()
    for record in records:
        key = str(record.get("key"))
        if key in seen:
            raise ResultsMismatchError(f"{path} records the point {key} twice (two runs wrote into one folder?); "
                                       "a report would count it as two seeds: remove one of the two lines")
        seen.add(key)


def runtime_note(records: Sequence[dict[str, Any]]) -> str:
    """Where the points were computed (each record's ``runtime``: device, its name, precision, torch / CUDA /
    Triton versions), as one line per distinct setting with its number of points."""
    counts: dict[str, int] = {}
    for record in records:
        runtime = record.get("runtime")
        if runtime is None:
            line = "not recorded (a run from before records stated it)"
        else:
            line = (f"{runtime['device']} ({runtime['device_name']}), {runtime['precision']}; torch {runtime['torch']}, "
                    f"CUDA {runtime['cuda'] or 'none'}, Triton {runtime['triton'] or 'none'}")
        counts[line] = counts.get(line, 0) + 1
    return "\nComputed on:\n\n" + "".join(f"- {line}: {n} point(s)\n" for line, n in counts.items())


def build_report(results_path: str | Path, out_dir: str | Path | None = None, *, epsilon: float = 1.0,
                 plots: bool = True) -> Report:
    """Write the tables (CSV + markdown) and plots of a results file; see the module docstring.

    Args:
        results_path: a ``results.jsonl`` written by :func:`robustprune.experiments.runner.run_experiment`.
        out_dir: where to write (default: ``report/`` beside the results file).
        epsilon: ES tolerance in accuracy points.
        plots: also draw the PNG plots.

    Raises:
        FileNotFoundError: no results file.
        ValueError: a bad ``epsilon``, or a file with no records (nothing is written).
        ResultsMismatchError: records of several configs, or one point recorded twice: averaging them
            would pass them off as seeds (nothing is written).
    """
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 < epsilon < math.inf:
        raise ValueError(f"epsilon must be a finite number of accuracy points > 0, got {epsilon!r}")
    results_path = Path(results_path)
    if not results_path.is_file():
        raise FileNotFoundError(f"results file not found: {str(results_path)!r}")
    records = ResultsFile(results_path).records()
    if not records:
        raise ValueError(f"{str(results_path)!r} holds no finished points (is the run still at its first point?)")
    _require_one_sweep(records, results_path)
    out = Path(out_dir) if out_dir is not None else results_path.parent / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows, majorities = aggregate(records)
    collapsed = _collapsed_flags(rows, majorities)
    paths = {name: out / name for name in ("results.csv", "results.md", "analysis.csv", "analysis.md")}
    paths["results.csv"].write_text(_csv(*results_table(rows, collapsed, split_intervals=True)), encoding="utf-8")
    paths["results.md"].write_text(_markdown(*results_table(rows, collapsed)) + runtime_note(records),
                                   encoding="utf-8")
    vectors = _correct_vectors(records, results_path.parent)
    paired = paired_curves(rows, collapsed, epsilon, vectors)
    a_header, a_body = analysis_table(rows, collapsed, epsilon, paired)
    paths["analysis.csv"].write_text(_csv(a_header, a_body), encoding="utf-8")
    note = (f"\nES: largest sparsity within {epsilon:g} point(s) of the dense model at it and every lower "
            "sparsity (unstructured curve): the fixed-epsilon rule, blind to how few examples back each point. "
            "ES (paired test): the largest sparsity at which, and below which, the drop from the dense model "
            f"is not significantly larger than {epsilon:g} point(s) at level {ALPHA:g} (one-sided paired "
            "bootstrap over the same examples, 2000 resamples); the interval is the 2.5-97.5 % range of the "
            "fixed-rule ES over the same resamples. ES_robust: the same on a robust metric over the points that have "
            "not collapsed on the set that metric is measured on (attacks: the clean set). Collapse is judged per "
            "evaluated set: accuracy within 2 points of the set's majority-class rate (clean: "
            f"{_fmt(majorities.get('clean'))}%), or >= 90% of predictions in one class; on the robust set the "
            "prediction share alone, since adversarial sets put even the dense model below chance. Spearman "
            "also leaves out points collapsed on the clean set; the excluded columns count what was left out; its p "
            "is a two-sided permutation test (exact up to 7 points), also given Holm-adjusted over all the Spearman "
            "tests in this table. In results.md, accuracies read mean [low, high]: the 95% "
            "Wilson interval over the evaluated examples (pooled over seeds), with ± the standard deviation "
            "over seeds when there are several; plots draw the interval as a band.\n")
    controls = control_tests(rows, vectors)
    comparisons = comparison_tests(rows, vectors)
    flags_by_row = {id(row): flags for row, flags in zip(rows, collapsed)}
    supported = (findings(rows, paired, majorities) + control_findings(controls)
                 + comparison_findings(comparisons, flags_by_row))
    words = "\nWhat the numbers support:\n\n" + "".join(f"- {line}\n" for line in supported) if supported else ""
    paths["analysis.md"].write_text(_markdown(a_header, a_body) + note + words + tests_section(point_tests(paired))
                                    + control_section(controls, flags_by_row)
                                    + comparison_section(comparisons, flags_by_row), encoding="utf-8")
    drawn: list[Path] = []
    if plots:
        es_clean = {line[0]: float(line[3]) if line[3] else math.nan for line in a_body}
        _plot(rows, [f.get("clean", False) for f in collapsed], "clean_accuracy", "clean accuracy (%)",
              out / "plots" / "clean_accuracy.png", es_clean)
        drawn.append(out / "plots" / "clean_accuracy.png")
        for i, key in enumerate(_robust_keys(rows)):
            column = ANALYSIS_CLEAN_COLUMNS + ANALYSIS_COLUMNS_PER_METRIC * i
            es = {line[0]: float(line[column]) if line[column] else math.nan for line in a_body}
            name = key.replace(":", "_")
            label = f"accuracy under {key.split(':', 1)[1]} (%)" if key.startswith("attack:") else \
                f"accuracy on {key.replace(':', ' ')} (%)"
            _plot(rows, [f.get(_set_of(key), False) for f in collapsed], key, label, out / "plots" / f"{name}.png",
                  es)
            drawn.append(out / "plots" / f"{name}.png")
    paper = None
    kind = _paper_table_kind(results_path.parent / "config.json")
    if kind is not None:
        from robustprune.experiments.paper_tables import paper_table

        paper = out / "paper.md"
        paper.write_text(paper_table(kind, rows, collapsed, (a_header, a_body)), encoding="utf-8")
    protocol = _protocol_report(results_path.parent / "config.json", out / "protocol.md")
    return Report(paths["results.csv"], paths["results.md"], paths["analysis.csv"], paths["analysis.md"], drawn,
                  paper, protocol)


def _protocol_report(config_json: Path, path: Path) -> Path | None:
    """``protocol.md`` from the run's ``config.json``, when the config follows a paper's protocol."""
    from robustprune.experiments.protocol import write_protocol_report

    if not config_json.is_file():
        return None
    try:
        config = json.loads(config_json.read_text(encoding="utf-8"))
    except ValueError:
        return None  # _paper_table_kind has named the damage already
    return write_protocol_report(config, path) if isinstance(config, dict) else None


def _paper_table_kind(config_json: Path) -> str | None:
    """The ``paper_table`` of the run's ``config.json`` (beside its results), if it names one."""
    if not config_json.is_file():
        return None
    try:
        return json.loads(config_json.read_text(encoding="utf-8")).get("paper_table")
    except (ValueError, AttributeError):
        raise ValueError(f"{str(config_json)!r} is damaged (not a JSON mapping); `robustprune run` rewrites it, "
                         "or delete it to report without the paper table") from None


__all__ = ["CONTROL", "ReferenceTest", "Report", "aggregate", "build_report", "comparison_tests", "control_tests",
           "runtime_note"]
