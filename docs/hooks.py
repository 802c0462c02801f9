"""MkDocs hook: the files under reports/ in the site, and links to them that work in both places.

Pages link to report files as GitHub shows the repository: docs/x.md links ../reports/..., and
reports/NAME/README.md links its own files (index.html, leaderboard.csv), which the include plugin
rewrites to ../../reports/... where docs/results/NAME.md includes it. Such links climb out of
docs/; here every file under reports/ but the Markdown is added to the site at reports/..., and a
link that climbs one level out of docs/ into reports/ is pointed there instead, so that MkDocs
checks it like any other. A link to reports/NAME/README.md goes to its page, results/NAME.md.
"""

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"(\]\(<?)([^)\s>#]*)")


def on_files(files, config):
    for path in sorted((ROOT / "reports").rglob("*")):
        if path.is_file() and path.suffix != ".md":
            uri = path.relative_to(ROOT).as_posix()
            files.append(File(uri, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    down = "../" * page.file.src_uri.count("/")
    out_of_docs = down + "../reports/"

    def point(match):
        target = match.group(2)
        if not target.startswith(out_of_docs):
            return match.group(0)
        rest = target[len(out_of_docs) :]
        name, _, leaf = rest.partition("/")
        page_uri = f"results/{name}.md"
        if leaf == "README.md" and files.get_file_from_path(page_uri):
            return match.group(1) + down + page_uri
        return match.group(1) + down + "reports/" + rest

    return LINK.sub(point, markdown)
