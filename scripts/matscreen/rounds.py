"""Active learning: rounds of screen -> PySCF -> retrain (``rounds:`` in the config).

Round 0 is the label stage's seeded choice (``label.select``). Round ``r`` >= 1 is the
``acquire`` checkpoint: it reads the candidate predictions of round ``r - 1``'s model, scores the
candidates that pass ``screen.filters`` and have no label yet (neither a PySCF label of the run
nor one of ``train.external_labels`` for the screening target: the model trains on those) by the
acquisition function, and walks them best first:

* ``ei`` (expected improvement, the default): with the prediction ``mu`` and calibrated
  uncertainty ``sigma`` of the screening target (``screen.rank_by``), and ``best`` the best label
  of that target the model trains on (the run's PySCF labels and the external ones; the smallest,
  the largest with ``screen.maximize``; for a stability target of ``train.stability.targets``
  such as E_hull, the stability threshold instead),
  ``EI = (best - mu) Phi(z) + sigma phi(z)``, ``z = (best - mu) / sigma`` (signs flipped for
  maximisation); candidates with ``sigma = 0`` get ``max(best - mu, 0)``.
* ``lcb``: ``-(mu - kappa sigma)`` (the optimistic bound), as the screen's own score.

Diversity: one candidate per reduced formula, at most ``rounds.max_per_system`` per chemical
system (counting the compounds already labeled, external labels included) and ``rounds.max_per_family`` per family in a
round; candidates with an element outside ``rounds.elements`` (when set), cells of more than
``rounds.max_sites`` atoms and candidates whose label a seed store holds as failed (a cached
failure is not recomputed, so choosing one buys nothing) are passed over, and so, when the target is a
hull column, are candidates whose label could never get a hull (an element that no competing
phase of the structure library contains, or one of the compound's own binaries missing:
:func:`matscreen.label.missing_competitors`). Budget: ``rounds.budget.labels`` compounds and
``rounds.budget.cpu_hours`` estimated CPU hours (the resource model's ``runtime_min`` x
``threads``, the compound's and its new competing phases') over every round after round 0; a candidate that would not fit is passed over, and
when nothing fits the round chooses nothing and says so. The checkpoint writes the *cumulative*
plan (every earlier round's targets plus the new ones, each with its ``round``), planned again
against the label store, so a target is labeled once, whatever round or rerun asks for it.

:func:`rounds_table` summarises what each round chose, cost and learned (``results/rounds.parquet``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Element

from matscreen import tables
from matscreen.config import build_settings, settings_dict
from matscreen.label.settings import LabelSettings, as_settings
from matscreen.provenance import provenance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    labels: int | None
    cpu_hours: float | None


@dataclass(frozen=True)
class RoundsSettings:
    """The ``rounds:`` config section, resolved once; the schema holds the defaults."""

    count: int
    labels_per_round: int
    acquisition: str
    kappa: float
    max_per_system: int | None
    max_per_family: int | None
    max_sites: int | None
    elements: tuple[str, ...] | None
    budget: Budget


def settings(section: Mapping[str, Any] | RoundsSettings | None) -> RoundsSettings:
    return build_settings(RoundsSettings, "rounds", section)


def check_config(config: dict[str, Any]) -> None:
    """The ``rounds:`` checks a JSON schema cannot express: ``rounds.elements`` are element symbols."""
    from matscreen.config import ConfigError  # here: matscreen.config imports this module

    for i, el in enumerate((config.get("rounds") or {}).get("elements") or []):
        try:
            Element(el)
        except ValueError:
            raise ConfigError(f"config key 'rounds.elements[{i}]': unknown element {el!r}") from None


@dataclass(frozen=True)
class Objective:
    """The screening target and its direction (``screen.rank_by``, ``screen.maximize``)."""

    target: str
    maximize: bool
    #: for stability targets (``train.stability.targets``): the stability threshold (eV/atom)
    threshold: float | None = None

    def better(self, values: pd.Series) -> float:
        """The best of ``values`` (NaN when there is none)."""
        v = values.dropna()
        return float("nan") if v.empty else float(v.max() if self.maximize else v.min())

    def incumbent(self, labels: pd.Series) -> float:
        """What expected improvement improves on: the best label so far, or, for a stability target,
        the stability threshold (E_hull is 0 for every stable compound, so "better than the best"
        would ask for the impossible; EI then is the expected margin below the threshold)."""
        return float(self.threshold) if self.threshold is not None else self.better(labels)


def acquisition_values(
    mu: np.ndarray, sigma: np.ndarray, best: float, objective: Objective, how: str, kappa: float
) -> np.ndarray:
    """Acquisition value of each candidate (larger = label it sooner)."""
    from scipy.stats import norm  # here: the controller's config check imports this module, not SciPy

    sign = 1.0 if objective.maximize else -1.0  # improvement = sign * (value - best)
    mu, sigma = np.asarray(mu, float), np.nan_to_num(np.asarray(sigma, float))
    if how == "lcb" or not np.isfinite(best):  # no label of the target yet: EI has no incumbent
        return sign * mu + kappa * sigma
    gain = sign * (mu - best)
    out = np.maximum(gain, 0.0)
    pos = sigma > 0
    z = gain[pos] / sigma[pos]
    out[pos] = gain[pos] * norm.cdf(z) + sigma[pos] * norm.pdf(z)
    return out


#: A round looks at most this many candidates per label it may still choose (each look builds a
#: prototype, its competing phases and their resource estimates): a budget too small for the best
#: candidates then ends the round instead of walking a million-candidate space.
EXAMINE_PER_LABEL = 25


def _system(formula: str) -> frozenset[str]:
    return frozenset(el.symbol for el in Composition(formula).elements)


def _estimated_hours(plan: pd.DataFrame) -> pd.Series:
    """Each row's estimated CPU hours (``runtime_min`` x ``threads``)."""
    return plan["runtime_min"].astype(float).fillna(0) * plan["threads"].astype(float).fillna(1) / 60.0


def _charged_hours(plan: pd.DataFrame) -> float:
    """What a plan's rows charged to ``rounds.budget.cpu_hours`` when they were chosen
    (``budget_cpu_hours``; rows of plans written before that column: their estimates)."""
    estimate = _estimated_hours(plan)
    if "budget_cpu_hours" not in plan.columns:
        return float(estimate.sum())
    return float(plan["budget_cpu_hours"].astype(float).fillna(estimate).sum())


def choose(
    predictions: pd.DataFrame,
    candidates: pd.DataFrame,
    previous: pd.DataFrame,
    labels: pd.DataFrame,
    objective: Objective,
    rounds_: RoundsSettings,
    label_settings: LabelSettings,
    round_: int,
    filters_pass: np.ndarray | None = None,
    external: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Round ``round_``'s new targets (LABEL_TARGETS rows without the plan columns): the chosen
    compounds and the competing phases they add. ``previous`` is round ``round_ - 1``'s plan,
    ``labels`` its labels, ``predictions`` its model's candidate predictions, ``external`` the
    prepared external labels (EXTERNAL_LABELS) the model trains on as well: a compound they hold
    for the screening target counts as labeled (it is not chosen, and it counts for its system)."""
    from matscreen.families import get_family
    from matscreen.label import HULL_COLUMNS, missing_competitors, own_binaries_of_row
    from matscreen.label.store import seed_store_status
    from matscreen.label.targets import competing_targets, computable, elements_of, job_cpu_hours, prototype_target
    from matscreen.screen import pred_column, std_column, trained_formulas

    s = rounds_
    empty = tables.empty_frame(tables.LABEL_TARGETS)
    # budget spent by every round after round 0 so far (as charged when they were chosen)
    later = previous[previous["round"].fillna(0).astype(int) >= 1]
    spent_h = _charged_hours(later)
    spent_n = int((later["origin"] == "candidate").sum())
    left_n = s.labels_per_round if s.budget.labels is None else min(s.labels_per_round, s.budget.labels - spent_n)
    left_h = float("inf") if s.budget.cpu_hours is None else s.budget.cpu_hours - spent_h
    if left_n <= 0 or left_h <= 0:
        log.info(
            "round %d: the label budget is spent (%d compounds, %.2f of %s estimated CPU hours): nothing to label",
            round_,
            spent_n,
            spent_h,
            s.budget.cpu_hours,
        )
        return empty

    col, std = pred_column(objective.target), std_column(objective.target)
    if col not in predictions.columns:
        raise ValueError(
            f"config key 'screen.rank_by': the model predicts no {objective.target!r} "
            f"(columns {sorted(c for c in predictions.columns if c.startswith('pred__'))})"
        )
    compounds = previous[previous["origin"] != "competing"]
    done_ids = set(previous["candidate_id"].dropna())
    done_formulas = {Composition(f).reduced_formula for f in compounds["formula"]}
    per_system: dict[frozenset[str], int] = {}
    for f in compounds["formula"]:
        per_system[_system(f)] = per_system.get(_system(f), 0) + 1
    # compounds the model already trains on from train.external_labels: choosing one would check
    # the model on its own training data and spend a label job on a known answer
    trained = trained_formulas(external, objective.target)
    for f in sorted(trained - done_formulas):
        per_system[_system(f)] = per_system.get(_system(f), 0) + 1
    target_col = objective.target
    ok = labels[(labels["status"] == "ok") & labels["structure_id"].isin(set(compounds["structure_id"]))]
    so_far = ok[target_col] if target_col in ok.columns else pd.Series(dtype=float)
    if external is not None and len(external):  # the model's training labels: the run's and the external ones
        so_far = pd.concat([so_far, external.loc[external["target"] == target_col, "value"]], ignore_index=True)
    best = objective.incumbent(so_far)

    pool = predictions
    if filters_pass is not None:
        pool = pool[np.asarray(filters_pass, dtype=bool)]
    pool = pool[~pool["candidate_id"].isin(done_ids) & pool[col].notna()]
    value = acquisition_values(pool[col].to_numpy(), pool[std].to_numpy(), best, objective, s.acquisition, s.kappa)
    order = pd.DataFrame({"candidate_id": pool["candidate_id"].to_numpy(), "value": value})
    order = order.sort_values(["value", "candidate_id"], ascending=[False, True], kind="mergesort")
    by_id = candidates.set_index("candidate_id")

    rows: list[dict[str, Any]] = []
    competing_rows: list[pd.DataFrame] = []
    known = set(previous["structure_id"])
    planned_competing = list(previous.loc[previous["origin"] == "competing", "formula"])
    needs_hull = objective.target in HULL_COLUMNS
    per_family: dict[str, int] = {}
    skipped_budget = built = skipped_trained = 0
    for cid in order["candidate_id"]:
        if len(rows) >= left_n:
            break
        if built >= EXAMINE_PER_LABEL * left_n:  # each look builds a prototype and its competing phases
            log.info("round %d: stopped after the %d best-scored candidates that pass the caps", round_, built)
            break
        rec = {"candidate_id": cid, **by_id.loc[cid].to_dict()}
        reduced = Composition(rec["formula"]).reduced_formula
        system = frozenset(elements_of(rec))
        if reduced in done_formulas:
            continue
        if reduced in trained:
            skipped_trained += 1
            continue
        if s.max_per_system is not None and per_system.get(system, 0) >= s.max_per_system:
            continue
        if s.max_per_family is not None and per_family.get(rec["family"], 0) >= s.max_per_family:
            continue
        if s.elements is not None and not system <= set(s.elements):
            continue
        if not computable(sorted(system), label_settings):
            continue
        if s.max_sites is not None and get_family(rec["family"]).primitive_atoms > s.max_sites:
            continue  # known without building the prototype: it does not count as one examined
        row = prototype_target(rec)
        built += 1
        if row["structure_id"] in known or (s.max_sites is not None and row["nsites"] > s.max_sites):
            continue
        failed_before = seed_store_status(label_settings, "structures", row["structure_id"])
        if failed_before not in (None, "ok"):  # a cached failure: choosing it would buy no label
            log.info("round %d: %s passed over: the seed store holds its label as %s", round_, reduced, failed_before)
            continue
        comp = competing_targets(pd.DataFrame([row]), label_settings, known=known)
        if needs_hull:  # a label that could never get the hull the objective ranks by is not worth its job
            why = missing_competitors(system, [*planned_competing, *comp["formula"]], own_binaries_of_row(row))
            if why:
                log.info("round %d: %s passed over: %s", round_, reduced, why)
                continue
        # a label a seed store holds costs no job (the run's own store is not asked: see job_cpu_hours)
        row["budget_cpu_hours"] = job_cpu_hours(row["structure_id"], row["structure"], label_settings)
        comp = comp.assign(
            budget_cpu_hours=[
                job_cpu_hours(i, j, label_settings) for i, j in zip(comp["structure_id"], comp["structure"])
            ]
        )
        cost = row["budget_cpu_hours"] + float(comp["budget_cpu_hours"].sum())
        if cost > left_h:
            skipped_budget += 1
            continue
        left_h -= cost
        rows.append(row)
        competing_rows.append(comp)
        known |= {row["structure_id"], *comp["structure_id"]}
        planned_competing += list(comp["formula"])
        done_formulas.add(reduced)
        per_system[system] = per_system.get(system, 0) + 1
        per_family[rec["family"]] = per_family.get(rec["family"], 0) + 1
    if skipped_trained:
        log.info(
            "round %d: %d better-scored candidates passed over: the model already trains on their %s "
            "(train.external_labels)",
            round_,
            skipped_trained,
            objective.target,
        )
    if skipped_budget:
        log.info(
            "round %d: %d better-scored candidates passed over: their label jobs would exceed rounds.budget.cpu_hours",
            round_,
            skipped_budget,
        )
    if not rows:
        log.warning("round %d: no candidate could be chosen (budget, caps or no unlabeled candidate left)", round_)
        return empty
    parts = [pd.DataFrame(rows), *(c for c in competing_rows if len(c))]
    new = pd.concat([p.dropna(axis=1, how="all") for p in parts], ignore_index=True)  # all-null columns: conform
    new["round"] = pd.Series([round_] * len(new), dtype="Int64")
    log.info(
        "round %d (%s, incumbent %.4g): chose %d compounds (%s) and %d new competing phases",
        round_,
        s.acquisition,
        best,
        len(rows),
        ", ".join(r["formula"] for r in rows),
        int((new["origin"] == "competing").sum()),
    )
    return tables.conform(new, tables.LABEL_TARGETS)


def extend(plan: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``plan`` with ``new``'s rows appended (LABEL_TARGETS; all-null columns stay null)."""
    parts = [p.dropna(axis=1, how="all") for p in (plan, new) if len(p)]
    if not parts:
        return plan
    return tables.conform(pd.concat(parts, ignore_index=True), tables.LABEL_TARGETS)


def run_acquire(
    prediction_paths: Sequence[str],
    candidate_paths: Sequence[str],
    previous_path: str,
    labels_path: str,
    targets_out: str,
    references_out: str,
    round_: int,
    rounds_section: Mapping[str, Any] | RoundsSettings,
    label_section: Mapping[str, Any] | LabelSettings,
    screen_section: Mapping[str, Any],
    config_hash: str = "",
    stability: Mapping[str, Any] | None = None,
    external_paths: Sequence[str] = (),
) -> None:
    """The checkpoint ``acquire`` of round ``round_``: the cumulative plan and its references.
    ``stability`` is ``train.stability`` (its ``targets`` get the threshold as EI's incumbent);
    ``external_paths`` the prepared external labels (rule ``prepare_external_labels``), whose
    compounds are not chosen again."""
    from matscreen import screen
    from matscreen.label.targets import plan_jobs

    s, ls, ss = settings(rounds_section), as_settings(label_section), screen.settings(screen_section)
    preds = tables.read_tables(prediction_paths, tables.PREDICTIONS)
    rank_by = screen.rank_target(preds, ss)
    stab = dict(stability or {})
    threshold = stab.get("threshold_ev_per_atom") if rank_by in (stab.get("targets") or ()) else None
    objective = Objective(rank_by, ss.maximize, None if threshold is None else float(threshold))
    previous = tables.read_table(previous_path, tables.LABEL_TARGETS)
    labels = tables.read_table(labels_path, tables.LABELS)
    candidates = tables.read_tables(candidate_paths, tables.CANDIDATES)
    passes = screen.filter_mask(preds, ss) if len(preds) else None
    external = tables.read_tables(external_paths, tables.EXTERNAL_LABELS) if external_paths else None
    new = choose(preds, candidates, previous, labels, objective, s, ls, round_, passes, external)
    targets, refs = plan_jobs(extend(previous, new), ls)
    prov = provenance(
        "acquire",
        {
            "round": round_,
            "rounds": {k: v for k, v in settings_dict(s).items() if k != "count"},
            "screen": {"rank_by": objective.target, "maximize": objective.maximize},
            "incumbent_threshold": objective.threshold,
            "settings_hash": ls.hash,
        },
        config_hash,
    )
    tables.write_tables(
        [(targets, targets_out, tables.LABEL_TARGETS), (refs, references_out, tables.REFERENCE_TARGETS)], prov
    )


def rounds_table(
    plans: Sequence[pd.DataFrame],
    labels: pd.DataFrame,
    predictions: Sequence[pd.DataFrame],
    metrics: Sequence[pd.DataFrame],
    objective: Objective,
    acquisition: str,
) -> pd.DataFrame:
    """One row per round from its plan (cumulative targets), the final labels (every label has its
    wall time), the previous round's candidate predictions and the round's CV metrics.

    ``predictions[r]`` are round ``r``'s model's predictions (``r`` < the last round) with the
    columns candidate_id, prediction, uncertainty of the screening target.
    """
    from matscreen.train import pooled_metrics

    target = objective.target
    lab = labels.set_index("structure_id")
    rows = []
    spent = 0.0
    for r, plan in enumerate(plans):
        plan_round = plan["round"].fillna(0).astype(int)
        new = plan[plan_round == r]
        compounds = new[new["origin"] != "competing"]
        chosen = lab.reindex(compounds["structure_id"])
        value = chosen[target] if target in chosen.columns else pd.Series(np.nan, index=chosen.index)
        ok = (chosen["status"] == "ok") & value.notna() & np.isfinite(value.astype(float))
        all_compounds = plan[plan["origin"] != "competing"]
        seen = lab.reindex(all_compounds["structure_id"])
        seen_value = seen[target] if target in seen.columns else pd.Series(np.nan, index=seen.index)
        seen_ok = (seen["status"] == "ok") & seen_value.notna()
        est = float(_estimated_hours(new).sum())
        if r >= 1:
            spent += _charged_hours(new)
        measured = lab.reindex(new["structure_id"])
        threads = new.set_index("structure_id")["threads"].astype(float).fillna(1)
        label_h = float((measured["wall_s"].astype(float) * threads).sum() / 3600.0)
        row: dict[str, Any] = {
            "round": r,
            "target": target,
            "acquisition": "seeded" if r == 0 else acquisition,
            "n_chosen": len(compounds),
            "n_competing": int((new["origin"] == "competing").sum()),
            "n_new_ok": int(ok.sum()),
            "n_train": int(seen_ok.sum()),
            "new_mae": np.nan,
            "new_rmse": np.nan,
            "n_held_up": pd.NA,
            "best_label": objective.better(seen_value[seen_ok].astype(float)),
            "est_cpu_hours": est,
            "label_cpu_hours": label_h,
            "budget_cpu_hours_spent": spent,
        }
        if r >= 1 and ok.any():
            prev = predictions[r - 1].set_index("candidate_id")
            ids = compounds.loc[ok.to_numpy(), "candidate_id"]
            pred = prev.reindex(ids)
            y = value[ok].astype(float).to_numpy()
            err = pred["prediction"].to_numpy(float) - y
            row["new_mae"] = float(np.mean(np.abs(err)))
            row["new_rmse"] = float(np.sqrt(np.mean(err**2)))
            bound = pred["prediction"].to_numpy(float) + (-1 if objective.maximize else 1) * pred[
                "uncertainty"
            ].to_numpy(float)
            row["n_held_up"] = int(np.sum(y >= bound) if objective.maximize else np.sum(y <= bound))
        elif r >= 1:
            row["n_held_up"] = 0
        pooled = pooled_metrics(metrics[r], target) if r < len(metrics) else pd.DataFrame()
        mae = pooled.loc[pooled["metric"] == "mae", "value"] if len(pooled) else pd.Series(dtype=float)
        row["cv_mae"] = float(mae.iloc[0]) if len(mae) else np.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    out["n_held_up"] = out["n_held_up"].astype("Int64")
    return tables.conform(out, tables.ROUNDS)


def run_rounds_table(
    plan_paths: Sequence[str],
    labels_path: str,
    prediction_paths: Sequence[Sequence[str]],
    metrics_paths: Sequence[str],
    out_path: str,
    rounds_section: Mapping[str, Any],
    screen_section: Mapping[str, Any],
    config_hash: str = "",
) -> None:
    """The rule ``rounds``: ``results/rounds.parquet``."""
    from matscreen import screen

    s, ss = settings(rounds_section), screen.settings(screen_section)
    plans = [tables.read_table(p, tables.LABEL_TARGETS) for p in plan_paths]
    labels = tables.read_table(labels_path, tables.LABELS)
    metrics = [tables.read_table(p, tables.CV_METRICS) for p in metrics_paths]
    target = ss.rank_by or (str(metrics[-1]["target"].iloc[0]) if len(metrics[-1]) else "")
    objective = Objective(target, ss.maximize)
    preds = []
    for shard_paths in prediction_paths:
        p = tables.read_tables(
            shard_paths, tables.PREDICTIONS, ["candidate_id", screen.pred_column(target), screen.std_column(target)]
        )
        preds.append(
            pd.DataFrame(
                {
                    "candidate_id": p["candidate_id"],
                    "prediction": p[screen.pred_column(target)],
                    "uncertainty": p[screen.std_column(target)],
                }
            )
        )
    table = rounds_table(plans, labels, preds, metrics, objective, s.acquisition)
    tables.write_table(table, out_path, tables.ROUNDS, provenance("rounds", settings_dict(s), config_hash))
    for rec in table.to_dict("records"):
        log.info(
            "round %d: %d chosen, %d ok, new-label MAE %s, CV MAE %.4g, %.2f CPU h",
            rec["round"],
            rec["n_chosen"],
            rec["n_new_ok"],
            rec["new_mae"],
            rec["cv_mae"],
            rec["label_cpu_hours"],
        )
