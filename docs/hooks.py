"""mkdocs hook: the benchmark results (benchmarks/README.md and its plots) join the
site as they are in the repository, so the page and the plots cannot drift apart."""

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent


def on_files(files, config):
    for path in [
        "benchmarks/README.md",
        *sorted(
            p.relative_to(ROOT).as_posix() for p in (ROOT / "benchmarks").glob("*.png")
        ),
    ]:
        files.append(
            File(
                path,
                src_dir=str(ROOT),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files
