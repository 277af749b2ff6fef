"""Pure core of mlgitops: values and decisions.

May NOT do: I/O of any kind (files, network, processes), read the clock or environment
variables, or import pandas, mlflow, evidently, kopf. numpy is allowed (stats, drift).
"""
