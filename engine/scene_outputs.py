"""A scene's outputs: checked before any work (:func:`check_outputs`), staged as hidden
temporaries beside their targets while the run writes them (:class:`Staged`), renamed into
place in one locked step when every stage succeeded, or removed after an error or a cancel
(see :mod:`engine.outputs`, through which all outputs go).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from .errors import UserError
from .raster.write import temporary_path

__all__ = ["check_outputs", "Staged", "build_overviews", "RASTER_EXTENSIONS", "VECTOR_ROLES"]

RASTER_EXTENSIONS = (".tif", ".tiff")
VECTOR_ROLES = ("vector", "review_areas")


def _probe_writable(folder: Path, target: Path) -> None:
    """Raise UserError unless a file can be created in ``folder`` (an unpredictable name,
    created exclusively, removed at once)."""
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".hrmnet-probe-", dir=folder)
    except OSError as exc:
        raise UserError(f"{target}: output folder {folder} is not writable ({exc.strerror or exc})") from exc
    os.close(fd)
    os.unlink(probe)


def check_outputs(outputs: dict[str, Optional[str]], inputs: Sequence[str], overwrite: bool) -> dict[str, Path]:
    """Validate output paths before any work; remove stale temporaries of dead runs there.

    Args:
        outputs: role (``vector``, ``probability``, ``mask``, ``review``, ``review_areas``)
            -> path or None.
        inputs: input paths an output must not replace (compared by real path and file
            identity, sidecar files included; see :mod:`engine.outputs`).
        overwrite: allow replacing existing files.

    Returns:
        role -> absolute :class:`Path` for the outputs given (as the user named them).

    Raises:
        UserError: none given, unsupported extension, missing or read-only folder,
            existing file without ``overwrite``, an output used twice or reaching an
            input (through ``..``, a symlink or a hard link), control characters.
    """
    from .outputs import check_output, expect_run, real_path, remove_stale, same_file
    from .vector.io import check_vector_path, vector_sidecars

    given = {k: Path(v).expanduser().absolute() for k, v in outputs.items() if v}
    if not given:
        raise UserError("detect: give at least one of --out-vector, --out-probability, --out-mask, --out-review, "
                        "--out-review-areas")
    seen: dict[Path, str] = {}
    for role, p in given.items():
        if role in VECTOR_ROLES:
            check_vector_path(p)
        elif p.suffix.lower() not in RASTER_EXTENSIONS:
            raise UserError(f"{p}: unsupported {role} format {p.suffix or '(no extension)'} (use .tif)")
        check_output(p, role, inputs)
        for q, other in seen.items():
            if same_file(p, q):
                raise UserError(f"{p}: used for both the {other} and the {role} output")
        seen[p] = role
        folder = p.parent
        if not folder.is_dir():
            raise UserError(f"{p}: output folder {folder} does not exist")
        if p.is_dir():
            raise UserError(f"{p}: is a folder")
        existing = [q for q in ([p] + (vector_sidecars(p) if role in VECTOR_ROLES else [])) if os.path.lexists(q)]
        if existing and not overwrite:
            raise UserError(f"{existing[0]}: exists (use --overwrite to replace it)")
        _probe_writable(folder, p)
        remove_stale(real_path(folder))
    expect_run(given.values())
    return given


@dataclass
class Staged:
    """A scene's temporary outputs beside their targets; :meth:`remove` deletes what is left.

    ``prob``/``mask``/``review``: staged rasters (the vectors need mask and probability
    files even when not asked for); ``need_*``: whether each is written; ``vector`` and
    ``areas``: staged vector datasets until committed."""

    prob: Optional[Path] = None
    mask: Optional[Path] = None
    review: Optional[Path] = None
    need_prob: bool = False
    need_mask: bool = False
    need_review: bool = False
    temps: list = field(default_factory=list)
    vector: Optional[Path] = None
    areas: Optional[Path] = None

    def stage_rasters(self, targets: dict[str, Path], has_review: bool) -> None:
        """Name the temporary rasters and note which of them the outputs need."""
        anchor = next(iter(targets.values())).with_suffix(".tif")
        self.prob = temporary_path(targets.get("probability", anchor), "prob")
        self.mask = temporary_path(targets.get("mask", anchor), "mask")
        self.review = temporary_path(targets.get("review", anchor), "review")
        self.need_prob = "probability" in targets or "vector" in targets or "review_areas" in targets
        self.need_mask = "mask" in targets or "vector" in targets or "review_areas" in targets
        self.need_review = has_review and any(r in targets for r in ("review", "review_areas", "vector"))
        self.temps += [p for p, need in ((self.prob, self.need_prob), (self.mask, self.need_mask),
                                         (self.review, self.need_review)) if need]

    def commit(self, targets: dict[str, Path], overwrite: bool) -> dict[str, Path]:
        """All done: rename into place (see :func:`_commit`); role -> final path."""
        final = _commit(targets, self.prob, self.mask, self.vector, overwrite, review_tmp=self.review,
                        areas_tmp=self.areas)
        self.vector = self.areas = None
        return final

    def remove(self) -> None:
        """Delete the temporaries left (after an error or a cancel; the rasters' leftovers always)."""
        for p in self.temps:
            _remove(p)
        for vec in (self.vector, self.areas):
            if vec is not None:
                from .vector.io import remove_vector

                remove_vector(vec)
        _remove(None)  # this run's staging folders, also when it failed before making a temporary


def _remove(path: Optional[Path]) -> None:
    """Delete a temporary output (file or vector dataset) and end this run's staging
    folders (:func:`engine.outputs.release_run`): nothing of the run is left."""
    from .outputs import discard, release_run

    if path is not None:
        discard(path)
    release_run()


def _commit(targets: dict[str, Path], prob_tmp: Path, mask_tmp: Path, vector_tmp: Optional[Path],
            overwrite: bool, review_tmp: Optional[Path] = None, areas_tmp: Optional[Path] = None) -> dict[str, Path]:
    """Rename the temporary outputs onto their targets in one locked step (vector first,
    each vector's main file last): no symlink is followed, and without ``overwrite`` a
    target that appeared during the run is refused (see :func:`engine.outputs.commit`).
    Ends this run's staging folders."""
    from .outputs import commit, release_run, staged_moves

    staged = {"vector": vector_tmp, "review_areas": areas_tmp, "probability": prob_tmp, "mask": mask_tmp,
              "review": review_tmp}
    roles = [r for r in staged if r in targets and staged[r] is not None]
    try:
        commit([m for r in roles for m in staged_moves(staged[r], targets[r])], overwrite)
    finally:
        release_run()
    return {r: targets[r] for r in roles}


def build_overviews(targets: dict[str, Path], staged: Staged) -> None:
    """Overviews of the staged rasters the user asked for (averaged, the mask nearest)."""
    for role, path, resampling in (("probability", staged.prob, "average"), ("mask", staged.mask, "nearest"),
                                   ("review", staged.review, "average")):
        if role in targets:
            from rasterio.enums import Resampling

            from .raster.write import build_overviews

            build_overviews(path, Resampling[resampling])
