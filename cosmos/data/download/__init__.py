"""`download` for real, web-scraped data sets (DreamLIP-recaptioned CC3M / CC12M / YFCC15M, Merged-30M,
PixelProse): caption tables from the Hugging Face Hub -> url lists -> img2dataset webdataset tars.

Per source, in `data.download.work_dir/<source>/` (outside DVC's outputs, so that nothing DVC deletes
before a re-run is lost, and every step resumes):
  annotations/   the tables (huggingface_hub; skipped with `local_path`)
  urls/          url list: parquet parts with `url` + the caption columns, bad rows dropped and counted
  images/        img2dataset output: NNNNN.tar (`<key>.jpg` + `<key>.json` with url and captions),
                 NNNNN.parquet, NNNNN_stats.json (success / failure counts of that shard),
                 cosmos_fingerprint (url list + settings of those shards, `guard`), failed-<time>/ (shards
                 moved aside after a stop for failures, fetched again by the next run)
  .lock          held while a download runs here
  download_report.json, img2dataset.log
When every source is complete, `<raw>/pretrain/<source>/images/` gets hard links to the finished shards
(copies across filesystems) and `<raw>/download_report.json` the counts; `shard` reads from there.
"""
