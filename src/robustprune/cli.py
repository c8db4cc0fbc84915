"""The ``robustprune`` command: ``run``, ``report``, ``demo``, ``bench``, ``prune`` and ``eval``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

from robustprune import __version__


def _print_report(results: Path, out: Path | None, epsilon: float) -> None:
    from robustprune.experiments.report import build_report

    report = build_report(results, out, epsilon=epsilon)
    print(report.results_md.read_text(encoding="utf-8"))
    print(report.analysis_md.read_text(encoding="utf-8"))
    if report.paper is not None:
        print(report.paper.read_text(encoding="utf-8"))
    tables = [report.results_csv, report.results_md, report.analysis_md, *([report.paper] if report.paper else [])]
    print(f"tables: {', '.join(map(str, tables))}")
    for plot in report.plots:
        print(f"plot:   {plot}")


def _run(config, out: Path, progress: bool, epsilon: float | None = None, executor: str = "local",
         address: str | None = None) -> int:
    from robustprune.experiments.runner import run_experiment

    with _hf_progress(progress):  # --no-progress also silences transformers' loading bars
        summary = run_experiment(config, out, progress=progress, executor=executor, address=address)
    print(f"{len(summary.computed)} point(s) computed, {len(summary.skipped)} already done; "
          f"results: {summary.results_path}")
    _print_report(summary.results_path, out / "report", config.evaluation.epsilon if epsilon is None else epsilon)
    return 0


def _device_flag(value: str) -> str:
    """``--device``: checked as the config key ``device`` is (argparse names the flag in its error)."""
    from robustprune.experiments.config import DeviceError, check_device_name

    try:
        return check_device_name(value)
    except DeviceError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _override_device(config, args: argparse.Namespace):
    """``config`` with ``--device`` / ``--precision`` (when given) in place of its own keys."""
    import dataclasses

    changes = {key: getattr(args, key) for key in ("device", "precision") if getattr(args, key) is not None}
    return dataclasses.replace(config, **changes) if changes else config


def _add_device_flags(parser: argparse.ArgumentParser) -> None:
    from robustprune.experiments.config import DEVICES_HELP, PRECISIONS

    parser.add_argument("--device", type=_device_flag, help=f"where every stage computes: {DEVICES_HELP} "
                        "(default: the config's device key, itself 'auto': CUDA when a GPU is visible)")
    parser.add_argument("--precision", choices=PRECISIONS, help="autocast precision of training and evaluation "
                        "(default: the config's precision key, itself fp32)")


def _cmd_run(args: argparse.Namespace) -> int:
    from robustprune.experiments.catalog import load_named_config, shipped_configs

    if args.list:
        for shipped in shipped_configs().values():
            print(f"{shipped.name:20} {shipped.summary} (full run: {shipped.runtime})")
        return 0
    if args.config is None:
        raise ValueError("give a config file or the name of a shipped config (robustprune run --list shows them)")
    from robustprune.experiments.protocol import config_rows, protocol_table, summary_lines

    # every config error is raised here, before any work
    config = _override_device(load_named_config(args.config, quick=args.quick, size=args.size), args)
    if args.protocol:
        found = config_rows(config.to_dict())
        if found is None:
            raise ValueError(f"--protocol: {args.config!r} names no paper protocol (config key 'paper')")
        print(protocol_table(*found, config.name), end="")
        return 0
    for line in summary_lines(config.to_dict()):
        print(line)
    out = Path(args.out) if args.out else Path("results") / config.name
    return _run(config, out, not args.no_progress, executor=args.executor, address=args.address)


def _cmd_demo(args: argparse.Namespace) -> int:
    from robustprune.experiments.demo import demo_config

    config = _override_device(demo_config(args.data_dir, quick=args.quick), args)
    out = Path(args.out) if args.out else Path("results") / ("demo-quick" if args.quick else "demo")
    print(f"robustprune demo: {config.model.name} on {config.data.data_dir} ({config.data.task}); "
          f"methods {', '.join(config.pruning.methods)}; patterns {', '.join(config.pruning.patterns)}; "
          f"sparsities {', '.join(f'{s:g}' for s in config.pruning.sparsities)}; "
          f"attacks {', '.join(a.recipe for a in config.evaluation.attacks) or 'none'}; results in {out}")
    return _run(config, out, not args.no_progress)


def _cmd_report(args: argparse.Namespace) -> int:
    _print_report(Path(args.results), Path(args.out) if args.out else None, args.epsilon)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    # bench/ lives beside src/ in a source checkout (an editable install); it is not part of the wheel.
    root = Path(__file__).resolve().parents[2]
    if not (root / "bench" / "compare.py").is_file():
        print("robustprune bench needs a source checkout of robustprune (the bench/ directory beside src/); "
              f"none found at {root}", file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "bench.compare"] + (["--quick"] if args.quick else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    return subprocess.call(command, cwd=root, env=env)


@contextlib.contextmanager
def _hf_progress(enabled: bool) -> Iterator[None]:
    """transformers' own progress bars (loading, writing) on or off for the duration of a command."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def _cmd_prune(args: argparse.Namespace) -> int:
    from robustprune.experiments.prune_model import prune_pretrained

    with _hf_progress(not args.no_progress):
        summary = prune_pretrained(args.model, method=args.method, out=args.out, sparsity=args.sparsity,
                                   pattern=args.pattern, scope=args.scope, calibration=args.calibration,
                                   samples=args.samples, seq_len=args.seq_len, device=args.device,
                                   output_format=args.format, seed=args.seed, dtype=args.dtype,
                                   trust_remote_code=args.trust_remote_code, progress=not args.no_progress)
    record = summary.record
    line = (f"{record['model_type']} ({record['architecture']}) pruned by {record['method']}: "
            f"{record['pattern'] if record['pattern'] != 'unstructured' else 'unstructured'} at "
            f"{record['sparsity_measured']:.4f} measured ({record['sparsity_asked']:.4g} asked) over "
            f"{len(record['matrices'])} matrices; {summary.weight_bytes / 2**20:.2f} MiB of weights in "
            f"{summary.directory} ({record['format']})")
    if "bytes_at_rest" in record:
        at_rest = record["bytes_at_rest"]
        line += (f"; pruned matrices {at_rest['pruned_matrices'] / 2**20:.2f} MiB at rest vs "
                 f"{at_rest['dense_equivalent'] / 2**20:.2f} MiB dense ({at_rest['ratio']:.4f}x)")
    print(line)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from robustprune.experiments.evaluate_model import evaluate_pretrained, format_record

    def listed(text: str | None) -> list[str]:
        return [item.strip() for item in text.split(",") if item.strip()] if text else []

    with _hf_progress(not args.no_progress):
        record = evaluate_pretrained(args.model, data=args.data, task=args.task, split=args.split,
                                     attacks=listed(args.attacks), robust_set=args.robust_set,
                                     shifts=listed(args.shifts), max_examples=args.max_examples, device=args.device,
                                     out=args.out, baseline=args.baseline, seed=args.seed,
                                     progress=not args.no_progress)
    print(format_record(record))
    if args.out:
        print(f"results: {Path(args.out) / 'results.json'}, per-example predictions: "
              f"{Path(args.out) / 'predictions.json'}")
    return 0


def _sparsity(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from robustprune.experiments.config import DEVICES_HELP

    parser = argparse.ArgumentParser(prog="robustprune", description="Pruning and robustness experiments on "
                                     "pre-trained transformers.")
    parser.add_argument("--version", action="version", version=f"robustprune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    common = argparse.ArgumentParser(add_help=False)  # --debug after the command works too
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common], help="run (or resume) a sweep from a YAML or JSON config")
    run.add_argument("config", nargs="?",
                     help="a config file (.yaml, .yml or .json) or the name of a shipped config (see --list)")
    run.add_argument("--list", action="store_true", help="list the shipped configs, one line each, and exit")
    run.add_argument("--quick", action="store_true",
                     help="a much smaller smoke run of the same experiment (few examples, one sparsity and seed)")
    run.add_argument("--size", choices=["small", "paper"], default="small",
                     help="small: the config as written, sized for a laptop (default); paper: the paper's model, full "
                          "data, epochs and evaluated examples, the same protocol (a GPU run; needs the Hub)")
    run.add_argument("--protocol", action="store_true",
                     help="print the run's protocol table (the paper's value and this run's, per element) and exit")
    run.add_argument("--out", help="results directory (default: results/<config name>)")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local: points one after another in this process (default); ray: every point a Ray "
                          'task (pip install "robustprune[ray]")')
    run.add_argument("--address", help="with --executor ray: a Ray cluster's address (default: start a local Ray)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_device_flags(run)
    run.set_defaults(func=_cmd_run)

    report = sub.add_parser("report", parents=[common],
                            help="rebuild the tables and plots from a results file")
    report.add_argument("results", help="a results.jsonl written by `robustprune run`")
    report.add_argument("--out", help="output directory (default: report/ beside the results file)")
    report.add_argument("--epsilon", type=float, default=1.0, help="ES tolerance in accuracy points (default 1)")
    report.set_defaults(func=_cmd_report)

    demo = sub.add_parser("demo", parents=[common],
                          help="the embedded default sweep (MiniLM, small sentiment set, ~6 min on 2 cores)")
    demo.add_argument("--data-dir", help="run the same sweep on a GLUE-format SST-2 directory instead")
    demo.add_argument("--out", help="results directory (default: results/demo)")
    demo.add_argument("--quick", action="store_true", help="a much smaller smoke run (one sparsity, few examples)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_device_flags(demo)
    demo.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("bench", parents=[common],
                           help="kernel benchmarks: side-by-side ratios (python -m bench.compare)")
    bench.add_argument("--quick", action="store_true", help="fewer repeats")
    bench.set_defaults(func=_cmd_bench)

    prune = sub.add_parser("prune", parents=[common],
                           help="prune any Hugging Face model one-shot and write it as a checkpoint directory")
    prune.add_argument("model", help="a checkpoint directory or a Hugging Face Hub name (loaded with its own head)")
    prune.add_argument("--method", required=True, choices=["magnitude", "wanda", "sparsegpt", "random"])
    amount = prune.add_mutually_exclusive_group(required=True)
    amount.add_argument("--sparsity", type=_sparsity, help="unstructured: the fraction of weights removed, in [0, 1)")
    amount.add_argument("--pattern", help="N:M: N weights KEPT in every group of M along the input dimension "
                                          "(2:4, 4:8)")
    prune.add_argument("--scope", choices=["global", "layer"],
                       help="magnitude / random unstructured: one threshold over all matrices (global, default) "
                            "or one per matrix")
    prune.add_argument("--calibration", metavar="DATA",
                       help="wanda / sparsegpt: calibration text: embedded, sst2-sample, a .txt/.tsv/.csv/.jsonl "
                            "file, or a Hugging Face dataset NAME or NAME:CONFIG (e.g. allenai/c4:en)")
    prune.add_argument("--samples", type=int, default=128, help="calibration sequences (default 128)")
    prune.add_argument("--seq-len", type=int, default=128, help="calibration tokens per sequence (default 128)")
    prune.add_argument("--seed", type=int, default=0, help="seed of random pruning and calibration windows")
    prune.add_argument("--device", type=_device_flag, default="auto",
                       help=f"where the blocks run: {DEVICES_HELP} (default: auto, CUDA when a GPU is visible)")
    prune.add_argument("--out", required=True, help="the new checkpoint directory")
    prune.add_argument("--format", choices=["dense", "sparse"], default="dense",
                       help="dense: model.safetensors for any from_pretrained; sparse: pruned matrices as "
                            "values + bitmask (any sparsity) or N:M compressed, read by robustprune.load_pretrained")
    prune.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                       help="write the pruned model in this dtype (default: the checkpoint's)")
    prune.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own modelling code")
    prune.add_argument("--no-progress", action="store_true", help="no progress bar")
    prune.set_defaults(func=_cmd_prune)

    evaluate = sub.add_parser("eval", parents=[common],
                              help="evaluate a sequence-classification checkpoint (clean, attacks, robust set, "
                                   "shifts), optionally against a baseline")
    evaluate.add_argument("model", help="a checkpoint directory (dense, robustprune sparse, compressed-tensors) "
                                        "or a Hugging Face Hub name")
    evaluate.add_argument("--data", required=True,
                          help="a GLUE-format directory or .tsv file, a .csv/.jsonl file (sentence or text, "
                               "and label), or a shipped set: embedded, sst2-sample")
    evaluate.add_argument("--task", default="sst2", help="GLUE task of a --data directory (default sst2)")
    evaluate.add_argument("--split", default="dev", help="split of a --data directory (default dev)")
    evaluate.add_argument("--attacks", help="comma-separated recipes: textfooler, pwws, textbugger, deepwordbug")
    evaluate.add_argument("--robust-set", help="an AdvGLUE-style JSON file (or the shipped sst2-adv-sample) "
                          "evaluated as an extra set")
    evaluate.add_argument("--shifts", help="comma-separated shifts: char_swap, eda, wordnet, embedding_swap, deletion, "
                          "back_translation, clare")
    evaluate.add_argument("--max-examples", type=int,
                          help="evaluate and attack at most this many examples (the first ones of --data)")
    evaluate.add_argument("--device", type=_device_flag, default="auto",
                          help=f"where the model runs: {DEVICES_HELP} (default: auto, CUDA when a GPU is visible)")
    evaluate.add_argument("--out", help="write results.json, predictions.json (and attack_examples.json) here")
    evaluate.add_argument("--baseline", help="a second checkpoint evaluated on the same examples, with paired tests")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the attack subsets (default 0)")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bars")
    evaluate.set_defaults(func=_cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 2 bad usage or input, 130 interrupted).

    Every error ends in one line, ``robustprune <command>: <message>``; ``--debug`` adds the traceback.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "demo":  # the demo's model and data ship with the packages: never reach for a hub
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted: every finished point is in the results file; run the same command again to resume",
              file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the command line reports every error as one line
        if args.debug:
            traceback.print_exc()
        message = " ".join(str(error).split()) or type(error).__name__
        hint = "" if args.debug else " (--debug for the traceback)"
        print(f"robustprune {args.command}: {message}{hint}", file=sys.stderr)
        return 2 if isinstance(error, (ValueError, OSError, LookupError)) else 1


if __name__ == "__main__":
    sys.exit(main())
