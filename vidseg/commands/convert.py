"""``vidseg convert``: turn an official DeVIS / Deformable DETR checkpoint into a vidseg checkpoint."""

from __future__ import annotations

import argparse
import os
import sys

DESCRIPTION = (
    "Convert an official checkpoint (DeVIS video, DeVIS COCO mask-head, Deformable DETR +iterative box "
    "refinement, detectron2 VITA/GenVIS/GRAtt-VIS, an ImageNet torchvision .pth or detectron2 .pkl, or a "
    "vidseg file) into a vidseg checkpoint: {'model': state_dict, ...} written with torch's "
    "zipfile format, loadable with torch.load(weights_only=True). The input is read without running code."
)
EPILOG = """examples:
  vidseg convert r50_deformable_detr_plus_iterative_bbox_refinement.pth ddetr_r50.pth --shift-class-neuron
  vidseg convert r50_deformable_detr_segmentation.pth devis_coco_r50.pth
  vidseg convert devis_coco_r50.pth devis_yt19_init.pth --to devis-video --num-frames 6 --num-queries 60 \\
      --num-classes 40
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN.pth", help="checkpoint to convert")
    p.add_argument("output", metavar="OUT.pth", help="where to write the vidseg checkpoint")
    p.add_argument(
        "--to",
        choices=("vidseg", "devis-video"),
        default="vidseg",
        help="vidseg: same model, vidseg names (default); devis-video: also apply the DeVIS stage-2 "
        "adaptation of COCO weights to a video model (needs --num-frames/--num-queries)",
    )
    p.add_argument(
        "--shift-class-neuron",
        action="store_true",
        help="rotate class_embed rows by one (official Deformable DETR weights, trained with "
        "label=category_id); ignored, with a warning, for any other file (they are never shifted twice)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT.pth if it exists")
    g = p.add_argument_group("devis-video options")
    g.add_argument("--num-frames", type=int, default=6, help="T (MODEL.DEVIS.NUM_FRAMES)")
    g.add_argument("--num-queries", type=int, default=0, help="T x queries per frame (MODEL.NUM_QUERIES)")
    g.add_argument("--num-classes", type=int, default=0, help="re-initialise class_embed with K outputs")
    g.add_argument("--num-levels", type=int, default=4, help="feature levels of the video model (1, 3, 4)")


def run(args: argparse.Namespace) -> int:
    from vidseg.checkpoints import LoadReport, adapt_coco_to_devis, convert_checkpoint, write_weights
    from vidseg.checkpoints.safe_load import CheckpointError

    if os.path.exists(args.output) and not args.overwrite:
        print(f"vidseg convert: error: {args.output} exists; pass --overwrite to replace it", file=sys.stderr)
        return 1
    video = args.to == "devis-video"
    try:
        ck = convert_checkpoint(args.input, shift_class_neuron=args.shift_class_neuron, video_model=video)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"vidseg convert: error: {e}", file=sys.stderr)
        return 1
    sd, fmt, meta = ck.state_dict, ck.format, ck.metadata
    # A vidseg file keeps the provenance it was converted from (it decides whether a later shift applies).
    converted = str(meta.get("converted_from", fmt)) if fmt == "vidseg" else fmt
    if video:
        if fmt == "devis_video":
            print(f"vidseg convert: error: {args.input} is already a DeVIS video checkpoint", file=sys.stderr)
            return 1
        if ck.imagenet:
            print(f"error: {args.input} is an ImageNet backbone file, not COCO weights", file=sys.stderr)
            return 1
        if args.num_queries <= 0:
            print(
                "vidseg convert: error: --to devis-video needs --num-queries (T x queries per frame)",
                file=sys.stderr,
            )
            return 1
        sd = adapt_coco_to_devis(
            sd,
            num_frames=args.num_frames,
            num_queries=args.num_queries,
            num_classes=args.num_classes or None,
            num_levels=args.num_levels,
        )
        converted += "+devis_stage2"
    shifted = bool(ck.shifted) or bool(meta.get("class_neuron_shifted"))
    extra = {
        "converted_from": converted,
        "source_file": os.path.basename(args.input),
        "class_neuron_shifted": shifted,
    }
    kept = ["config"] if meta.get("config") is not None else []
    source_key = "cfg" if "cfg" in meta else "args"  # DeVIS yacs cfg / D-DETR args, as plain dicts
    if isinstance(meta.get(source_key), dict):
        extra["source_config"] = meta[source_key]
        kept.append(source_key)
    write_weights(args.output, sd, config=meta.get("config"), overwrite=args.overwrite, **extra)
    for note in ck.notes:
        print(f"warning: {args.input}: {note}", file=sys.stderr)
    report = LoadReport(
        converted_from=converted,
        mapped=list(sd),
        renamed=ck.renamed,
        shifted=ck.shifted,
        dropped=ck.dropped,
        not_weights=[k for k in meta if k not in kept],
        notes=[f"{k} kept as source_config" for k in kept if k != "config"],
    )
    n_params = sum(v.numel() for v in sd.values())
    print(f"{args.input} ({fmt}) -> {args.output}: {len(sd)} tensors, {n_params / 1e6:.2f} M values")
    print(f"  {report.summary(max_names=6)}")
    return 0
