"""`python -m lib_trainer preprocess SRC DST`: crop and resize a folder of pictures for training."""
from __future__ import annotations

import argparse

from ..preprocess.crop import CROP_MODES
from ..preprocess.focal import FACE_DETECTORS, FocalSettings
from ..preprocess.pipeline import PreprocessOptions, preprocess_folder
from ..progress import Progress


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x768, not {text!r}") from None
    return width, height


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="folder of original pictures (only read)")
    parser.add_argument("destination", help="output folder (or parent of <repeats>_<trigger> <class>)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size", type=_size, default=(512, 512), help="fixed output size WxH (default 512x512)")
    size.add_argument("--bucket", type=int, metavar="RES", help="nearest aspect bucket of RES x RES area")
    size.add_argument("--auto", type=int, nargs=2, metavar=("MIN_SIDE", "MAX_SIDE"),
                      help="keep each picture's shape, area between MIN_SIDE^2 and MAX_SIDE^2")
    parser.add_argument("--crop", choices=list(CROP_MODES), default="focal", help="how to fit the size (default focal)")
    parser.add_argument("--face-weight", type=float, default=0.9)
    parser.add_argument("--entropy-weight", type=float, default=0.15)
    parser.add_argument("--edges-weight", type=float, default=0.5)
    parser.add_argument("--face-detectors", default="yunet,haar",
                        help=f"tried in order: {', '.join(FACE_DETECTORS)} (default yunet,haar)")
    parser.add_argument("--yunet-model", help="face_detection_yunet_*.onnx; YuNet is skipped without it")
    parser.add_argument("--debug", action="store_true", help="write focal-point views to DST/.focal_debug")
    parser.add_argument("--split", action="store_true", help="cut very long pictures into overlapping tiles")
    parser.add_argument("--split-threshold", type=float, default=0.5, help="split when a crop would lose more")
    parser.add_argument("--overlap", type=float, default=0.2, help="tile overlap fraction (default 0.2)")
    parser.add_argument("--flip", action="store_true", help="also write horizontally flipped copies")
    parser.add_argument("--background", default="white", help="colour for transparent areas, or 'keep'")
    parser.add_argument("--repeats", type=int, default=0, help="with --trigger/--class: kohya folder name")
    parser.add_argument("--trigger", default="")
    parser.add_argument("--class", dest="class_token", default="")
    parser.add_argument("--caption-ext", default=".txt")
    parser.add_argument("--format", default="png", choices=["png", "jpg", "webp"])
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def options_from_args(args: argparse.Namespace) -> PreprocessOptions:
    width, height = args.size
    size_mode, min_area, max_area = "fixed", 384 * 384, 768 * 768
    if args.bucket:
        size_mode, width, height = "bucket", args.bucket, args.bucket
    elif args.auto:
        size_mode, min_area, max_area = "auto", args.auto[0] ** 2, args.auto[1] ** 2
    focal = FocalSettings(args.face_weight, args.entropy_weight, args.edges_weight,
                          tuple(name.strip() for name in args.face_detectors.split(",") if name.strip()),
                          args.yunet_model)
    unknown = [name for name in focal.face_detectors if name not in FACE_DETECTORS]
    if unknown:
        raise SystemExit(f"unknown face detector(s): {', '.join(unknown)}; choose from {', '.join(FACE_DETECTORS)}")
    return PreprocessOptions(
        args.source, args.destination, width, height, size_mode, args.crop, focal, min_area, max_area,
        args.split, args.split_threshold, args.overlap, args.flip,
        None if args.background == "keep" else args.background, args.debug, args.repeats, args.trigger,
        args.class_token, args.caption_ext, args.format)


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    sinks = []
    if not args.quiet:
        from ..terminal import TerminalSink

        sinks.append(TerminalSink())
    result = preprocess_folder(options, Progress(sinks))
    print(result.summary())
    return 0 if result.written or not result.skipped else 1
