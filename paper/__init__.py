"""The paper: make figures (paper/figures.py), the result CSVs (results.py) and LaTeX (latex.py)."""
