"""Ablation reports: per-variant metrics -> Markdown / LaTeX / CSV tables and seaborn plots under reports/."""
