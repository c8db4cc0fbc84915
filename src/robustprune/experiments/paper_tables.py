"""Report tables shaped like the main table of the paper a shipped experiment follows (``paper.md``).

The numbers are those of ``results.md`` (means over seeds; accuracies with their 95 % Wilson interval),
laid out the way each paper lays out its comparison:

- ``essential_sparsity`` (Jaiswal et al., 2023, "The Emergence of Essential Sparsity in Large Pre-trained
  Models"): clean accuracy by sparsity (rows) and method (columns), N:M patterns below, and each method's
  ES by the fixed rule and by the paired test; then, when the sweep has IMP tickets, the cosine similarity
  of each ticket's mask with OMP's mask of the pre-trained weights at its sparsity, beside the paper's
  value (:func:`mask_similarity_table`).
- ``es_robust`` (Shin et al., "Unveiling the Intertwined Relationship Between Essential Sparsity and
  Robustness in Large Pre-trained Models", TMLR): the same grid for the clean accuracy and for every robust
  metric (the robust set, each distribution shift, any attack), with ES / ES_robust; calibration variants
  (``wanda@advglue``) are columns of their own.
- ``robust_tickets`` (Zheng et al., 2022, "Robust Lottery Tickets for Pre-trained Language Models"): one
  row per model; Clean%, then Aua%, Suc% and #Query per attack. As the paper's Table 1 (Section 4.4), the
  main table shows the robust ticket at its most robust sparsity of the grid (the highest mean Aua% over the
  attacks), with the IMP and random tickets at that sparsity beside the dense models; a second table shows
  every sparsity (the paper's Figure 2).
- ``early_robust`` (Xi et al., 2022, "Efficient Adversarial Training with Robust Early-Bird Tickets"):
  one row per model (fine-tuned, PGD and FreeLB adversarial training, EarlyRobust tickets); parameters
  without the embeddings, training time and the speedup over PGD (1.0x), Clean%, and Aua% and #Query per
  attack.
"""

from __future__ import annotations

from collections.abc import Sequence

from robustprune.experiments.tables import (
    MASK_COSINE,
    Row,
    column_name,
    fmt,
    fmt_accuracy,
    markdown,
    robust_keys,
    set_of,
)

Analysis = tuple[list[str], list[list[str]]]  # analysis.md's header and lines

_NAMES = {"dense": "fine-tuned (dense)", "adversarial": "adversarial training (dense)", "magnitude": "OMP",
          "imp": "IMP ticket", "robust_ticket": "robust ticket", "random_ticket": "random ticket (layer-matched)",
          "early_robust": "EarlyRobust",
          "wanda": "Wanda", "sparsegpt": "SparseGPT", "random": "random"}


def _name(method: str) -> str:
    """A method's name in a table; a calibration variant ``wanda@c4`` reads ``Wanda (calibration: c4)``."""
    base, _, label = method.partition("@")
    name = _NAMES.get(base, base)
    return f"{name} (calibration: {label})" if label else name


def _label(row: Row) -> str:
    """A model's name in a table: the method, and its pattern when that is N:M."""
    if row.pattern in ("unstructured", "dense") or row.method == "early_robust":
        return _name(row.method)
    return f"{_name(row.method)} {row.pattern}"


def _metric_title(key: str) -> str:
    if key == "clean_accuracy":
        return "Clean%"
    if key.startswith("attack:"):
        return f"{key.split(':', 1)[1]} Aua%"
    return "robust set acc%" if key == "robust_set" else f"{key.split(':', 1)[1]} acc%"


def _grid(rows: Sequence[Row], collapsed: Sequence[dict[str, bool]], key: str, analysis: Analysis) -> str:
    """``key`` by sparsity (rows) and method (columns); N:M rows after the unstructured ones; then each
    method's ES (ES_robust on a robust metric) by the fixed rule and by the paired test, as in
    ``analysis.md``."""
    methods = sorted({r.method for r in rows if r.method != "dense" and key in r.metrics})
    dense = next((r for r in rows if r.method == "dense" and key in r.metrics), None)
    flag = {id(r): f.get(set_of(key), False) for r, f in zip(rows, collapsed)}
    cells = {(r.method, r.pattern, r.sparsity): r for r in rows}
    grid_keys = sorted({(r.pattern != "unstructured", r.pattern, r.sparsity) for r in rows if r.method != "dense"})
    header = ["sparsity", *(_name(m) for m in methods)]
    body = []
    if dense is not None:
        body.append(["0 (dense)", *(fmt_accuracy(dense, key) for _ in methods)])
    for _, pattern, sparsity in grid_keys:
        label = f"{sparsity:.2f}" if pattern == "unstructured" else f"{pattern} ({sparsity:.2f})"
        line = [label]
        for method in methods:
            row = cells.get((method, pattern, sparsity))
            text = fmt_accuracy(row, key) if row is not None and key in row.metrics else ""
            line.append(text + (" (collapsed)" if row is not None and flag[id(row)] else ""))
        if any(line[1:]):
            body.append(line)
    header_names, lines = analysis
    by_method = {line[0]: dict(zip(header_names, line)) for line in lines}
    column = "ES (clean)" if key == "clean_accuracy" else f"ES_robust ({column_name(key)})"
    name = "ES" if key == "clean_accuracy" else "ES_robust"
    for title, suffix in ((f"{name} (fixed rule)", ""), (f"{name} (paired test)", ", paired test")):
        wanted = column[:-1] + suffix + ")"
        body.append([title, *(by_method.get(m, {}).get(wanted, "") for m in methods)])
    return f"{_metric_title(key)} by sparsity and method\n\n" + markdown(header, body)


# Jaiswal et al. (2023), Section 6: LTH and OMP masks of bert-base have a cosine similarity above 96 % within
# the essential sparsity range; Figure 10 shows it at these sparsities.
PAPER_MASK_COSINE = "> 96"
PAPER_MASK_COSINE_SPARSITIES = (0.1, 0.2, 0.3, 0.4)


def mask_similarity_table(rows: Sequence[Row], analysis: Analysis) -> str:
    """IMP tickets against OMP: per sparsity, the cosine similarity (%) of the ticket's keep-mask with the
    one-shot magnitude mask of the pre-trained weights at the same sparsity (mean over seeds), whether the
    sparsity lies within OMP's ES (fixed rule, from ``analysis``), and the paper's value where it gives one.
    Empty when no row carries the cosine (no IMP points, or records from before it was recorded)."""
    measured = sorted((r for r in rows if MASK_COSINE in r.metrics), key=lambda r: r.sparsity)
    if not measured:
        return ""
    header_names, lines = analysis
    omp = next((dict(zip(header_names, line)) for line in lines if line[0] == "magnitude"), {})
    omp_es = omp.get("ES (clean)", "")
    body = []
    for row in measured:
        within = "" if not omp_es else ("yes" if row.sparsity <= float(omp_es) + 1e-9 else "no")
        paper = PAPER_MASK_COSINE if any(abs(row.sparsity - s) < 1e-9 for s in PAPER_MASK_COSINE_SPARSITIES) else ""
        body.append([f"{row.sparsity:.2f}", fmt(100.0 * row.metrics[MASK_COSINE]), within, paper])
    header = ["sparsity", "cosine IMP vs OMP (pre-trained) %", "within OMP's ES", "paper (Section 6, Figure 10) %"]
    caption = ("\nIMP vs OMP mask cosine similarity: each IMP ticket's keep-mask against the one-shot magnitude "
               "(OMP) mask of the pre-trained weights at the same sparsity, |A and B| / sqrt(|A| |B|) over all "
               "targeted weights (mean over seeds). Jaiswal et al. find it above 96 % within the essential sparsity "
               "range of bert-base (Section 6; Figure 10 at 10-40 %), falling as sparsity grows.\n\n")
    return caption + markdown(header, body)


def _attack_recipes(rows: Sequence[Row]) -> list[str]:
    return [k.split(":", 1)[1] for k in robust_keys(rows) if k.startswith("attack:")]


def _model_rows(rows: Sequence[Row], methods: Sequence[str]) -> list[Row]:
    order = {method: i for i, method in enumerate(methods)}
    chosen = [r for r in rows if r.method in order]
    return sorted(chosen, key=lambda r: (r.sparsity, order[r.method]))


_TICKET_TABLE_METHODS = ["dense", "adversarial", "magnitude", "imp", "random", "random_ticket", "robust_ticket"]


def best_robust_ticket(rows: Sequence[Row]) -> float | None:
    """The sparsity of the most robust unstructured robust ticket: the highest mean Aua% over the attacks
    (means over seeds; a tie goes to the lower sparsity). The paper prunes over 10-90 % and reports "the best
    one in terms of robustness" (Section 4.4) without naming the attack, so every attack counts equally.
    None without robust tickets or attacks."""
    recipes = _attack_recipes(rows)
    scored = []
    for row in rows:
        if row.method != "robust_ticket" or row.pattern != "unstructured":
            continue
        values = [row.metrics[f"attack:{r}"] for r in recipes if row.metrics.get(f"attack:{r}") is not None]
        if values:
            scored.append((sum(values) / len(values), -row.sparsity))
    return -max(scored)[1] if scored else None


def robust_tickets_table(rows: Sequence[Row]) -> str:
    """Robust Tickets' Table 1: per model, Clean% and per attack Aua% / Suc% / #Query; the tickets at the robust
    ticket's most robust sparsity (:func:`best_robust_ticket`) with the dense models, then every sparsity."""
    recipes = _attack_recipes(rows)
    header = ["model", "sparsity", "Clean%"]
    for recipe in recipes:
        header += [f"{recipe} Aua%", f"{recipe} Suc%", f"{recipe} #Query"]

    def table(chosen: Sequence[Row]) -> str:
        body = []
        for row in _model_rows(chosen, _TICKET_TABLE_METHODS):
            line = [_label(row), f"{row.sparsity:.2f}", fmt_accuracy(row, "clean_accuracy")]
            for recipe in recipes:
                line += [fmt_accuracy(row, f"attack:{recipe}"),
                         fmt(row.metrics.get(f"attack:{recipe}:success_rate")),
                         fmt(row.metrics.get(f"attack:{recipe}:queries"))]
            body.append(line)
        return markdown(header, body)

    best = best_robust_ticket(rows)
    if best is None:
        return table(rows)
    grid = sorted({r.sparsity for r in rows if r.method == "robust_ticket" and r.pattern == "unstructured"})
    main = [r for r in rows if r.sparsity == 0.0 or (r.sparsity == best and r.pattern == "unstructured")]
    return (f"Tickets at sparsity {best:.2f}: the robust ticket's highest mean Aua% over "
            f"{', '.join(recipes)} among its sparsities {', '.join(f'{x:.2f}' for x in grid)} (the paper reports "
            "its most robust ticket of 10-90 %, and LTH and random tickets at the same sparsity: Section 4.4)\n\n"
            + table(main) + "\nEvery sparsity (the paper's Figure 2)\n\n" + table(rows))


_ADVERSARIES = {"pgd": "PGD (dense)", "freelb": "FreeLB (dense)"}


def _early_robust_label(row: Row) -> str:
    """A model's name in EarlyRobust's table: the adversary of an adversarial baseline, a ticket's shares."""
    if row.method == "adversarial" and row.pattern in _ADVERSARIES:
        return _ADVERSARIES[row.pattern]
    if row.method == "early_robust" and row.pattern.startswith("heads="):  # heads=H+neurons=N
        return f"EarlyRobust ({row.pattern.replace('=', ' ').replace('+', ', ')})"
    return _label(row)


def early_robust_table(rows: Sequence[Row]) -> str:
    """EarlyRobust's Table 1: per model, parameters without the embeddings (as the paper counts them),
    training time and the speedup over PGD adversarial training (PGD's time / the model's, so PGD is 1.0x;
    over the one adversarial baseline when no PGD point ran), Clean%, and Aua% and #Query per attack. Times
    marked * include a run resumed from a checkpoint."""
    recipes = _attack_recipes(rows)
    pgd = next((r for r in rows if r.method == "adversarial" and r.pattern == "pgd"), None)
    reference = pgd or next((r for r in rows if r.method == "adversarial"), None)
    against = "PGD" if pgd is not None else "adversarial training"
    header = ["model", "sparsity (measured)", "parameters without embeddings (M)", "training time (s)",
              f"speedup vs {against}", "Clean%"]
    for recipe in recipes:
        header += [f"{recipe} Aua%", f"{recipe} #Query"]
    seconds_of_reference = reference.metrics.get("finetune_seconds") if reference is not None else None
    order = ["dense", "adversarial", "early_robust", "robust_ticket", "imp", "magnitude"]
    body = []
    for row in sorted(_model_rows(rows, order), key=lambda r: (r.sparsity, order.index(r.method), r.pattern != "pgd")):
        seconds = row.metrics.get("finetune_seconds")
        speedup = seconds_of_reference / seconds if seconds and seconds_of_reference else None
        mark = "*" if row.resumed or (speedup is not None and reference.resumed) else ""
        size = row.metrics.get("parameters_without_embeddings")
        line = [_early_robust_label(row), fmt(row.metrics.get("measured_sparsity"), 3),
                fmt(size / 1e6, 2) if size is not None else "", fmt(seconds, 0) + ("*" if row.resumed else ""),
                (fmt(speedup, 2) + "x" + mark) if speedup is not None else "", fmt_accuracy(row, "clean_accuracy")]
        for recipe in recipes:
            line += [fmt_accuracy(row, f"attack:{recipe}"), fmt(row.metrics.get(f"attack:{recipe}:queries"))]
        body.append(line)
    return markdown(header, body)


def paper_table(kind: str, rows: Sequence[Row], collapsed: Sequence[dict[str, bool]], analysis: Analysis) -> str:
    """The markdown of ``paper.md`` for a config's ``paper_table`` (see the module docstring); ``analysis``
    is the header and lines of ``analysis.md`` (its ES columns are reused)."""
    if kind == "essential_sparsity":
        return _grid(rows, collapsed, "clean_accuracy", analysis) + mask_similarity_table(rows, analysis)
    if kind == "es_robust":
        return "\n".join(_grid(rows, collapsed, key, analysis) for key in ["clean_accuracy", *robust_keys(rows)])
    if kind == "robust_tickets":
        return robust_tickets_table(rows)
    if kind == "early_robust":
        return early_robust_table(rows)
    raise ValueError(f"unknown paper table {kind!r}")


__all__ = ["PAPER_MASK_COSINE", "best_robust_ticket", "early_robust_table", "mask_similarity_table", "paper_table",
           "robust_tickets_table"]
