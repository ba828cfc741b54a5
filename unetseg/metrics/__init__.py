"""Measures of a segmentation: region overlap and the ISBI scores, boundaries and thin structures,
and the statistics that compare variants."""
