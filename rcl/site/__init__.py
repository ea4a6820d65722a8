"""The course as a website: ``python -m rcl.site`` (``make site``) renders the executed chapters of a published run,
the README and the documents into a static site, offline and without executing anything.

``pages`` stages the Sphinx sources (landing page, chapters, documents), ``assets`` serves MathJax and the widget
manager from the site, ``build`` runs Sphinx with warnings as errors; the configuration is ``docs/site/conf.py``.
"""
