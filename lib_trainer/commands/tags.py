"""`python -m lib_trainer tags FOLDER ...`: batch tag edits on a folder's caption files.

Operations run in the order given on the command line, on the images the filter selects,
through the same TagEditor session as the "Tags" sub-tab: a summary is printed, originals
are backed up, captions are written atomically. `--dry-run` prints the summary only.
"""
from __future__ import annotations

import argparse

from ..dataset.encodings import display_name
from ..preprocess.tag_editor import TagEditor, convert_encodings


class _Operation(argparse.Action):
    """Collects (operation, params) in command-line order into `args.operations`."""

    def __init__(self, option_strings, dest, operation, build, **kwargs):
        self.operation, self.build = operation, build
        super().__init__(option_strings, dest="operations", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        operations = list(getattr(namespace, "operations", None) or [])
        operations.append((self.operation, self.build(values)))
        namespace.operations = operations


def add_arguments(parser: argparse.ArgumentParser) -> None:
    op = parser.add_argument
    op("folder", help="dataset folder: images with same-named caption files")
    op("--add", action=_Operation, operation="add", build=lambda v: {"new": v, "position": "end"},
       metavar="TAGS", help="add comma-separated tags at the end")
    op("--add-front", action=_Operation, operation="add", build=lambda v: {"new": v, "position": "front"},
       metavar="TAGS", help="add tags at the front")
    op("--remove", action=_Operation, operation="remove", build=lambda v: {"unwanted": v}, metavar="TAGS")
    op("--replace", action=_Operation, operation="replace", nargs=2, metavar=("OLD", "NEW"),
       build=lambda v: {"old": v[0], "new": v[1]}, help="replace a whole tag")
    op("--regex-replace", action=_Operation, operation="replace", nargs=2, metavar=("PATTERN", "NEW"),
       build=lambda v: {"old": v[0], "new": v[1], "regex": True}, help="re.sub inside every tag")
    op("--move-front", action=_Operation, operation="move_to_front", build=lambda v: {"front": v}, metavar="TAGS")
    op("--dedupe", action=_Operation, operation="dedupe", nargs=0, build=lambda v: {})
    op("--sort", action=_Operation, operation="sort", nargs="?", const="0", metavar="KEEP_FIRST",
       build=lambda v: {"keep_first": int(v)}, help="alphabetical, after the first KEEP_FIRST tags")
    op("--trigger", action=_Operation, operation="trigger", build=lambda v: {"trigger": v}, metavar="WORD")
    op("--with", dest="with_tags", default="", metavar="TAGS", help="only images with these tags")
    op("--any", action="store_true", help="--with matches images with any (not all) of the tags")
    op("--without", default="", metavar="TAGS", help="only images without these tags")
    op("--text", default="", help="only images whose caption contains this text")
    op("--freq", action="store_true", help="print the tag frequency table (of the selection)")
    op("--caption-ext", default=".txt")
    op("--dry-run", action="store_true", help="print what would change, write nothing")
    op("--backups", action="store_true", help="list the folder's caption backups, newest first")
    op("--convert-encoding", action="store_true",
       help="rewrite the captions that are not UTF-8 (GBK, Big5, Shift-JIS, UTF-16...) as UTF-8, each backed "
            "up first; the tag editor refuses a folder until then")
    op("--restore", default="", metavar="BACKUP",
       help="put a backup's captions back (its name from --backups, or its path); the current ones are "
            "backed up first")


def run(args: argparse.Namespace) -> int:
    from ..preprocess.captions import backups, restore_backup

    if args.backups:
        for name in backups(args.folder) or ["(no caption backups)"]:
            print(name)
        return 0
    if args.restore:
        restored, previous = restore_backup(args.folder, args.restore)
        print(f"{len(restored)} captions restored from {args.restore}"
              + (f"; the ones they replaced are in {previous}" if previous else ""))
        return 0
    if args.convert_encoding:
        if args.dry_run:
            TagEditor(args.folder, args.caption_ext)  # the refusal lists what would be converted
            print("all captions are UTF-8")
            return 0
        converted, backup = convert_encodings(args.folder, args.caption_ext)
        for path, encoding in sorted(converted.items()):
            print(f"{path}: {display_name(encoding)} -> UTF-8")
        print(f"{len(converted)} captions converted to UTF-8" + (f"; the originals are in {backup}" if backup else ""))
    editor = TagEditor(args.folder, args.caption_ext)
    split = lambda text: [t.strip() for t in text.split(",") if t.strip()]  # noqa: E731
    selection = editor.filter(split(args.with_tags), "or" if args.any else "and", split(args.without), args.text)
    print(f"{len(selection)} of {len(editor)} images selected")
    for name, params in getattr(args, "operations", None) or []:
        changed = editor.apply(name, selection, **params)
        print(f"{name}: {changed} captions changed")
    if args.freq:
        for tag, count in editor.frequency(selection):
            print(f"{count:6}  {tag}")
    print(editor.summary())
    if not args.dry_run and editor.pending():
        written = editor.save()
        print(f"{len(written)} captions saved")
    return 0
