"""Make the bundled models from trained ones: names, descriptions and validation scores.

Run (from the repository root), after ``scripts/train_bundled.py`` and
``benchmarks/bench_accuracy.py --models GREY,RGB --json scores.json``:

    python scripts/bundle_models.py --grey DIR/nuclei_grey.segnet \\
        --rgb DIR/nuclei_rgb.segnet --scores scores.json

Writes ``src/napari_segnet/models/bundled/nuclei.segnet`` (grey images) and
``nuclei_he.segnet`` (RGB: H&E and other stained tissue). Each records, besides its
training card, the validation scores per modality of the modalities it is for.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import napari_segnet as ns
from napari_segnet.io.bundled import BUNDLED_DIR

BUNDLES = {
    "grey": (
        "nuclei",
        ("fluorescence", "brightfield"),
        "2D nuclei in grey images (fluorescence; brightfield with a bright background), "
        "background / interior / boundary, trained on real DSB2018 images (CC0)",
    ),
    "rgb": (
        "nuclei_he",
        ("stained",),
        "2D nuclei in colour (RGB) images of stained tissue (H&E and similar), "
        "background / interior / boundary, trained on real DSB2018 images (CC0)",
    ),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grey", required=True, help="model file of train_bundled.py --kind grey")
    p.add_argument("--rgb", required=True, help="model file of train_bundled.py --kind rgb")
    p.add_argument("--scores", required=True, help="bench_accuracy.py --json output")
    p.add_argument("--out", default=str(BUNDLED_DIR))
    a = p.parse_args()
    results = json.loads(Path(a.scores).read_text())["results"]
    for kind, path in (("grey", a.grey), ("rgb", a.rgb)):
        name, modalities, description = BUNDLES[kind]
        model = ns.load_model(path)
        measured = results.get(path) or results[Path(path).stem]
        scores = {
            m: {k: round(measured[m][k], 4) for k in ("AP@0.5", "AP@0.75", "DSB")}
            | {"images": measured[m]["images"], "objects": measured[m]["objects"]}
            for m in modalities
        }
        model.meta["name"] = name
        model.meta["description"] = description
        model.meta["scores"] = {"dsb2018_validation": scores}
        model.meta["card"] = dict(model.meta.get("card", {}), name=name)
        out = ns.save_model(model, Path(a.out) / f"{name}.segnet", overwrite=True)
        print(out, json.dumps(scores))


if __name__ == "__main__":
    main()
