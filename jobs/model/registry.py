"""MLflow: tracking set-up, the pyfunc flavour of the model, registry aliases and the gate.

The registered model holds the ``.npz`` artifact of :mod:`jobs.model.artifact`; its pyfunc loads
with numpy alone (no Spark) and answers ``user_id, k`` with the same ranking the batch
publisher uses. Aliases: ``challenger`` (newest version that beat popularity) and
``champion`` (what is published and served). Promotion to champion is automatic when
the challenger is no worse than the champion on the same holdout, or left to a reviewer
in review mode.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from jobs.config import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from jobs.model.artifact import RecModel

CHAMPION = "champion"
CHALLENGER = "challenger"
# The best version the gate ever accepted (re-scored on each new test slice): what a new
# model is held to, so a chain of promotions each a little worse cannot ratchet down.
BEST = "best"
TAG_TRAINING_KEY = "recflow.training_key"
TAG_GOLD_VERSION = "recflow.gold_interactions_version"
log = logging.getLogger(__name__)


def setup(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured store and make sure the experiment exists."""
    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if settings.tracking_uri.startswith("sqlite:///"):
        Path(settings.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    if client.get_experiment_by_name(settings.mlflow_experiment) is None:
        client.create_experiment(
            settings.mlflow_experiment, artifact_location=Path(settings.artifact_root).as_uri()
        )
    mlflow.set_experiment(settings.mlflow_experiment)
    return client


# -- the pyfunc ---------------------------------------------------------------------------


def _python_model_class() -> type:
    import mlflow.pyfunc

    class RecflowALS(mlflow.pyfunc.PythonModel):
        """Top-K for known users (seen items excluded); popular items for the rest."""

        def load_context(self, context: Any) -> None:
            from jobs.model.artifact import RecModel

            self.model = RecModel.load(context.artifacts["model"])

        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
            return predict_frame(self.model, model_input)

    return RecflowALS


def predict_frame(model: RecModel, frame: pd.DataFrame) -> pd.DataFrame:
    """``user_id, k`` rows → ``user_id, source, item_ids, scores`` rows."""
    import numpy as np

    out = []
    for user_id, k in zip(frame["user_id"].astype(str), frame["k"].astype(int), strict=True):
        row = model.user_index.get(user_id)
        if row is None:
            idx, scores = model.popular_rows(np.array([-1]), k)
            source = "popular"
        else:
            idx, scores = model.recommend_rows(np.array([row]), k)
            source = "als"
        keep = idx[0] >= 0
        out.append(
            {
                "user_id": user_id,
                "source": source,
                "item_ids": [str(model.item_ids[j]) for j in idx[0][keep]],
                "scores": [float(s) for s in scores[0][keep]],
            }
        )
    return pd.DataFrame(out)


EXAMPLE_USER = "example-user"


def log_model(
    model: RecModel,
    workdir: Path,
    registered_name: str,
    tags: dict[str, str] | None = None,
) -> Any:
    """Log the model as a pyfunc (signature, input example) and register it.

    The version is created with ``tags`` in the same call, so a version never exists
    without its training key (what makes a retried training task find it instead of
    registering a second one). Non-finite factors are refused here as well as at
    training: whoever calls this, the registry never holds a model that cannot rank.
    Returns the model info; ``registered_model_version`` is the new version.
    """
    import mlflow
    from mlflow.models import infer_signature

    model.check_finite()
    artifact = model.save(workdir / "model.npz")
    # Made-up ids: the example is stored beside the model and shown in the MLflow UI, and a
    # real user id there would be personal data outside every erasure path.
    example = pd.DataFrame({"user_id": [EXAMPLE_USER, "someone-new"], "k": [10, 5]})
    signature = infer_signature(example, predict_frame(model, example))
    # The whole `jobs` package (this file is jobs/model/registry.py): the pyfunc loads
    # with the code it was logged with, on a machine where recflow is not installed.
    code = Path(__file__).resolve().parents[1]
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=_python_model_class()(),
        artifacts={"model": str(artifact)},
        signature=signature,
        input_example=example,
        code_paths=[str(code)],
        pip_requirements=["numpy", "pandas", "mlflow"],
    )
    registered = mlflow.register_model(info.model_uri, registered_name, tags=tags or {})
    info.registered_model_version = int(registered.version)
    return info


def find_version(client: MlflowClient, name: str, tag: str, value: str) -> Any | None:
    """The newest version of ``name`` tagged ``tag=value``, or None.

    Errors from MLflow propagate: "cannot tell" must never read as "not registered yet".
    """
    from mlflow.exceptions import MlflowException

    quoted = value.replace("'", "''")
    try:
        found = client.search_model_versions(f"name='{name}' and tags.`{tag}` = '{quoted}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return max(found, key=lambda v: int(v.version)) if found else None


def load_version(settings: Settings, version: str | int) -> RecModel:
    """The ``RecModel`` of a registered version (downloads the artifact; no Spark)."""
    import mlflow

    from jobs.model.artifact import RecModel

    setup(settings)
    # A temporary folder, removed after loading: from a remote artifact store MLflow
    # would otherwise leave a copy (user ids included) in a temp dir nobody cleans.
    with tempfile.TemporaryDirectory(prefix="recflow-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            f"models:/{settings.model_name}/{version}",
            tracking_uri=settings.tracking_uri,
            dst_path=tmp,
        )
        found = sorted(Path(local).rglob("model.npz"))
        if not found:
            raise FileNotFoundError(f"no model.npz in version {version} of {settings.model_name}")
        return RecModel.load(found[0], factor_dtype=settings.factor_dtype)


# -- aliases ------------------------------------------------------------------------------


def alias_version(client: MlflowClient, name: str, alias: str) -> Any | None:
    """The model version behind ``alias``, or None when there is no such model or alias.

    Only "does not exist" means None. Anything else (the tracking server down, a locked
    SQLite store, a permission error) propagates: a gate that read an outage as "no
    champion yet" would promote without comparing. The alias is read from the
    registered model's alias map rather than by catching the by-alias lookup's error,
    whose code (INVALID_PARAMETER_VALUE) does not tell a missing alias from a bad call.
    """
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = (model.aliases or {}).get(alias)
    return None if version is None else client.get_model_version(name, str(version))
