"""Representation evaluation (paper, Sec. 5): linear-SVM protocols, ASLAN similarity, t-SNE / PCA plots.

Submodules are imported on demand (they pull in scikit-learn and matplotlib)."""
