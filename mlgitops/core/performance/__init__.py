"""Model performance: realized metrics from labels (`metrics`), and estimates before labels.

Pure: no I/O, no clock. scikit-learn is imported lazily inside the functions that use it.
"""
