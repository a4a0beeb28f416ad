"""The demonstration: a bundled synthetic scene pair and a demo model trained on synthetic data.

The demo model (``hrmnet_demo.safetensors``) was trained with ``python -m engine train`` on
synthetic scenes only (``python -m engine synth``). It is a demonstration model for
synthetic scenes, NOT a model for real imagery.
"""
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
DEMO_MODEL = DEMO_DIR / "hrmnet_demo.safetensors"
DEMO_DATA = DEMO_DIR / "data"
