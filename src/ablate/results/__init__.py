"""ablate.results: result rows -> tidy table -> statistics, figures, the paper's tables.

Notebook use:
    from ablate.results import load_table
    t = load_table("runs")                      # one row per cell x metric
    from ablate.results import figures
    r = figures.fig4_encoder(t, "out/")         # r.data: the plotted means, CIs, p-values

Modules: table (rows -> DataFrame), select (arms of one axis, others held fixed), stats (bootstrap,
tests, Holm, identical-arms check), compare (arms -> summary), figures (Figs 2-5), paper (Tables 2/3),
compute (accuracy vs compute). Figures and compute import matplotlib, so they are not imported here.
"""
from .table import AXES, Collection, cells, collect, load_failed, load_table, save, wide

__all__ = ["AXES", "Collection", "cells", "collect", "load_failed", "load_table", "save", "wide"]
