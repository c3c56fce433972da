"""`python -m lib_trainer tag FOLDER`: caption pictures with WD14, deepbooru or BLIP."""
from __future__ import annotations

import argparse

from ..preprocess.tagging import MERGE_MODES, TAGGERS, TagOptions, make_tagger, tag_folder
from ..progress import Progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", nargs="?", help="folder of pictures; captions are written next to them")
    parser.add_argument("--tagger", choices=list(TAGGERS), default="wd14")
    parser.add_argument("--model", help="WD14 model name from the model list (default: the list's default)")
    parser.add_argument("--model-path", help="local folder with model.onnx + selected_tags.csv (WD14) "
                                             "or a transformers BLIP folder; used as is")
    parser.add_argument("--models-dir", help="where WD14 models are kept (default ~/.cache/lib_trainer/wd14)")
    parser.add_argument("--models-file", help="an edited copy of wd14_models.json")
    parser.add_argument("--download", action="store_true", help="download the WD14 model if it is not on disk")
    parser.add_argument("--list-models", action="store_true", help="list the WD14 models and exit")
    parser.add_argument("--general-threshold", type=float)
    parser.add_argument("--character-threshold", type=float)
    parser.add_argument("--exclude", default="", help="comma-separated tags never written")
    parser.add_argument("--keep-underscores", action="store_true")
    parser.add_argument("--no-escape", action="store_true", help="do not escape ( ) as \\( \\)")
    parser.add_argument("--sort", choices=["confidence", "alphabetical"], default="confidence")
    parser.add_argument("--max-tags", type=int, default=0)
    parser.add_argument("--trigger", default="", help="put first in every caption")
    parser.add_argument("--mode", choices=MERGE_MODES, default="overwrite",
                        help="with an existing caption: overwrite, append, prepend, or skip the picture")
    parser.add_argument("--rating", action="store_true", help="add the most likely rating tag")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--caption-ext", default=".txt")
    parser.add_argument("--cpu", action="store_true", help="do not try the GPU")
    parser.add_argument("--dry-run", action="store_true", help="say what would be written, write nothing")
    parser.add_argument("--bench", action="store_true", help="print tagging images/s with a built-in test model")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.bench:
        from ..preprocess.bench import bench_tagging

        for batch_size in (1, 8):
            result = bench_tagging(batch_size=batch_size, use_gpu=not args.cpu)
            print(f"tagging: {result['images_per_second']:.1f} images/s (batch {batch_size}, "
                  f"{result['images']} images 512x768 -> {result['input_size']}px, {result['providers'][0]})")
        return 0
    if args.list_models:
        from ..preprocess import wd14

        for name, info in wd14.load_model_list(args.models_file or wd14.MODEL_LIST).items():
            print(f"{name:32} {info.repo:45} general {info.general_threshold} character {info.character_threshold}")
        return 0
    if not args.folder:
        raise SystemExit("a folder of pictures is needed (or --list-models / --bench)")
    options = TagOptions(args.general_threshold, args.character_threshold,
                         [tag.strip() for tag in args.exclude.split(",") if tag.strip()],
                         not args.keep_underscores, not args.no_escape, args.sort, args.max_tags, args.trigger,
                         args.mode, args.rating, args.caption_ext, args.batch_size)
    options.validate()
    tagger = make_tagger(args.tagger, options, model=args.model, model_path=args.model_path,
                         models_dir=args.models_dir, download=args.download, use_gpu=not args.cpu,
                         models_file=args.models_file)
    sinks = []
    if not args.quiet:
        from ..terminal import TerminalSink

        sinks.append(TerminalSink())
    result = tag_folder(args.folder, tagger, options, Progress(sinks), dry_run=args.dry_run)
    print(("dry run: " if args.dry_run else "") + result.summary())
    return 0
