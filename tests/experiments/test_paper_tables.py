"""The paper-shaped tables: Robust Tickets' Table 1 reports the tickets at the robust ticket's most robust
sparsity of the grid (Section 4.4), and every sparsity below."""

from __future__ import annotations

from robustprune.experiments.paper_tables import best_robust_ticket, robust_tickets_table
from robustprune.experiments.tables import Row


def row(method, sparsity, clean, textfooler, textbugger, pattern="unstructured"):
    metrics = {"clean_accuracy": clean, "attack:textfooler": textfooler, "attack:textbugger": textbugger,
               "attack:textfooler:success_rate": 100 - textfooler, "attack:textfooler:queries": 80.0,
               "attack:textbugger:success_rate": 100 - textbugger, "attack:textbugger:queries": 40.0}
    return Row(method, pattern, sparsity, 1, metrics, {0: 0.5, 1: 0.5})


ROWS = [
    row("dense", 0.0, 90.0, 5.0, 30.0, pattern="dense"),
    row("adversarial", 0.0, 89.0, 10.0, 40.0, pattern="dense"),
    # mean Aua over the two attacks: 0.1 -> 20.0, 0.3 -> 25.5 (best), 0.5 -> 25.5 (tie: the lower sparsity
    # wins), 0.7 -> 14.0; TextFooler alone would pick 0.5 (22.0 > 21.0)
    row("robust_ticket", 0.1, 89.5, 10.0, 30.0),
    row("robust_ticket", 0.3, 88.0, 21.0, 30.0),
    row("robust_ticket", 0.5, 85.0, 22.0, 29.0),
    row("robust_ticket", 0.7, 80.0, 8.0, 20.0),
    row("random_ticket", 0.3, 83.0, 2.0, 16.0),
    row("random_ticket", 0.5, 80.0, 1.0, 14.0),
    row("imp", 0.3, 90.5, 4.0, 29.0),
    row("imp", 0.5, 90.1, 3.0, 28.0),
]


def test_the_best_ticket_is_the_highest_mean_accuracy_under_attack():
    assert best_robust_ticket(ROWS) == 0.3
    assert best_robust_ticket([r for r in ROWS if r.sparsity != 0.3]) == 0.5
    assert best_robust_ticket([r for r in ROWS if r.method != "robust_ticket"]) is None
    no_attacks = [Row(r.method, r.pattern, r.sparsity, 1, {"clean_accuracy": 90.0}, {}) for r in ROWS]
    assert best_robust_ticket(no_attacks) is None


def test_table_1_shows_the_tickets_at_the_best_sparsity_then_every_sparsity():
    text = robust_tickets_table(ROWS)
    head, _, grid = text.partition("Every sparsity (the paper's Figure 2)")
    assert head.startswith("Tickets at sparsity 0.30: the robust ticket's highest mean Aua% over textbugger, "
                           "textfooler among its sparsities 0.10, 0.30, 0.50, 0.70")
    main_rows = [line.split(" | ")[:2] for line in head.splitlines() if line.startswith("| ") and "model" not in line]
    assert main_rows == [["| fine-tuned (dense)", "0.00"], ["| adversarial training (dense)", "0.00"],
                         ["| IMP ticket", "0.30"], ["| random ticket (layer-matched)", "0.30"],
                         ["| robust ticket", "0.30"]]
    assert "| robust ticket | 0.30 | 88.0 | 30.0 | 70.0 | 40.0 | 21.0 | 79.0 | 80.0 |" in head
    assert sum(line.startswith("| ") and "model" not in line for line in grid.splitlines()) == len(ROWS)
    # without robust tickets the table is the list of every model, as before
    plain = robust_tickets_table([r for r in ROWS if r.method != "robust_ticket"])
    assert "Tickets at sparsity" not in plain and plain.count("\n| ") == len(ROWS) - 4  # rows after the header
