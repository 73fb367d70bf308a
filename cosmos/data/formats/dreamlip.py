"""The DreamLIP caption-table layout (`cc3m_3long_3short_1raw_captions_url.csv` and its siblings).

One row per image: `Image Path` holds the image URL (the join key with the scraped images; reference
section 9: row order does not match img2dataset keys), then 1 raw alt text, and 3 short + 3 long captions
by InstructBLIP (IB), ShareGPT4V (SV) and LLaVA-1.5 (LLA). This is the column order of the CSV; text
cropping concatenates the fields in another order (`cosmos.text.textcrop.DREAMLIP_FIELDS`).

Where the tables live (checked against the Hub's file listing, see docs/data.md): the Hugging Face dataset
`qidouxiong619/dreamlip_long_captions`, one CSV per source, ~6.3 GB (CC3M), ~23 GB (CC12M) and ~30 GB
(YFCC15M). The training json keeps the column names and stores every field as a sentence list.
"""

from cosmos.data.captions import CaptionFormat

URL_COLUMN = "Image Path"

DREAMLIP_COLUMNS: tuple[str, ...] = (
    "raw_caption",
    "shortIB_captions",
    "longIB_captions",
    "shortSV_captions",
    "longSV_captions",
    "shortLLA_captions",
    "longLLA_captions",
)

DREAMLIP = CaptionFormat(
    name="dreamlip",
    url_column=URL_COLUMN,
    columns=tuple((c, c) for c in DREAMLIP_COLUMNS),
    presplit=True,
)
