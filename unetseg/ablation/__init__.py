"""Skip ablation: train a grid of variants under one budget and report how skips recover detail."""

from unetseg.ablation.report import build_report
from unetseg.ablation.runner import run_ablation, stored_results
from unetseg.ablation.spec import AblationSpec, load_spec

__all__ = ["AblationSpec", "build_report", "load_spec", "run_ablation", "stored_results"]
