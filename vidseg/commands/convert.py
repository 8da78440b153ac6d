"""``vidseg convert``: an official checkpoint -> a vidseg weights file (``.safetensors`` by default)."""

from __future__ import annotations

import argparse
import os
import sys

DESCRIPTION = (
    "Convert an official checkpoint (DeVIS video, DeVIS COCO mask-head, Deformable DETR +iterative box "
    "refinement, detectron2 VITA/GenVIS/GRAtt-VIS/Mask2Former .pth or .pkl, an ImageNet torchvision .pth, "
    "detectron2 .pkl or original Swin file, or a vidseg file) into vidseg weights: a .safetensors file "
    "(tensors, plus the config and provenance as JSON metadata; it cannot run code when read), or with "
    "--format pth a torch zipfile {'model': state_dict, ...} loadable with torch.load(weights_only=True). "
    "The input is read without running code. With --config-file the weights are loaded into the model that "
    "config builds and written under its names (they then load strictly), with the resolved config."
)
EPILOG = """examples:
  vidseg convert r50_deformable_detr_plus_iterative_bbox_refinement.pth ddetr_r50.safetensors \\
      --shift-class-neuron
  vidseg convert r50_devis_yt-19.pth --config-file configs/devis/YT-19/devis_R_50_YT-19.yaml
  vidseg convert grattvis_r50_ovis.pth --config-file configs/grattvis/ovis/grattvis_R50_bs8.yaml
  vidseg convert r50_deformable_detr_segmentation.pth devis_coco_r50.pth --format pth
  vidseg convert devis_coco_r50.pth devis_yt19_init.safetensors --to devis-video --num-frames 6 \\
      --num-queries 60 --num-classes 40
Training checkpoints (optimizer, scheduler, RNG state) stay torch files; convert is for weights.
"""
FORMAT_SUFFIX = {"safetensors": ".safetensors", "pth": ".pth"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="checkpoint to convert")
    p.add_argument(
        "output",
        metavar="OUT",
        nargs="?",
        help="where to write the vidseg weights (default: IN's name with .safetensors, or .pth with "
        "--format pth, in the current folder)",
    )
    p.add_argument(
        "--format",
        choices=tuple(FORMAT_SUFFIX),
        default="safetensors",
        help="safetensors (default) or pth (a torch zipfile); OUT's suffix must agree",
    )
    p.add_argument(
        "--config-file",
        metavar="CFG",
        help="build this config's model, load IN into it (printing what was mapped, left out and missing) "
        "and write its weights under the model's names, with the resolved config in the metadata",
    )
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
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    g = p.add_argument_group("devis-video options")
    g.add_argument("--num-frames", type=int, default=6, help="T (MODEL.DEVIS.NUM_FRAMES)")
    g.add_argument("--num-queries", type=int, default=0, help="T x queries per frame (MODEL.NUM_QUERIES)")
    g.add_argument("--num-classes", type=int, default=0, help="re-initialise class_embed with K outputs")
    g.add_argument("--num-levels", type=int, default=4, help="feature levels of the video model (1, 3, 4)")
    p.add_argument(
        "opts",
        nargs="*",
        metavar="KEY VALUE",
        help="config overrides (with --config-file)",
    )


def _error(msg: object) -> int:
    print(f"vidseg convert: error: {msg}", file=sys.stderr)
    return 1


def _output_path(args: argparse.Namespace) -> str | None:
    """OUT, or IN's stem with the format's suffix; None (after an error line) when OUT's suffix disagrees."""
    suffix = FORMAT_SUFFIX[args.format]
    if not args.output:
        stem = os.path.splitext(os.path.basename(args.input))[0]
        return stem + suffix
    is_st = args.output.endswith(FORMAT_SUFFIX["safetensors"])
    if is_st != (args.format == "safetensors"):
        hint = (
            "name it .safetensors, or pass --format pth for a torch file"
            if args.format == "safetensors"
            else "give it a .pth name, or leave --format at safetensors"
        )
        _error(f"{args.output}: the output format is {args.format}, the name says otherwise; {hint}")
        return None
    return args.output


def run(args: argparse.Namespace) -> int:
    from vidseg.checkpoints import LoadReport, adapt_coco_to_devis, convert_checkpoint, write_weights
    from vidseg.checkpoints.safe_load import CheckpointError

    if args.opts and not args.config_file:
        return _error(f"KEY VALUE overrides ({' '.join(args.opts[:2])} ...) need --config-file")
    if args.config_file and args.to == "devis-video":
        return _error("--config-file builds the video model itself: leave out --to devis-video")
    if not os.path.isfile(args.input):
        return _error(f"checkpoint file not found: {args.input}")
    output = _output_path(args)
    if output is None:
        return 1
    if os.path.exists(output) and os.path.samefile(output, args.input):  # even with --overwrite
        return _error(f"{output} is IN itself: write the conversion to another file (IN is never replaced)")
    if os.path.exists(output) and not args.overwrite:
        return _error(f"{output} exists; pass --overwrite to replace it")
    if args.config_file:
        return _convert_through_model(args, output)
    video = args.to == "devis-video"
    try:
        ck = convert_checkpoint(args.input, shift_class_neuron=args.shift_class_neuron, video_model=video)
    except (CheckpointError, FileNotFoundError) as e:
        return _error(e)
    sd, fmt, meta = ck.state_dict, ck.format, ck.metadata
    # A vidseg file keeps the provenance it was converted from (it decides whether a later shift applies).
    converted = str(meta.get("converted_from", fmt)) if fmt == "vidseg" else fmt
    if video:
        if fmt == "devis_video":
            return _error(f"{args.input} is already a DeVIS video checkpoint")
        if ck.imagenet:
            return _error(f"{args.input} is an ImageNet backbone file, not COCO weights")
        if args.num_queries <= 0:
            return _error("--to devis-video needs --num-queries (T x queries per frame)")
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
    if ck.notes:
        extra["notes"] = list(ck.notes)
    write_weights(
        output, sd, config=meta.get("config"), overwrite=args.overwrite, format=args.format, **extra
    )
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
    _print_result(args.input, fmt, output, sd, report)
    return 0


def _print_result(src: str, fmt: str, output: str, sd: dict, report) -> None:
    n_params = sum(v.numel() for v in sd.values())
    print(f"{src} ({fmt}) -> {output}: {len(sd)} tensors, {n_params / 1e6:.2f} M values")
    print(f"  {report.summary(max_names=6)}")
    for line in report.details():
        print(f"    {line}")


def _convert_through_model(args: argparse.Namespace, output: str) -> int:
    """Load IN into the config's model (every conversion ``MODEL.WEIGHTS`` does) and write what it received.

    Only the tensors that came from the file are written (a backbone-only file gives a backbone-only
    output, never freshly initialised values), under the model's names, with the resolved config.
    """
    import torch

    from vidseg.checkpoints import load_weights, write_weights
    from vidseg.config.config import config_to_dict
    from vidseg.models import build_model, load_config

    cfg = load_config(args.config_file, ["MODEL.WEIGHTS", "", *args.opts])
    # Built with MODEL.WEIGHTS IN, as eval and train build it: a builder may read the file to decide the
    # architecture (GRAtt-VIS: the memory from its pre_memory_embed_* keys). OUT's config keeps the config's.
    build_cfg = cfg.clone()
    build_cfg.defrost()
    build_cfg.MODEL.WEIGHTS = os.fspath(args.input)
    torch.manual_seed(0)  # the values of keys the file does not fill never reach OUT; keep the build quiet
    model = build_model(build_cfg).model
    shift = args.shift_class_neuron or bool(cfg.MODEL.get("SHIFT_CLASS_NEURON", False))  # as MODEL.WEIGHTS
    report = load_weights(model, args.input, shift_class_neuron=shift)
    state = model.state_dict()
    sd = {k: state[k] for k in report.mapped}
    if not sd:
        return _error(f"{args.input}: no tensor fits the model of {args.config_file} ({report.summary()})")
    notes = list(report.notes)
    if report.missing:
        notes.append(
            f"{len(report.missing)} model tensors not in the file (not written): {report.missing[:3]}"
        )
    extra = {
        "converted_from": report.converted_from,
        "source_file": os.path.basename(args.input),
        "class_neuron_shifted": bool(report.shifted),
        "config_file": os.fspath(args.config_file),
    }
    if notes:
        extra["notes"] = notes
    write_weights(
        output, sd, config=config_to_dict(cfg), overwrite=args.overwrite, format=args.format, **extra
    )
    _print_result(args.input, report.converted_from, output, sd, report)
    if report.missing:
        print(
            f"warning: {output}: {len(report.missing)} tensors of the model are not in {args.input}; "
            "the file will not load strictly",
            file=sys.stderr,
        )
    return 0
