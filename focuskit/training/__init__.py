"""Training: SFT with FOCUS's bounding-box attention loss (`run_sft.train_sft`), configs, trainers.

Nothing heavy is imported here: `import focuskit.training` must not pull in transformers or register anything.
"""
