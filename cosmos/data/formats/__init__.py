"""Readers and writers for the on-disk layouts of the real benchmarks (COCO captions, VOC segmentation,
ImageFolder classification, SugarCrepe), shared by the synthetic benchmark and real datasets."""
