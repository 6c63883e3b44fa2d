"""The release gate on the ``champion`` alias: a version must beat both baselines, then the champion.

``promote_if_better`` moves the alias to a version only when its metric (a version tag,
``clinical_macro_f1`` by default) is strictly higher than

1. each baseline's figure on the same split (``most_common``: the most common training report;
   ``nearest_neighbour``: the report of the nearest training image), recorded on the version by
   ``register_checkpoint(..., baselines=...)`` as tags ``baseline_<name>_<metric>``. This holds
   also when no champion exists yet: a model that writes worse reports than copying the most
   common one must never draft for radiologists. A version without baseline figures is refused;
2. the current champion's metric (a tie keeps the champion).

The decision, its reason and the baseline figures are written as tags on the version
(``gate_decision``, ``gate_reason``, ``gate_compared_to``, ``gate_baseline_<name>``) and returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipelines.tracking.tracker import open_client

DEFAULT_MODEL_NAME = "medvlm"
CHAMPION = "champion"
BASELINES = ("most_common", "nearest_neighbour")
"""The baselines every champion must beat (`pipelines.evaluation.baselines`)."""


def baseline_tag(baseline: str, metric_name: str) -> str:
    """The version tag holding a baseline's figure, e.g. ``baseline_most_common_clinical_macro_f1``."""
    return f"baseline_{baseline}_{metric_name}"


@dataclass(frozen=True)
class GateDecision:
    """The release gate's decision for one version.

    Attributes:
        version: the candidate version.
        promoted: whether the candidate is now the champion.
        metric_name: the compared metric.
        candidate_value: the candidate's metric (NaN when missing or not a number).
        champion_version: the champion before the decision, or None.
        champion_value: its metric, or None.
        reason: one line explaining the decision.
        baselines: each baseline's figure on the metric (NaN when not recorded).
    """

    version: str
    promoted: bool
    metric_name: str
    candidate_value: float
    champion_version: str | None
    champion_value: float | None
    reason: str
    baselines: dict[str, float] = field(default_factory=dict)


def _champion(client, model_name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def _tag_value(mv, name: str) -> float:
    try:
        return float(mv.tags.get(name, "nan"))
    except ValueError:
        return float("nan")


def _decide(value: float, baselines: dict[str, float], champ_version: str | None, champ_value: float | None,
            version: str, metric_name: str, alias: str) -> tuple[bool, str]:
    if not math.isfinite(value):
        return False, f"candidate has no finite {metric_name}"
    missing = sorted(name for name, v in baselines.items() if not math.isfinite(v))
    if missing:
        return False, f"no baseline figures recorded ({', '.join(missing)}): evaluate against the baselines first"
    beaten = [f"{name} {v:.4f}" for name, v in baselines.items() if value <= v]
    if beaten:
        return False, f"{metric_name} {value:.4f} does not beat baseline {', '.join(beaten)}"
    versus = "baselines " + ", ".join(f"{n} {v:.4f}" for n, v in baselines.items())
    if champ_version is None:
        return True, f"no {alias} yet; {metric_name} {value:.4f} > {versus}"
    if champ_version == version:
        return True, f"already {alias}"
    if champ_value is None or not math.isfinite(champ_value) or value > champ_value:
        return True, f"{metric_name} {value:.4f} > {champ_value:.4f} of v{champ_version} and {versus}"
    return False, f"{metric_name} {value:.4f} <= {champ_value:.4f} of v{champ_version}"


def promote_if_better(
    version: str | int,
    metric_name: str = "clinical_macro_f1",
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    tracking_uri: str | None = None,
    alias: str = CHAMPION,
) -> GateDecision:
    """Move ``alias`` to ``version`` only if it beats both baselines and the current holder on ``metric_name``.

    Higher is better; a tie keeps the champion (and never beats a baseline); a candidate whose
    metric or baseline figures are missing or not finite is never promoted.

    Args:
        version: the candidate version.
        metric_name: the version tag compared.
        model_name: registered model name.
        tracking_uri: store URI; default as ``resolve_tracking_uri``.
        alias: the alias to move.

    Returns:
        The ``GateDecision``.
    """
    client = open_client(tracking_uri)
    version = str(version)
    candidate = client.get_model_version(model_name, version)
    value = _tag_value(candidate, metric_name)
    baselines = {name: _tag_value(candidate, baseline_tag(name, metric_name)) for name in BASELINES}
    champ = _champion(client, model_name, alias)
    champ_version = str(champ.version) if champ is not None else None
    champ_value = _tag_value(champ, metric_name) if champ is not None else None
    promoted, reason = _decide(value, baselines, champ_version, champ_value, version, metric_name, alias)
    if promoted and champ_version != version:
        client.set_registered_model_alias(model_name, alias, version)
    tags = {"gate_decision": "promoted" if promoted else "rejected", "gate_reason": reason,
            "gate_compared_to": champ_version or "none",
            **{f"gate_baseline_{name}": repr(v) for name, v in baselines.items()}}
    for key, text in tags.items():
        client.set_model_version_tag(model_name, version, key, text)
    return GateDecision(version, promoted, metric_name, value, champ_version, champ_value, reason, baselines)


def champion_exists(
    model_name: str = DEFAULT_MODEL_NAME, *, tracking_uri: str | None = None, alias: str = CHAMPION
) -> bool:
    """Whether ``models:/{model_name}@{alias}`` resolves; a missing SQLite file means no (not created)."""
    from pipelines.tracking.locations import resolve_tracking_uri, sqlite_path

    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return False
    from mlflow.exceptions import MlflowException

    client = open_client(uri)
    try:
        return _champion(client, model_name, alias) is not None
    except MlflowException:  # registered model missing
        return False
