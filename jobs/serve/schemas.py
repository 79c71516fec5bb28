"""The online service's request and response shapes, with limits from the settings.

Strict pydantic models: their types double as validation and as the OpenAPI schema of
``bento/service.py``; a 422 names every offending field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from jobs.config import Settings
from jobs.contracts import DEFAULT_K, MAX_ID_LENGTH
from jobs.subjects import USER_KEY_HEX

Source = Literal["als", "als_session", "fold_in", "popular"]
SOURCES: tuple[str, ...] = ("als", "als_session", "fold_in", "popular")
# A request may exclude a page or two of already shown items; more is a client bug.
MAX_EXCLUDE_ITEMS = 1000
# The user key exactly as jobs.subjects.user_key writes it: anything else is a client bug
# (422), not a wrong key. Lower-case ASCII hex only: [0-9] rather than \d (other scripts'
# digits), and the Rust regex engine's "$" does not accept a trailing newline.
UserKey = Annotated[str, StringConstraints(pattern=rf"^[0-9a-f]{{{USER_KEY_HEX}}}$")]


# -- limits and request/response shapes ---------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What a request may ask for; defaults are the ``Settings`` defaults."""

    max_k: int = Settings.model_fields["serve_max_k"].default
    max_recent_items: int = Settings.model_fields["serve_max_recent_items"].default
    max_exclude_items: int = MAX_EXCLUDE_ITEMS
    max_id_length: int = MAX_ID_LENGTH

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(max_k=settings.serve_max_k, max_recent_items=settings.serve_max_recent_items)


def _id_type(limits: Limits) -> Any:
    return Annotated[str, StringConstraints(min_length=1, max_length=limits.max_id_length)]


class _Strict(BaseModel):
    # Strict: "10" is not a k and 7 is not a user id; unknown fields are named, not dropped
    # (a misspelt "recent_items" would otherwise silently turn fold-in off).
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class RecommendRequest(_Strict):
    """``POST /recommend``: who, how many, and what they just looked at.

    ``user_key`` is the proof that the site's backend vouches for ``user_id`` (see
    :mod:`jobs.serve.access`): without the right one the answer is not personal.
    """

    user_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
    user_key: UserKey | None = None
    k: Annotated[int, Field(ge=1, le=Limits.max_k)] = DEFAULT_K
    recent_item_ids: (
        Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]],
            Field(max_length=Limits.max_recent_items),
        ]
        | None
    ) = None
    exclude_item_ids: (
        Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]],
            Field(max_length=MAX_EXCLUDE_ITEMS),
        ]
        | None
    ) = None


class SimilarRequest(_Strict):
    """``POST /similar``: items like this one."""

    item_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
    k: Annotated[int, Field(ge=1, le=Limits.max_k)] = DEFAULT_K


def request_types(limits: Limits) -> tuple[type[RecommendRequest], type[SimilarRequest]]:
    """The request models with the configured limits (the service's OpenAPI schema).

    The module-level classes carry the default limits; these subclasses carry whatever
    ``RECFLOW_SERVE_MAX_K`` and friends say, so a limit is configured in one place.
    """
    ident = _id_type(limits)
    ids = Annotated[list[ident], Field(max_length=limits.max_recent_items)]  # type: ignore[valid-type]
    excl = Annotated[list[ident], Field(max_length=limits.max_exclude_items)]  # type: ignore[valid-type]
    k = Annotated[int, Field(ge=1, le=limits.max_k)]
    recommend = create_model(
        "RecommendRequest",
        __base__=RecommendRequest,
        __doc__=RecommendRequest.__doc__,
        user_id=(ident, ...),
        user_key=(UserKey | None, None),
        k=(k, DEFAULT_K),
        recent_item_ids=(ids | None, None),
        exclude_item_ids=(excl | None, None),
    )
    similar = create_model(
        "SimilarRequest",
        __base__=SimilarRequest,
        __doc__=SimilarRequest.__doc__,
        item_id=(ident, ...),
        k=(k, DEFAULT_K),
    )
    return recommend, similar


class ScoredItem(BaseModel):
    item_id: str
    rank: int
    score: float


class RecommendResponse(BaseModel):
    """The answer of ``/recommend``; ``items`` have the shape of the published lists."""

    request_id: str
    user_id: str
    source: Source
    items: list[ScoredItem]
    model_name: str
    model_version: str
    model_run_id: str
    personal: bool = Field(
        False,
        description="True when the answer used data about the user (their factors or their"
        " recent items from Feast): only with a valid user_key, and never for a user on the"
        " deny list.",
    )
    recent_source: Literal["request", "feast"] | None = Field(
        None, description="Where the recent items of a fold-in or session came from."
    )
    unknown_recent_item_ids: list[str] = Field(
        default_factory=list, description="Recent item ids the model does not know (ignored)."
    )
    group: Literal["treatment", "control"] = Field(
        "treatment",
        description="The user's experiment group (jobs.model.control): control users are"
        " answered with the popular list so the lift of personalization can be measured.",
    )


class SimilarResponse(BaseModel):
    """The answer of ``/similar``: cosine neighbours in the item factor space."""

    request_id: str
    item_id: str
    items: list[ScoredItem]
    model_name: str
    model_version: str


def validation_error_body(errors: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A 422 body from pydantic errors: one message naming every offending field.

    ``loc`` ``("recent_item_ids", 3)`` becomes ``recent_item_ids[3]``; an empty ``loc``
    (the body is not JSON, or not an object) becomes ``body``.
    """
    detail = []
    for err in errors:
        field_name = ""
        for part in err.get("loc", ()):
            field_name += f"[{part}]" if isinstance(part, int) else f".{part}"
        field_name = field_name.lstrip(".") or "body"
        detail.append(
            {"field": field_name, "message": str(err.get("msg", "")), "type": err.get("type")}
        )
    message = "; ".join(f"{d['field']}: {d['message']}" for d in detail) or "invalid request"
    return {"error": f"invalid request: {message}", "detail": detail}


# -- metric labels -----------------------------------------------------------------------------

# The values the rejected-requests counter's "field" label may take, per endpoint: the
# request's own fields, "body" (not JSON, not an object) and "other". Anything a client
# sends beyond these (an unknown field's name, a list index) must not become a label
# value: each new value is a new time series, and a client could mint them at will.
OTHER_FIELD = "other"
METRIC_FIELDS: dict[str, frozenset[str]] = {
    "recommend": frozenset(RecommendRequest.model_fields) | {"body"},
    "similar": frozenset(SimilarRequest.model_fields) | {"body"},
}


def metric_field(endpoint: str, field_name: str) -> str:
    """The label value for a rejected request's first bad field, from a fixed set.

    ``recent_item_ids[3]`` counts as ``recent_item_ids``; an unknown field, or an
    unknown endpoint, as ``other``.
    """
    top = field_name.split("[", 1)[0].split(".", 1)[0]
    return top if top in METRIC_FIELDS.get(endpoint, frozenset()) else OTHER_FIELD
