"""Compiled inference against the field's runtimes (issue 16: "measure and pick"), on one
symbol's ensemble as training makes it (BTCUSD, 730 days of simulated 1h candles, the default
features and family parameters, class weights as ``models.tuning.fit`` sets them; the newest
2,000 rows held out):

* per runtime and family, and for the whole ensemble: the probability of one row (the newest-row
  call live scoring makes), p50/p99 over ``--calls`` calls, every runtime's call interleaved
  round-robin with the others' (the machine's load falls on all alike), one thread everywhere;
* the largest |p − ``predict_proba(X)[:, 1]``| of those calls over the held-out rows (the
  project's bar: 1e-6) and how many rows miss it; conversion time; what each runtime covers.

Runtimes: the libraries' fast path (``models.zoo.positive_probability``), ``models.compiled``,
onnxruntime (skl2onnx: hgb, logreg; onnxmltools: xgboost, lightgbm; the ensemble as one graph),
treelite's GTIL, tl2cgen (treelite compiled to C by gcc), lleaves (LightGBM by LLVM); the tree
runtimes' ensemble adds the logistic regression by ``models.compiled``. A runtime's first
conversion includes its imports. None is a project dependency: a runtime missing from the venv
and from ``--runtimes`` (default /tmp/rt-pkgs, a ``pip install --target`` dir put after the
venv's own packages) reads "not installed". Weights are equal: they do not change what a family
costs.

    uv run --frozen python bench/bench_compiled.py [--calls 2000] [--runtimes /tmp/rt-pkgs]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SYMBOL = "BTCUSD"
HELD_OUT = 2000
TOLERANCE = 1e-6
ENSEMBLE = "ensemble"
Scorer = Callable[[np.ndarray], dict[str, np.ndarray]]  # rows → P(y = 1) of each family it scores


@dataclass
class Runtime:
    """A runtime made ready for one ensemble: a scorer per family and one for all of them."""

    name: str
    scorers: dict[str, Scorer] = field(default_factory=dict)  # family or ENSEMBLE → scorer
    seconds: dict[str, float] = field(default_factory=dict)  # conversion, per scorer
    batch: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # all held-out rows
    notes: dict[str, str] = field(default_factory=dict)  # family → why not / what is odd
    keep: list[Any] = field(default_factory=list)  # temp dirs the compiled libraries live in


def _ensemble():
    """The default families fitted on all but the newest ``HELD_OUT`` rows; those rows."""
    from brokers.simulated import SimulatedBroker
    from core.config import load_settings
    from core.store import CandleStore
    from features.dataset import build_dataset, load_inputs
    from models.ensemble import Ensemble
    from models.tuning import fit

    home = Path(tempfile.mkdtemp(prefix="bench-compiled-"))
    try:
        settings = load_settings(home=home)
        store = CandleStore(home)
        broker = SimulatedBroker(seed=settings.simulated.seed, edge=settings.simulated.edge)
        start = NOW - timedelta(days=settings.universe.history_days)
        store.upsert(SYMBOL, "1h", broker.fetch_candles(SYMBOL, "1h", start, NOW))
        inputs = load_inputs(store, SYMBOL, "1h", settings.features)
        dataset = build_dataset(inputs, SYMBOL, "1h", settings.features, settings.labels)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    columns = list(dataset.meta.feature_columns)
    X = dataset.frame.select(columns).to_numpy().astype(np.float64)
    y = (dataset.frame["label"] == 1).to_numpy().astype(np.int8)
    train, rows = slice(0, -HELD_OUT), slice(-HELD_OUT, None)
    families = settings.training.families
    models = {
        f: fit(f, {}, X[train], y[train], seed=settings.training.seed, n_threads=1)
        for f in families
    }
    ensemble = Ensemble(models, {f: 1 / len(models) for f in models}, columns)
    return ensemble, X[rows], X[train].shape


def _timed(runtime: Runtime, key: str, make: Callable[[], Scorer]) -> None:
    """``make``'s scorer under ``key``, its conversion time; a conversion that fails is a
    measured result: its error is the row's note."""
    start = time.perf_counter()
    try:
        runtime.scorers[key] = make()
    except Exception as exc:  # reported in the table, not hidden
        runtime.notes[key] = f"failed: {type(exc).__name__}: {_first_line(exc)}"
        return
    runtime.seconds[key] = time.perf_counter() - start


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0][:120]


def _library(ensemble) -> Runtime:
    from models.zoo import positive_probability

    rt = Runtime("library fast path")
    for name, fitted in ensemble.models.items():
        rt.scorers[name] = lambda X, n=name, m=fitted: {n: positive_probability(m, X)}
        rt.seconds[name] = 0.0
    rt.scorers[ENSEMBLE], rt.seconds[ENSEMBLE] = ensemble.family_probabilities, 0.0
    return rt


def _compiled_one(ensemble, name: str) -> Scorer:
    """``models.compiled`` for one family of ``ensemble`` alone."""
    from models.compiled import compile_ensemble
    from models.ensemble import Ensemble

    one = Ensemble({name: ensemble.models[name]}, {name: 1.0}, ensemble.feature_columns)
    return compile_ensemble(one).probabilities


def _compiled(ensemble) -> Runtime:
    from models.compiled import compile_ensemble

    rt = Runtime("models.compiled")
    for name in ensemble.models:
        _timed(rt, name, lambda name=name: _compiled_one(ensemble, name))
    _timed(rt, ENSEMBLE, lambda: compile_ensemble(ensemble).probabilities)
    return rt


def _onnx_model(name: str, fitted: Any, n: int) -> tuple[Any, bool]:
    """One family as an ONNX model, and whether it reads float32: the tree converters give
    nothing else (skl2onnx's double trees are a classifier node onnxruntime runs in float only)."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType as MlFloat
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    _skl2onnx_int_flags()
    if name == "logreg":
        pipeline = fitted.estimator_
        options = {id(pipeline[-1]): {"zipmap": False}}
        types = [("X", DoubleTensorType([None, n]))]
        return convert_sklearn(pipeline, initial_types=types, options=options), False
    if name == "hgb":
        options = {id(fitted.estimator_): {"zipmap": False}}
        types = [("X", FloatTensorType([None, n]))]
        return convert_sklearn(fitted.estimator_, initial_types=types, options=options), True
    types = [("X", MlFloat([None, n]))]
    if name == "xgboost":  # onnxmltools converts up to opset 15
        return onnxmltools.convert_xgboost(fitted, initial_types=types, target_opset=15), True
    if name == "lightgbm":
        model = onnxmltools.convert_lightgbm(
            fitted, initial_types=types, target_opset=15, zipmap=False
        )
        return model, True
    raise ValueError(f"no ONNX converter for {name}")


def _skl2onnx_int_flags() -> None:
    """skl2onnx 1.20 gives HistGradientBoosting leaves a Python bool as missing-value flag, which
    protobuf ≥ 7 (the venv's) refuses in an int list: pass the same flag as an int."""
    import skl2onnx.common.tree_ensemble as tree_ensemble

    add_node = tree_ensemble.add_node
    if getattr(add_node, "int_flags", False):
        return

    def with_int_flag(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        flag = int(nodes_missing_value_tracks_true)
        return add_node(*args, nodes_missing_value_tracks_true=flag, **kwargs)

    with_int_flag.int_flags = True  # type: ignore[attr-defined]
    tree_ensemble.add_node = with_int_flag


def _session(model: Any) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3  # onnxmltools declares LightGBM's label of shape {1}: warns
    return ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])


def _merged(parts: dict[str, tuple[Any, bool]], n: int) -> Any:
    """The families' graphs side by side in one model: one double input (cast once for the
    float32 trees), one probabilities output per family — one session call for the ensemble."""
    from onnx import TensorProto, compose, helper

    nodes = [helper.make_node("Cast", ["X"], ["X32"], to=TensorProto.FLOAT)]
    initializers, outputs, opsets, ir = [], [], {}, 0
    for name, (model, float32) in parts.items():
        model = compose.add_prefix(model, f"{name}_")
        graph = model.graph
        source = "X32" if float32 else "X"
        nodes.append(helper.make_node("Identity", [source], [graph.input[0].name]))
        nodes.extend(graph.node)
        initializers.extend(graph.initializer)
        outputs.append(next(o for o in graph.output if o.name == f"{name}_probabilities"))
        for o in model.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
        ir = max(ir, model.ir_version)
    x = helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, n])
    graph = helper.make_graph(nodes, "ensemble", [x], outputs, initializers)
    merged = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(*o) for o in opsets.items()]
    )
    merged.ir_version = ir
    return merged


def _onnxruntime(ensemble) -> Runtime:
    rt = Runtime("onnxruntime")
    n = len(ensemble.feature_columns)

    def family(name: str) -> Scorer:
        model, float32 = _onnx_model(name, ensemble.models[name], n)
        session, dtype = _session(model), np.float32 if float32 else np.float64
        rt.notes[name] = "float32 input and trees" if float32 else "float64"
        return lambda X: {name: session.run(["probabilities"], {"X": X.astype(dtype)})[0][:, 1]}

    def whole() -> Scorer:
        parts = {k: _onnx_model(k, m, n) for k, m in ensemble.models.items()}
        session = _session(_merged(parts, n))
        names = [o.name.removesuffix("_probabilities") for o in session.get_outputs()]
        return lambda X: dict(
            zip(names, (p[:, 1] for p in session.run(None, {"X": X})), strict=True)
        )

    for name in ensemble.models:
        _timed(rt, name, lambda name=name: family(name))
    _timed(rt, ENSEMBLE, whole)
    if ENSEMBLE in rt.scorers:
        rt.notes[ENSEMBLE] = "all families in one graph, one session call"
    return rt


def _treelite_model(name: str, fitted: Any) -> Any:
    import treelite.frontend
    import treelite.sklearn

    if name == "hgb":
        return treelite.sklearn.import_model(fitted.estimator_)
    if name == "xgboost":
        return treelite.frontend.from_xgboost(fitted.get_booster())
    if name == "lightgbm":
        return treelite.frontend.from_lightgbm(fitted.booster_)
    return None  # treelite holds tree models only


def _trees(ensemble, rt: Runtime, scorer_of: Callable[[str, Any], Scorer]) -> Runtime:
    """A tree runtime's scorers: each booster, and the ensemble with the other families by
    ``models.compiled`` (the logistic regression's affine map: the cheapest exact route)."""
    others: dict[str, Scorer] = {}
    for name, fitted in ensemble.models.items():
        if _treelite_model(name, fitted) is None:
            rt.notes[name] = "not a tree model"
            others[name] = _compiled_one(ensemble, name)
        else:
            _timed(rt, name, lambda n=name, m=fitted: scorer_of(n, m))
    failed = [k for k in ensemble.models if k not in rt.scorers and k not in others]
    if failed:
        rt.notes[ENSEMBLE] = f"{', '.join(failed)} failed to convert"
        return rt
    parts = [rt.scorers[k] for k in ensemble.models if k in rt.scorers] + list(others.values())
    rt.scorers[ENSEMBLE] = lambda X: {k: v for score in parts for k, v in score(X).items()}
    rt.seconds[ENSEMBLE] = sum(rt.seconds.values())
    if others:
        rt.notes[ENSEMBLE] = f"{', '.join(others)} by models.compiled"
    return rt


def _gtil(ensemble) -> Runtime:
    import treelite.gtil

    def scorer(name: str, fitted: Any) -> Scorer:
        model = _treelite_model(name, fitted)
        dtype = np.dtype(model.input_type)
        return lambda X: {name: treelite.gtil.predict(model, X.astype(dtype), nthread=1)[:, 0, 0]}

    return _trees(ensemble, Runtime("treelite GTIL"), scorer)


def _tl2cgen(ensemble) -> Runtime:
    import tl2cgen

    rt = Runtime("tl2cgen (gcc)")
    if shutil.which("gcc") is None:
        rt.notes[ENSEMBLE] = "no gcc"
        return rt

    def scorer(name: str, fitted: Any) -> Scorer:
        model = _treelite_model(name, fitted)
        folder = tempfile.TemporaryDirectory(prefix="bench-tl2cgen-")
        rt.keep.append(folder)  # the library must outlive the predictor
        path = f"{folder.name}/{name}.so"
        tl2cgen.export_lib(model, toolchain="gcc", libpath=path, params={}, nthread=1)
        predictor, dtype = tl2cgen.Predictor(path, nthread=1), model.input_type
        # converted first: tl2cgen 1.0 asks numpy 2 for a copy-free conversion, which fails
        matrix = lambda X: tl2cgen.DMatrix(X.astype(dtype), dtype=dtype)  # noqa: E731
        return lambda X: {name: predictor.predict(matrix(X))[:, 0, 0]}

    return _trees(ensemble, rt, scorer)


def _lleaves(ensemble) -> Runtime:
    import lleaves

    rt = Runtime("lleaves")

    def make() -> Scorer:
        with tempfile.TemporaryDirectory(prefix="bench-lleaves-") as folder:
            path = f"{folder}/lightgbm.txt"
            ensemble.models["lightgbm"].booster_.save_model(path)
            model = lleaves.Model(model_file=path)
            model.compile(fblocksize=model.num_trees())  # one row: no cache blocking (its docs)
        return lambda X: {"lightgbm": model.predict(X, n_jobs=1)}

    for name in ensemble.models:
        if name != "lightgbm":
            rt.notes[name] = "LightGBM only"
    if "lightgbm" in ensemble.models:
        _timed(rt, "lightgbm", make)
    rt.notes[ENSEMBLE] = "LightGBM only"
    return rt


# Runtime → (the modules it needs, its distributions beyond the venv, how it is made ready).
RUNTIMES: dict[str, tuple[tuple[str, ...], tuple[str, ...], Callable[[Any], Runtime]]] = {
    "library fast path": ((), (), _library),
    "models.compiled": ((), (), _compiled),
    "onnxruntime": (
        ("onnxruntime", "onnx", "skl2onnx", "onnxmltools"),
        ("onnxruntime", "onnx", "skl2onnx", "onnxmltools", "flatbuffers", "ml_dtypes"),
        _onnxruntime,
    ),
    "treelite GTIL": (("treelite",), ("treelite",), _gtil),
    "tl2cgen (gcc)": (("tl2cgen", "treelite"), ("tl2cgen", "treelite"), _tl2cgen),
    "lleaves": (("lleaves", "llvmlite"), ("lleaves", "llvmlite"), _lleaves),
}


def _installed(modules: tuple[str, ...]) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


def _distributions(names: tuple[str, ...]) -> tuple[str, float]:
    """Versions, and megabytes on disk, of the distributions a runtime brings."""
    versions, size = [], 0
    for name in names:
        dist = importlib.metadata.distribution(name)
        versions.append(f"{name} {dist.version}")
        for file in dist.files or []:
            path = Path(file.locate())
            size += path.stat().st_size if path.is_file() else 0
    return ", ".join(versions), size / 2**20


def _measure(runtimes: list[Runtime], rows: np.ndarray, calls: int) -> dict[tuple[str, str], Any]:
    """Every scorer on one row at a time (row i of the held-out ones at call i), all scorers'
    calls interleaved and their order rotated each call; seconds and probabilities per call."""
    for rt in runtimes:
        for key, scorer in list(rt.scorers.items()):
            try:  # warm-up, and the parity of all rows at once
                rt.batch[key] = scorer(rows)
            except Exception as exc:  # reported in the table, not hidden
                rt.notes[key] = f"failed to predict: {type(exc).__name__}: {_first_line(exc)}"
                del rt.scorers[key]
    jobs = [(rt.name, key, s) for rt in runtimes for key, s in rt.scorers.items()]
    singles = [np.ascontiguousarray(rows[i : i + 1]) for i in range(rows.shape[0])]
    seconds = {job[:2]: np.empty(calls) for job in jobs}
    got: dict[tuple[str, str], list[dict[str, np.ndarray]]] = {job[:2]: [] for job in jobs}
    for i in range(calls):
        row, shift = singles[i % len(singles)], i % len(jobs)
        for name, key, scorer in jobs[shift:] + jobs[:shift]:
            start = time.perf_counter()
            out = scorer(row)
            seconds[name, key][i] = time.perf_counter() - start
            got[name, key].append(out)
    return {k: (seconds[k], got[k]) for k in seconds}


def _parity(
    batch: dict[str, np.ndarray], calls: list[dict[str, np.ndarray]], expected: dict
) -> tuple[float, int]:
    """Largest |p − predict_proba| over the held-out rows, scored at once (``batch``) and one by
    one (``calls``), and the number of single-row calls that miss ``TOLERANCE`` (any family)."""
    worst = max(float(np.max(np.abs(p - expected[k]))) for k, p in batch.items())
    off = 0
    for i, out in enumerate(calls):
        diffs = [abs(float(p[0]) - expected[k][i % HELD_OUT]) for k, p in out.items()]
        worst, off = max(worst, *diffs), off + int(max(diffs) > TOLERANCE)
    return worst, off


def _rows(runtimes: list[Runtime], skipped: dict[str, str], measured: dict, rows, ensemble):
    expected = {k: m.predict_proba(rows)[:, 1] for k, m in ensemble.models.items()}
    keys = [*ensemble.models, ENSEMBLE]
    library = {k: float(np.median(measured["library fast path", k][0])) for k in keys}
    out = []
    for rt in runtimes:
        for key in keys:
            row: dict[str, Any] = {"runtime": rt.name, "family": key}
            if key in rt.scorers:
                seconds, calls = measured[rt.name, key]
                worst, off = _parity(rt.batch[key], calls, expected)
                p50 = float(np.median(seconds))
                row |= {
                    "p50_us": round(p50 * 1e6, 1),
                    "p99_us": round(float(np.percentile(seconds, 99)) * 1e6, 1),
                    "vs_library": round(library[key] / p50, 1),
                    "max_abs_diff": float(f"{worst:.3g}"),
                    "rows_over_1e-6": off,
                    "convert_s": round(rt.seconds.get(key, 0.0), 3),
                }
            row["note"] = rt.notes.get(key, "")
            out.append(row)
    for name, why in skipped.items():
        out.extend({"runtime": name, "family": k, "note": why} for k in keys)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="single-row calls per scorer")
    parser.add_argument("--runtimes", type=Path, default=Path("/tmp/rt-pkgs"))
    args = parser.parse_args()
    if args.runtimes.is_dir():
        sys.path.append(str(args.runtimes))  # after the venv's packages: its versions win

    from bench._common import save

    load = [os.getloadavg()[0]]
    ensemble, rows, shape = _ensemble()
    print(
        f"{SYMBOL}: {len(ensemble.models)} families fitted on {shape[0]} rows × {shape[1]}"
        f" features; {rows.shape[0]} newest rows held out"
    )
    runtimes, skipped, about = [], {}, []
    for name, (modules, packages, prepare) in RUNTIMES.items():
        if not _installed(modules):
            skipped[name] = "not installed"
            about.append({"runtime": name, "installed": False})
            continue
        runtimes.append(prepare(ensemble))
        versions, size = _distributions(packages)
        families = [k for k in ensemble.models if k in runtimes[-1].scorers]
        about.append(
            {
                "runtime": name,
                "installed": True,
                "families": ", ".join(families),
                "versions": versions,
                "installed_mb": round(size, 1),
            }
        )
    measured = _measure(runtimes, rows, args.calls)
    load.append(os.getloadavg()[0])
    for entry in about:
        entry["load_1m_start_end"] = f"{load[0]:.2f} → {load[1]:.2f} ({os.cpu_count()} cpus)"
    import polars as pl

    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=250, fmt_str_lengths=120):
        save("compiled_runtimes", about)
        save("compiled", _rows(runtimes, skipped, measured, rows, ensemble))


if __name__ == "__main__":
    main()
