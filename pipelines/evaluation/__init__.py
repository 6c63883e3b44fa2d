"""Evaluation: report metrics (BLEU, ROUGE-L, clinical F1), baselines, the label command."""
