"""Exact batch prediction of LightGBM regression boosters, bit-sliced over rows with numpy.

LightGBM's own ``Booster.predict`` walks every tree for every row (about 130 ns per tree and row
here: 5 boosters x 300 trees of 31 leaves cost ~200 s for a million candidates on one core). This
module evaluates the same trees from ``Booster.dump_model()`` on blocks of rows at once, with
every row one bit of a packed bit vector:

1. *conditions*: for every distinct split condition of the forest ("goes right": feature value
   > threshold, with the node's missing-value rule), one bit vector over the block's rows
   (a numpy comparison, ``np.packbits``);
2. *reach*: the rows reaching each node: ``right = reach & condition``, ``left = reach ^ right``,
   bitwise on 64-bit words (64 rows per operation);
3. *leaf codes*: every leaf has a code (its index in the tree); bit k of the code of the leaf a row
   reaches is the OR of the reach vectors of the leaves with bit k set; the packed bit planes are
   turned into one byte per row with a 256-entry lookup table;
4. *values*: each tree's leaf value of every row (``np.take``), added tree after tree in
   LightGBM's order, so that the sums are the same doubles as LightGBM's, bit for bit.

Exactness, rule by rule (LightGBM 4.x ``Tree::NumericalDecision`` and the dense-row reader):
features are float32 (as :meth:`matscreen.train.Ensemble.predict` passes them) and compared in
double, ``x <= threshold`` goes left; values with ``|x| <= kZeroThreshold`` (1e-35f) are read as 0;
missing type ``None``: NaN is read as 0; ``NaN``: NaN goes to the default side; ``Zero``: NaN and
0 go to the default side. For float32 ``x``, ``x > t`` (double) equals ``x > t32`` with ``t32``
the largest float32 <= ``t``, so conditions are evaluated in float32. Models this module does not
handle (categorical splits, linear trees, an objective with an output transform, several classes,
``average_output``) give ``None`` from :meth:`Forest.from_boosters`, and the caller uses LightGBM.

``tests/test_predict_fast.py`` checks the equality with ``Booster.predict`` (bit for bit, NaN,
zeros, tiny values, infinities, values on thresholds); ``benchmarks/screen.py`` measures the speed.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

#: LightGBM's kZeroThreshold (``1e-35f``): feature values with ``|x| <=`` this are read as 0.
KZERO = np.float32(1e-35)

#: Objectives whose prediction is the raw score (no output transform).
RAW_OBJECTIVES = {
    "regression",
    "regression_l2",
    "l2",
    "mean_squared_error",
    "mse",
    "regression_l1",
    "l1",
    "mean_absolute_error",
    "mae",
    "huber",
    "fair",
    "quantile",
    "mape",
}

#: Rows per block (at most): the per-block cost of the reach ops (~160,000 numpy calls for 5 x 300
#: trees of 31 leaves) is spread over more rows in larger blocks.
BLOCK_ROWS = 131072

#: Bytes of condition bits per worker thread (conditions x block rows / 8) that blocks are cut to:
#: 18,478 conditions (the default ensemble) x 131,072 rows take 300 MB; larger models get smaller blocks.
CONDITION_BYTES = 256 << 20

#: Bytes of comparison results kept in cache at a time while computing conditions.
CACHE_BYTES = 1 << 21

#: Leaf codes are bytes: trees with more leaves are left to LightGBM.
MAX_PLANES = 8

_ONES = ~np.uint64(0)
# _SPREAD[b]: the 8 bits of byte b spread over the 8 bytes of a little-endian uint64
_SPREAD = np.array([sum(((b >> j) & 1) << (8 * j) for j in range(8)) for b in range(256)], dtype="<u8")
_LUTS = [(_SPREAD << np.uint64(k)).astype("<u8") for k in range(MAX_PLANES)]

# op kinds of the compiled trees
_AND, _XOR, _OR_PLANE = 0, 1, 2


class Unsupported(ValueError):
    """A model (or a tree of it) this module does not evaluate; LightGBM does."""


def _round_down_f32(t: float) -> np.float32:
    """The largest float32 <= t: for float32 x, ``x > t`` (in double) iff ``x > _round_down_f32(t)``."""
    with np.errstate(over="ignore"):  # 1e300 (LightGBM's threshold of a last bin) -> inf -> max float32
        f = np.float32(t)
    if float(f) > t:
        f = np.nextafter(f, np.float32(-np.inf))
    return f


def _condition_key(node: dict[str, Any]) -> tuple[int, float, bool, int]:
    """(feature, float32 threshold, zero excluded, extra) of a split: the rows going right are
    ``x > t32`` (and ``x != 0`` if zero excluded), OR'ed with NaN rows (extra 1) or NaN and zero rows
    (extra 2)."""
    if node.get("decision_type") != "<=":
        raise Unsupported(f"decision type {node.get('decision_type')!r} (categorical split)")
    f = int(node["split_feature"])
    thr = float(node["threshold"])
    t32 = float(_round_down_f32(thr))
    missing, default_left = node["missing_type"], bool(node["default_left"])
    if missing == "None":  # NaN is read as 0: right iff 0 > threshold
        return f, t32, False, 1 if 0.0 > thr else 0
    if missing == "NaN":  # NaN goes to the default side
        return f, t32, False, 0 if default_left else 1
    if missing == "Zero":  # NaN and 0 go to the default side
        return f, t32, True, 0 if default_left else 2
    raise Unsupported(f"missing type {missing!r}")


class _Tree:
    """One tree as a list of bitwise ops over reach slots, and its leaf values by code."""

    __slots__ = ("ops", "values", "n_slots")

    def __init__(self, root: dict[str, Any], conditions: dict[tuple, int]):
        self.ops: list[tuple[int, int, int, int]] = []  # (kind, a, b, dst)
        values: list[float] = []
        self.n_slots = 1  # slot 0: all rows
        # leaves get codes in depth-first order; a bit shared by every leaf below a node is OR'ed
        # in once, at the highest such node
        self._walk(root, 0, values, conditions, 0)
        self.values = np.asarray(values, dtype=np.float64)  # padded with NaN by Forest

    def _leaves(self, node: dict[str, Any]) -> int:
        if "leaf_value" in node:
            return 1
        return self._leaves(node["left_child"]) + self._leaves(node["right_child"])

    def _walk(self, node: dict[str, Any], slot: int, values: list[float], conditions: dict, have: int) -> None:
        first = len(values)
        n = self._leaves(node)
        common = ~0
        for code in range(first, first + n):
            common &= code
        new_bits = common & ~have & ((1 << MAX_PLANES) - 1)
        for k in range(MAX_PLANES):
            if new_bits >> k & 1:
                self.ops.append((_OR_PLANE, slot, k, 0))
        have |= new_bits
        if "leaf_value" in node:
            if "leaf_coeff" in node:
                raise Unsupported("linear tree")
            values.append(float(node["leaf_value"]))
            return
        c = conditions.setdefault(_condition_key(node), len(conditions))
        right, left = self.n_slots, self.n_slots + 1
        self.n_slots += 2
        self.ops.append((_AND, slot, c, right))
        n_left = self._leaves(node["left_child"])
        left_common = ~0
        for code in range(first, first + n_left):
            left_common &= code
        # the left reach is needed unless the left child is a leaf whose bits are all in place
        if "leaf_value" not in node["left_child"] or (left_common & ~have & ((1 << MAX_PLANES) - 1)):
            self.ops.append((_XOR, slot, right, left))
        self._walk(node["left_child"], left, values, conditions, have)
        self._walk(node["right_child"], right, values, conditions, have)


class Forest:
    """The boosters of one ensemble compiled for :meth:`predict` (same results as ``Booster.predict``)."""

    def __init__(self, dumps: Sequence[dict[str, Any]], n_features: int, block_rows: int = BLOCK_ROWS):
        self.n_features = n_features
        self.block_rows = max(64, -(-int(block_rows) // 64) * 64)
        conditions: dict[tuple, int] = {}
        self.boosters: list[list[_Tree]] = []
        for d in dumps:
            if d.get("num_class", 1) != 1 or d.get("num_tree_per_iteration", 1) != 1:
                raise Unsupported("several classes")
            if d.get("average_output"):
                raise Unsupported("average_output (random forest)")
            objective = str(d.get("objective", "")).split()
            if not objective or objective[0] not in RAW_OBJECTIVES or "sqrt" in objective:
                raise Unsupported(f"objective {d.get('objective')!r}")
            if int(d["max_feature_idx"]) + 1 != n_features:
                raise Unsupported(f"{int(d['max_feature_idx']) + 1} features, not {n_features}")
            self.boosters.append([_Tree(t["tree_structure"], conditions) for t in d["tree_info"]])
        if not any(self.boosters):
            raise Unsupported("no trees")
        self.n_planes = max(1, max(int(len(t.values) - 1).bit_length() for b in self.boosters for t in b))
        if self.n_planes > MAX_PLANES:
            raise Unsupported(f"trees with more than {2**MAX_PLANES} leaves")
        for trees in self.boosters:  # every code indexes a value; one no leaf has reads NaN
            for t in trees:
                t.values = np.concatenate([t.values, np.full((1 << self.n_planes) - len(t.values), np.nan)])
        # conditions numbered feature by feature, plain ones (by threshold) first: each feature's
        # plain conditions are one contiguous range of rows of the condition bits
        order = sorted(conditions, key=lambda k: (k[0], k[2], k[1], k[3]))
        number = {key: i for i, key in enumerate(order)}
        renumber = np.empty(len(order), dtype=np.intp)
        for key, old in conditions.items():
            renumber[old] = number[key]
        for trees in self.boosters:
            for t in trees:
                t.ops = [(kind, a, int(renumber[b]) if kind == _AND else b, dst) for kind, a, b, dst in t.ops]
        self.n_conditions = len(order)
        by_feature: dict[int, list[tuple[int, float, bool, int]]] = {}
        for i, (f, t32, zero_excl, extra) in enumerate(order):
            by_feature.setdefault(f, []).append((i, t32, zero_excl, extra))
        self.features = np.array(sorted(by_feature), dtype=np.intp)
        # per used feature: the range of its plain conditions and their thresholds (a column), the
        # conditions OR'ed with NaN, the zero-type ones
        self._by_feature = []
        for f in self.features:
            items = by_feature[int(f)]
            plain = [(i, t) for i, t, z, _ in items if not z]
            lo = plain[0][0] if plain else 0
            self._by_feature.append(
                (
                    (lo, lo + len(plain)),
                    np.array([t for _, t in plain], dtype=np.float32).reshape(-1, 1),
                    np.array([i for i, _, z, e in items if not z and e == 1], dtype=np.intp),
                    [(i, np.float32(t), e) for i, t, z, e in items if z],
                )
            )
        self.max_slots = max(t.n_slots for b in self.boosters for t in b)
        self.max_trees = max(len(b) for b in self.boosters)
        fit = (CONDITION_BYTES * 8 // max(1, self.n_conditions)) // 64 * 64
        self.block_rows = max(64, min(self.block_rows, max(4096, fit)))
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()

    @classmethod
    def from_boosters(cls, boosters: Sequence[Any], n_features: int, block_rows: int = BLOCK_ROWS) -> Forest | None:
        """The compiled forest of LightGBM boosters, or None for a model this module does not handle."""
        try:
            return cls([b.dump_model() for b in boosters], n_features, block_rows)
        except (Unsupported, KeyError, TypeError) as exc:
            import logging

            logging.getLogger(__name__).debug("fast prediction not used: %s", exc)
            return None

    def predict(self, X: np.ndarray, num_threads: int = 1) -> np.ndarray:
        """Every booster's prediction of every row: shape (boosters, rows), float64.

        ``X`` is a float32 array (rows, features); its rows are cut into blocks, one thread each.
        """
        X = np.asarray(X)
        if X.dtype != np.float32 or X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must be float32 of shape (rows, {self.n_features}), got {X.dtype} {X.shape}")
        n = X.shape[0]
        out = np.empty((len(self.boosters), n), dtype=np.float64)
        if n == 0:
            return out
        threads = max(1, int(num_threads))
        n_blocks = threads * math.ceil(n / (threads * self.block_rows))
        size = -(-math.ceil(n / n_blocks) // 64) * 64
        blocks = [(s, min(s + size, n)) for s in range(0, n, size)]
        threads = min(threads, len(blocks))
        workers = self._take_workers(threads)
        try:
            if threads == 1:
                for s, e in blocks:
                    workers[0].run(X, s, e, out)
            else:
                with ThreadPoolExecutor(threads) as pool:
                    futures = [
                        pool.submit(self._run_blocks, w, X, blocks[i::threads], out) for i, w in enumerate(workers)
                    ]
                    for fut in futures:
                        fut.result()
        finally:
            with self._lock:
                self._workers.extend(workers)
        return out

    @staticmethod
    def _run_blocks(worker: _Worker, X: np.ndarray, blocks: list[tuple[int, int]], out: np.ndarray) -> None:
        for s, e in blocks:
            worker.run(X, s, e, out)

    def _take_workers(self, n: int) -> list[_Worker]:
        with self._lock:
            got, self._workers = self._workers[:n], self._workers[n:]
        return got + [_Worker(self) for _ in range(n - len(got))]


class _Worker:
    """Buffers of one thread (condition bits, reach slots, leaf-code planes) and the ops bound to them."""

    def __init__(self, forest: Forest):
        self.forest = forest
        block = forest.block_rows
        self.w64 = block // 64
        self.cond = np.zeros((forest.n_conditions, block // 8), dtype=np.uint8)
        cond64 = self.cond.view(np.uint64)
        self.slots = np.zeros((forest.max_slots, self.w64), dtype=np.uint64)
        self.slots[0] = _ONES
        self.planes = np.zeros((forest.max_trees, forest.n_planes, self.w64), dtype=np.uint64)
        slot = list(self.slots)
        cond = list(cond64)
        plane = [list(p) for p in self.planes]
        ufunc = {_AND: np.bitwise_and, _XOR: np.bitwise_xor}
        self.ops: list[list[tuple]] = []
        for trees in forest.boosters:
            ops = []
            for ti, tree in enumerate(trees):
                for kind, a, b, dst in tree.ops:
                    if kind == _AND:
                        ops.append((ufunc[kind], slot[a], cond[b], slot[dst]))
                    elif kind == _XOR:
                        ops.append((ufunc[kind], slot[a], slot[b], slot[dst]))
                    else:
                        ops.append((np.bitwise_or, plane[ti][b], slot[a], plane[ti][b]))
            self.ops.append(ops)
        self.codes64 = np.empty(block // 8, dtype=np.uint64)
        self.tmp64 = np.empty(block // 8, dtype=np.uint64)
        self.index = np.empty(block, dtype=np.intp)
        self.vals = np.empty(block, dtype=np.float64)
        self.acc = np.empty(block, dtype=np.float64)
        self.bools = np.empty(
            CACHE_BYTES + 512 * max((hi - lo for (lo, hi), *_ in forest._by_feature), default=1), dtype=bool
        )

    def _conditions(self, X: np.ndarray, s: int, e: int) -> None:
        f = self.forest
        n = e - s
        nbytes = -(-n // 8)
        cols = np.ascontiguousarray(X[s:e][:, f.features].T)
        np.copyto(cols, np.float32(0), where=np.abs(cols) <= KZERO)  # LightGBM reads these as 0
        cond = self.cond
        for x, ((lo, hi), thr, nan_idx, zero) in zip(cols, f._by_feature):
            if hi > lo:
                # in pieces of rows whose comparison bytes stay in cache (2.5x faster than all at once)
                step = max(512, (CACHE_BYTES // (hi - lo)) // 64 * 64)
                buf = self.bools[: (hi - lo) * step].reshape(hi - lo, step)
                for a in range(0, n, step):
                    b = min(a + step, n)
                    part = buf[:, : b - a]
                    np.greater(x[a:b], thr, out=part)
                    cond[lo:hi, a // 8 : -(-b // 8)] = np.packbits(part, axis=1, bitorder="little")
            if len(nan_idx):
                cond[nan_idx, :nbytes] |= np.packbits(np.isnan(x), bitorder="little")
            for i, t, extra in zero:
                bits = np.packbits((x > t) & (x != 0), bitorder="little")
                if extra:
                    bits |= np.packbits(np.isnan(x) | (x == 0), bitorder="little")
                cond[i, :nbytes] = bits

    def run(self, X: np.ndarray, s: int, e: int, out: np.ndarray) -> None:
        n = e - s
        nbytes = -(-n // 8)
        self._conditions(X, s, e)
        planes8 = self.planes.view(np.uint8)  # (trees, planes, block / 8)
        n_planes = self.forest.n_planes
        codes, tmp, index, vals, acc = (
            self.codes64[:nbytes],
            self.tmp64[:nbytes],
            self.index[:n],
            self.vals[:n],
            self.acc[:n],
        )
        codes8 = self.codes64.view(np.uint8)[:n]
        for bi, (trees, ops) in enumerate(zip(self.forest.boosters, self.ops)):
            self.planes[: len(trees)] = 0
            for fn, a, b, o in ops:
                fn(a, b, o)
            acc[:] = 0.0
            for ti, tree in enumerate(trees):
                p = planes8[ti]
                np.take(_LUTS[0], p[0, :nbytes], out=codes)
                for k in range(1, n_planes):
                    np.take(_LUTS[k], p[k, :nbytes], out=tmp)
                    codes |= tmp
                index[:] = codes8
                np.take(tree.values, index, out=vals, mode="clip")
                acc += vals
            out[bi, s:e] = acc
