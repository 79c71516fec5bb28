"""Package the online service: registry model → BentoML model store → Bento.

Reads the MLflow registry (``settings.tracking_uri``): the version behind the
``champion`` alias, or a given version, and its ``model.npz``. Writes, under
``BENTOML_HOME`` (default ``<data_root>/bentoml``, so a checkout keeps all its state in
one folder): the BentoML model ``<model_name>:v<version>`` with the registered name,
version and run id as metadata and labels, and the Bento ``recflow:v<version>`` built
from ``bento/bentofile.yaml`` with that model tag baked in as the build argument
``model_tag`` (the service reads it back with ``bentoml.use_arguments()``).

Both steps are idempotent: an existing model of the same version and run is reused; the
Bento of a model version is rebuilt in place (it is a build artifact of git + registry).

``python -m jobs.serve.bento_build [--version N] [--no-build]`` prints the tags as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.config import Settings, get_settings
from jobs.model.registry import CHAMPION, alias_version, load_version, setup

if TYPE_CHECKING:
    import bentoml

BENTO_NAME = "recflow"
REPO_ROOT = Path(__file__).resolve().parents[2]
BENTOFILE = REPO_ROOT / "bento" / "bentofile.yaml"
LOCK = REPO_ROOT / "requirements.txt"
MODEL_FILE = "model.npz"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    model_tag: str
    bento_tag: str | None
    registered_name: str
    version: str
    run_id: str
    bentoml_home: str


def bentoml_home(settings: Settings) -> Path:
    """Where the BentoML stores live: ``$BENTOML_HOME``, else under the data root."""
    return Path(os.environ.get("BENTOML_HOME") or settings.data_root / "bentoml")


def use_bentoml_home(settings: Settings) -> Path:
    """Point BentoML at :func:`bentoml_home`; call before BentoML first touches a store."""
    home = bentoml_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["BENTOML_HOME"] = str(home)
    return home


def serve_env(settings: Settings) -> dict[str, str]:
    """Environment for ``bentoml serve``: it runs inside the Bento's own folder, so a
    relative data root (the default ``var``) would point the service at an empty Feast
    store; pass the resolved one, and the BentoML home."""
    return {
        **os.environ,
        "BENTOML_HOME": str(use_bentoml_home(settings)),
        "BENTOML_DO_NOT_TRACK": "true",
        "RECFLOW_DATA_ROOT": str(settings.data_root),
    }


def bento_version(model_version: str) -> str:
    """The version part of Bento and BentoML model tags for a registered version."""
    return f"v{model_version}"


def import_model(settings: Settings, version: str | int | None = None) -> bentoml.Model:
    """Copy a registered version (default: the champion) into the BentoML model store."""
    use_bentoml_home(settings)
    import bentoml
    from bentoml.exceptions import NotFound

    client = setup(settings)
    if version is None:
        found = alias_version(client, settings.model_name, CHAMPION)
        if found is None:
            raise LookupError(f"{settings.model_name} has no {CHAMPION!r} alias: train first")
    else:
        found = client.get_model_version(settings.model_name, str(version))
    version, run_id = str(found.version), str(found.run_id)
    tag = f"{settings.model_name}:{bento_version(version)}"
    try:
        existing = bentoml.models.get(tag)
    except NotFound:
        existing = None
    if existing is not None:
        if existing.info.metadata.get("run_id") == run_id:
            log.info("BentoML model %s already imported", tag)
            return existing
        # Same version number from another registry (a reset store): replace it.
        bentoml.models.delete(tag)

    model = load_version(settings, version)
    identity = {"registered_name": settings.model_name, "version": version, "run_id": run_id}
    with bentoml.models.create(
        tag,
        labels={"mlflow_model": settings.model_name, "mlflow_version": version},
        metadata={
            **identity,
            "source": f"models:/{settings.model_name}/{version}",
            # The registry it came from, without credentials: the metadata is readable by
            # anyone with the Bento (and ships inside a container image).
            "tracking_uri": settings.tracking_uri_shown,
            "users": len(model.user_ids),
            "items": len(model.item_ids),
            "rank": model.rank,
            # BentoML refuses None in metadata: a model without these params leaves them out.
            **{
                f"als_{name}": model.params[name]
                for name in ("reg", "alpha")
                if model.params.get(name) is not None
            },
        },
    ) as stored:
        model.save(Path(stored.path) / MODEL_FILE)
    log.info("imported %s (run %s) as BentoML model %s", version, run_id, stored.tag)
    return stored


def pinned_bentofile(bentofile: str, lock: str) -> str:
    """The bentofile with each Python package pinned to its version in the lock.

    The service's packages are named once in ``bento/bentofile.yaml`` and versioned once
    in ``requirements.txt``; a package the lock does not hold is an error, not a guess.
    """
    import yaml

    versions = {}
    for line in lock.splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep:
            versions[_normalise(name)] = version.split(";")[0].strip()
    spec = yaml.safe_load(bentofile)
    python = spec.setdefault("python", {})
    pinned = []
    for requirement in python.get("packages", []):
        found = _REQUIREMENT.match(requirement)
        if not found or found["spec"]:
            raise LookupError(
                f"bentofile package {requirement!r}: name it without a version; "
                "its version comes from requirements.txt"
            )
        if _normalise(found["name"]) not in versions:
            raise LookupError(f"bentofile package {requirement!r} is not in requirements.txt")
        # Extras stay: "feast[redis]" becomes "feast[redis]==0.67.0".
        extras = found["extras"] or ""
        pinned.append(f"{found['name']}{extras}=={versions[_normalise(found['name'])]}")
    python["packages"] = pinned
    return yaml.safe_dump(spec, sort_keys=False)


_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9._-]+)\s*(?P<extras>\[[^\]]*\])?\s*(?P<spec>.*)$"
)


def _normalise(name: str) -> str:
    """PEP 503 name: case and runs of -_. do not matter."""
    return re.sub(r"[-_.]+", "-", name).strip().lower()


def build(settings: Settings, stored: bentoml.Model) -> str:
    """``bentoml build`` of ``bento/`` with this model; returns the Bento tag."""
    use_bentoml_home(settings)
    import bentoml
    from bentoml.exceptions import NotFound

    meta = stored.info.metadata
    version = bento_version(str(meta["version"]))
    tag = f"{BENTO_NAME}:{version}"
    try:
        bentoml.bentos.get(tag)
    except NotFound:
        pass
    else:
        bentoml.bentos.delete(tag)
    with tempfile.TemporaryDirectory(prefix="recflow-bentofile-") as tmp:
        bentofile = Path(tmp) / "bentofile.yaml"
        bentofile.write_text(pinned_bentofile(BENTOFILE.read_text(), LOCK.read_text()))
        bento = bentoml.bentos.build_bentofile(
            str(bentofile),
            build_ctx=str(REPO_ROOT),
            version=version,
            labels={
                "mlflow_model": str(meta["registered_name"]),
                "mlflow_version": str(meta["version"]),
                "mlflow_run_id": str(meta["run_id"]),
            },
            args={"model_tag": str(stored.tag)},
        )
    log.info("built Bento %s with model %s", bento.tag, stored.tag)
    return str(bento.tag)


def import_and_build(
    settings: Settings | None = None, version: str | int | None = None, bento: bool = True
) -> BuildResult:
    """Import the champion (or ``version``) and build its Bento."""
    settings = settings or get_settings()
    home = use_bentoml_home(settings)
    stored = import_model(settings, version)
    meta = stored.info.metadata
    bento_tag = build(settings, stored) if bento else None
    return BuildResult(
        model_tag=str(stored.tag),
        bento_tag=bento_tag,
        registered_name=str(meta["registered_name"]),
        version=str(meta["version"]),
        run_id=str(meta["run_id"]),
        bentoml_home=str(home),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.serve.bento_build", description=__doc__)
    parser.add_argument("--version", help="registered version (default: the champion)")
    parser.add_argument("--no-build", action="store_true", help="only import the model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = import_and_build(version=args.version, bento=not args.no_build)
    json.dump(asdict(result), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
