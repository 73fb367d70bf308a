"""The ablation grid: variants as data (base params + per-variant overrides), run as DVC matrix stages."""
