"""Sphinx configuration of the course site (``make site``; assembled by ``tools/site.py``).

Notebooks render from their stored outputs (no execution); MathJax is served from the site
itself (fetched once from the npm registry by ``tools/site.py``), so the built site works
without a network.
"""

project = "quantcourse"
author = "the quantcourse developers"
copyright = "2026, the quantcourse developers"
extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]
html_theme = "sphinx_book_theme"
html_title = "quantcourse: neural-network quantization, measured"
html_static_path = ["_static"]
html_theme_options = {
    "show_navbar_depth": 1,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "navigation_with_keys": True,
}
html_last_updated_fmt = None
html_show_sourcelink = False
mathjax_path = "mathjax/tex-mml-chtml.js"
# the pages use $...$ from the notebooks; MathJax must not look for other delimiters
mathjax3_config = {"tex": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]}}
html_context = {"default_mode": "light"}  # a set mode: pydata-sphinx-theme logs an error otherwise
