"""Drawing results: boxes, labels, legends, heatmaps."""
