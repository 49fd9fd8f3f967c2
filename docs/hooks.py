"""mkdocs hook: the committed result tables, figures and outputs (`results/**/*.md`, `*.png`,
`*.txt`, not the per-run directories) become part of the site under `results/`, so the
documentation's links to them resolve and the built site holds them."""

from __future__ import annotations

import glob
import os

from mkdocs.structure.files import File, Files


def on_files(files: Files, config) -> Files:
    root = os.path.dirname(os.path.abspath(config["docs_dir"]))
    for pattern in ("*.md", "*.png", "*.txt"):
        for path in sorted(glob.glob(os.path.join(root, "results", "**", pattern), recursive=True)):
            rel = os.path.relpath(path, root)
            if f"{os.sep}runs{os.sep}" in rel:
                continue
            files.append(File(rel, src_dir=root, dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))  # fmt: skip
    return files
