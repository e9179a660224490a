"""Evaluation: probes and fine-tuning (E1), Matbench protocol (E2), retrieval (E3), discovery
(E4), latent-space analysis (E5) and paper-style analyses. Everything here is a function of
arrays (embeddings, labels, predictions, metric logs); systems produce those arrays."""

from mmjax.eval.analyses import convergence_speedup, per_class_accuracy, power_law_fit, read_metrics_jsonl
from mmjax.eval.discovery import best_of_n_curve, dos_grid, evaluate_discovery, normalized_dos_mae, resample_dos
from mmjax.eval.finetune import EarlyStoppingResult, fit_with_early_stopping
from mmjax.eval.latent import evaluate_latent, group_similarity_overlap, kde_overlap, pca, silhouette_samples, silhouette_score
from mmjax.eval.matbench import MatbenchResults, dummy_fold_maes, fold_splits, load_matbench_labels, run_matbench
from mmjax.eval.probe import (
    evaluate_classification_probe,
    evaluate_regression_probe,
    linear_head_probe,
    logistic_probe,
    ridge_fit,
    ridge_probe,
)
from mmjax.eval.retrieval import all_pairs_retrieval, evaluate_retrieval, rank_metrics, retrieval_heatmap, true_match_ranks
from mmjax.eval.tolerance import goldschmidt, tolerance_factor, tolerance_factors

__all__ = [
    "EarlyStoppingResult",
    "MatbenchResults",
    "all_pairs_retrieval",
    "best_of_n_curve",
    "convergence_speedup",
    "dos_grid",
    "dummy_fold_maes",
    "evaluate_discovery",
    "evaluate_classification_probe",
    "evaluate_latent",
    "evaluate_regression_probe",
    "evaluate_retrieval",
    "fit_with_early_stopping",
    "fold_splits",
    "goldschmidt",
    "group_similarity_overlap",
    "kde_overlap",
    "linear_head_probe",
    "load_matbench_labels",
    "logistic_probe",
    "normalized_dos_mae",
    "pca",
    "per_class_accuracy",
    "power_law_fit",
    "rank_metrics",
    "read_metrics_jsonl",
    "resample_dos",
    "retrieval_heatmap",
    "ridge_fit",
    "ridge_probe",
    "run_matbench",
    "silhouette_samples",
    "silhouette_score",
    "tolerance_factor",
    "tolerance_factors",
    "true_match_ranks",
]
