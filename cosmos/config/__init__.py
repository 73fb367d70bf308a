"""Config plumbing: compose `conf/` into `params.yaml` (exactly as `dvc exp run` does) and read it back."""
