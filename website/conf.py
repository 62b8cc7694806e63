"""Sphinx configuration of the course website (built by website/build.py, see website/README.md)."""
project = "tlkit: transfer learning, by experiment"
author = "the tlkit authors"
copyright = "2026, the tlkit authors"
extensions = ["myst_nb"]
html_theme = "sphinx_book_theme"
html_title = "tlkit course"
html_theme_options = {"show_toc_level": 2}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
# The lessons are executed by build.py before Sphinx sees them: Sphinx only renders.
nb_execution_mode = "off"
# Widgets: show their static HTML (every tlkit explorer has one), not a view that needs a kernel.
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]
