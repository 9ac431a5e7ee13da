"""The FOCUS toy: a CNN-eyed tiny Qwen2-VL that can learn in-context instance matching, and the paper's ablation on it.

`benchmarks/toy_ablation.py` is the command; this package holds its parts (data pool, recipe, evaluation, report).
"""
