"""mkdocs hooks: the generated pages (API, CLI, folders, results) and the offline clean-up.

- ``on_files`` adds the pages that are made from the code and the committed data at build time
  (``gen_api``, ``gen_cli``, ``gen_folders``, ``gen_results``) and the results' figures; none of
  them is kept in ``docs/``.
- ``on_post_page`` removes the MathJax loader that notebook pages (mkdocs-jupyter) would fetch from
  a CDN: the site works offline and the notebooks use no LaTeX. The build fails if any other page
  would load a script, stylesheet or font from another host.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import gen_api  # noqa: E402
import gen_cli  # noqa: E402
import gen_folders  # noqa: E402
import gen_results  # noqa: E402


def generated_pages() -> dict[str, str]:
    """``{path under docs/: markdown}`` of every generated page."""
    pages = {
        "reference/api.md": gen_api.api_page(),
        "reference/cli.md": gen_cli.cli_page(),
        "reference/folders.md": gen_folders.folders_page(),
    }
    pages.update(gen_results.pages(ROOT))
    return pages


def on_files(files, config):
    start = time.perf_counter()
    for path, content in generated_pages().items():
        if files.get_file_from_path(path) is not None:
            raise PluginError(f"docs/{path} is generated at build time; delete the file in docs/")
        files.append(File.generated(config, path, content=content))
    for path, source in gen_results.images(ROOT).items():
        files.append(File.generated(config, path, abs_src_path=str(source)))
    print(f"docs/gen/hooks.py: generated pages in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return files


# nbconvert's loader: the CDN address, or an empty src (which would load the page itself as a script).
_MATHJAX = re.compile(r'<!-- Load mathjax -->\s*<script src="(?:https://cdnjs\.cloudflare\.com/ajax/libs/mathjax/[^"]*)?">'
                      r'\s*</script>')
_EXTERNAL = re.compile(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="(?:https?:)?//[^"]*"[^>]*>')


def on_post_page(output: str, page, config):
    output = _MATHJAX.sub("", output)
    if '<script src="">' in output:
        raise PluginError(f"{page.file.src_uri} has a script with an empty src (it would load the page as a script)")
    external = [tag for tag in _EXTERNAL.findall(output) if "<a " not in tag]
    if external:
        raise PluginError(f"{page.file.src_uri} would load from another host: {external[:3]}; the site must work "
                          "offline")
    return output
