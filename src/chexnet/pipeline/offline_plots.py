"""The page template that lets ``dvc plots show`` and ``dvc plots diff`` draw with no network.

DVC's default page loads Vega, Vega-Lite and vega-embed from a CDN, so on an air-gapped machine (where
medical images usually live) every chart stays blank. ``.dvc/config`` points DVC's own
``plots.html_template`` setting at ``.dvc/html/plots_offline.html``, a page with those three libraries
inlined. The libraries come from the pinned ``vl-convert-python`` package (requirements.txt), which
ships them and bundles them offline; this module writes the page from it, and a test checks that the
committed page is exactly what the pinned package gives.

    python -m chexnet.pipeline.offline_plots          # rewrite .dvc/html/plots_offline.html
    python -m chexnet.pipeline.offline_plots --check  # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TEMPLATE = Path(".dvc/html/plots_offline.html")
VEGA_LITE_VERSION = "5.21"  # DVC's plot templates are Vega-Lite v5 specs

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Written by `python -m chexnet.pipeline.offline_plots` from vl-convert-python {package_version}:
         Vega {vega},
         Vega-Lite {vega_lite}, vega-embed {embed} (each BSD-3-Clause, University of Washington
         Interactive Data Lab), inlined so that the page draws with no network. -->
    <script>
{bundle}
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def page() -> str:
    """The template text: DVC's placeholders ``{refresh_tag}`` and ``{plot_divs}``, no ``{scripts}``
    (DVC would put its CDN script tags there), and the libraries inline."""
    from importlib.metadata import version

    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)
    placeholders = ("{plot_divs}", "{scripts}", "{refresh_tag}")
    if "</script" in bundle.lower() or any(p in bundle for p in placeholders):
        raise RuntimeError("the Vega bundle holds </script> or a DVC placeholder: it cannot be inlined as is")
    header = (
        PAGE.replace("{package_version}", version("vl-convert-python"))
        .replace("{vega}", vl_convert.get_vega_version())
        .replace("{vega_lite}", VEGA_LITE_VERSION)
        .replace("{embed}", vl_convert.get_vega_embed_version())
    )
    return header.replace("{bundle}", bundle)  # last: nothing is replaced inside the libraries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed page is stale")
    parser.add_argument("--out", type=Path, default=TEMPLATE, help="default: %(default)s")
    args = parser.parse_args(argv)
    text = page()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is stale: run python -m chexnet.pipeline.offline_plots", file=sys.stderr)
            return 1
        return 0
    from chexnet.core import io

    io.write_text(args.out, text)
    print(f"wrote {args.out} ({len(text) / 1e6:.1f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
