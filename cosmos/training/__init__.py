"""Pre-training: the webdataset loader, AdamW groups and schedules, precision, checkpoints and the loop.

``pretrain`` (in :mod:`cosmos.training.pretrain`) is the one entry point the ``pretrain`` stage calls; the
pieces stay importable on their own for tests and other launchers.
"""
