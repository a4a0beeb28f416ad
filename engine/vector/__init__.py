"""Vectorize, the last stage of the flow: the change mask raster → change polygons (seams
merged, holes kept).

Public entry points: :func:`polygonize_to_file` (files in, file out),
:class:`Polygonizer` (mask strips in memory in, file out) and the output-file helpers
(:func:`check_vector_path`, :func:`vector_sidecars`, :func:`move_vector`,
:func:`remove_vector`, :func:`temporary_vector_path`).
"""
from .io import (SUPPORTED_VECTOR_EXTENSIONS, check_vector_path, move_vector, remove_vector, temporary_vector_path,
                 vector_sidecars)
from .polygonize import polygonize_to_file
from .stream import Polygonizer, decode_mask, decode_prob

__all__ = [
    "SUPPORTED_VECTOR_EXTENSIONS",
    "polygonize_to_file",
    "check_vector_path",
    "vector_sidecars",
    "move_vector",
    "remove_vector",
    "temporary_vector_path",
    "Polygonizer",
    "decode_mask",
    "decode_prob",
]
