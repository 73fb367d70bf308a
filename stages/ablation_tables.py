"""DVC stage `ablation_tables`: render the ablation report from the base and variant metrics.

Reads: ablation, distill, train. Writes: reports/ablation/ (report.md, <axis>.md|tex|csv, PNG plots),
reports/metrics/ablation.json.
"""

from cosmos.ablation.report import render_report
from cosmos.io.atomic import atomic_write_json
from cosmos.stage import run_stage


def main(params: dict) -> None:
    atomic_write_json("reports/metrics/ablation.json", render_report(params))


if __name__ == "__main__":
    run_stage("ablation_tables", main)
