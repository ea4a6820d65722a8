"""Sphinx configuration of the course's website (``make site``, ``python -m rcl.site``).

``rcl.site`` copies this file and ``_static/`` into the staged sources beside ``_site.json`` (the run the chapters
come from) and builds with warnings as errors. Nothing is executed: the chapters are the executed notebooks of a
published run. MathJax 3 and the ipywidgets manager are served from ``_static/`` (``rcl.site.assets``), so the
site needs no network.
"""

import json
from pathlib import Path

site = json.loads((Path(__file__).parent / "_site.json").read_text())

project = "rcl"
copyright = "the rcl authors"
extensions = ["myst_nb", "sphinx_copybutton"]
exclude_patterns = ["_build", "_static"]
suppress_warnings = []

# the executed chapters are shown as they are, never run again
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# served from the site, not from a CDN: MathJax 3 (rcl.site.assets) and the widget manager, which calls MathJax 2's
# Hub.Queue: mathjax2-hub.js maps it onto MathJax 3 and must load before the manager
mathjax_path = "mathjax/tex-mml-chtml.js"
nb_ipywidgets_js = {"mathjax2-hub.js": {}, "jupyter-widgets/embed.js": {}}

html_theme = "sphinx_book_theme"
html_title = "rcl: contrastive learning and adversarial robustness"
html_static_path = ["_static"]
html_last_updated_fmt = None
html_show_sourcelink = False
html_copy_source = False
html_theme_options = {
    "announcement": site["banner"],
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
}
