"""The PixelProse caption-table layout (Hugging Face dataset `tomg-group-umd/pixelprose`).

Parquet files `data/vlm_captions_{cc12m,common-pool,redcaps}_NN.parquet`, one row per image with (among
others) `uid`, `url`, `key`, `status`, `original_caption` (the source's alt text), `vlm_model` and
`vlm_caption` (the dense Gemini caption). The reference trains on the keys `original_caption` and
`caption` (section 3.1: `textcrop_pixelprose` splits `caption` on the fly), so `vlm_caption` is renamed to
`caption` in the training json and both stay strings. img2dataset reserves the name `caption`, which is
why the rename happens in `shard`, not in the url list.
"""

from cosmos.data.captions import CaptionFormat

URL_COLUMN = "url"
ALT_COLUMN = "original_caption"
VLM_COLUMN = "vlm_caption"

PIXELPROSE = CaptionFormat(
    name="pixelprose",
    url_column=URL_COLUMN,
    columns=((ALT_COLUMN, "original_caption"), (VLM_COLUMN, "caption")),
    presplit=False,
)
