"""Evaluation: fixed test-task sets with 95% confidence intervals, evaluator options, and the analyses of Raghu et al. (representations, similarity, NIL)."""
