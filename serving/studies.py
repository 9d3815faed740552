"""What a study request holds, read without HTTP: which images feed the model, their projections, the
non-identifying acquisition metadata the prediction log keeps, and what a PACS failure means for the client."""

from __future__ import annotations

from model_core.prediction_log import ACQUISITION_KEYS
from serving.errors import BadInput, NotFound, ServiceError, Unavailable, UpstreamError, status_of
from serving.schemas import API, FRONTAL_VIEWS, LATERAL_VIEWS


def projection(view: str | None) -> str:
    """A request or DICOM view → Frontal / Lateral (unknown counts as frontal, as in choose)."""
    return "Lateral" if view in LATERAL_VIEWS or view == "Lateral" else "Frontal"


def acquisition_metadata(metadata: dict | None, view: str | None) -> dict:
    """The prediction log's non-identifying acquisition metadata of a study's first model input (from
    serving.dicom's safe metadata; a PNG/JPEG upload has none but its view)."""
    meta = metadata or {}
    out = {}
    for key in ACQUISITION_KEYS:
        value = projection(view) if key == "view" else meta.get(key)
        out[key] = value[:64] if isinstance(value, str) else value if isinstance(value, int) else None
    return out


def check_study_id(path_id: str, body_id: str | None) -> None:
    if body_id is not None and body_id != path_id:
        raise BadInput("study_id in the body differs from the study id in the path")


def pacs_error(exc: BaseException) -> ServiceError:
    """The service error for a PACS client error (serving.ingest, or any client following its naming)."""
    kind = type(exc).__name__
    if kind == "InstanceNotFound":
        return NotFound(f"not found in the PACS: {exc}", status_of(exc, 404))
    if kind == "PacsUnavailable" or isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return Unavailable(f"PACS unavailable: {exc or kind}; retry later or upload the images to "
                           f"{API}/studies/{{study_id}}/report:upload")
    code = getattr(exc, "status_code", None)
    if isinstance(code, int) and 400 <= code < 600:
        return UpstreamError(f"PACS error: {exc}", code)
    raise exc


def dicom_view(metadata: dict | None) -> str | None:
    """The request View of a DICOM file from its safe metadata (ViewPosition), or None when absent."""
    if not metadata:
        return None
    raw = next((metadata[k] for k in ("view_position", "ViewPosition", "view") if metadata.get(k)), None)
    if raw is None:
        return None
    value = str(raw).strip().upper()
    if value in ("PA", "AP"):
        return value
    if value in ("LL", "RL"):
        return value
    if value in ("LAT", "LATERAL", "LLD", "RLD"):
        return "Lateral"
    return None


def choose(views: list[str | None], max_views: int) -> list[int | None]:
    """The images fed to the model, as its view slots (`model_core.data.iu_xray.view_slots`, the rule training
    and evaluation use): indices into `views`, None for a slot the study cannot fill.

    One slot: the first frontal image (PA, AP, Frontal; unknown counts as frontal); a study with lateral images
    only is refused. Two slots: [first frontal or None, first lateral or None]."""
    frontal = [i for i, v in enumerate(views) if v is None or v in FRONTAL_VIEWS]
    lateral = [i for i, v in enumerate(views) if v is not None and v not in FRONTAL_VIEWS]
    if max_views == 2:
        return [frontal[0] if frontal else None, lateral[0] if lateral else None]
    if max_views != 1:
        raise ValueError(f"the model's view slots must be 1 or 2, got {max_views}")
    if not frontal:
        raise BadInput(f"no frontal view: the study's {len(lateral)} image(s) are all lateral; the model "
                       "needs a frontal (PA, AP or Frontal) radiograph")
    return frontal[:1]
